/* The relay (relay.c): a task endpoint's socket and containerd's connections, held
 * across daemon restarts. */
#ifndef RUND_RELAY_H
#define RUND_RELAY_H

#include <stddef.h>

/* Forks the relay of endpoint `name`, listening on socket_path, and returns once it
 * listens (0), or -1 with the reason in err. */
int relay_spawn(const char *name, const char *socket_path, char *err, size_t errlen);

#endif
