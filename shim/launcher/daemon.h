/* Reaching the node's rund daemon, for the launcher and for the relay (relay.c): its
 * sockets' paths and starting it when none answers. */
#ifndef RUND_DAEMON_H
#define RUND_DAEMON_H

/* An environment variable's value, or fallback when it is unset or empty. */
const char *env_or(const char *name, const char *fallback);

/* The daemon's control socket: RUND_CONTROL_SOCKET, or /run/rund/rund.sock. */
const char *daemon_control_socket(void);

/* Connects to a unix socket; the descriptor (close-on-exec), or -1 with errno set
 * (ENAMETOOLONG for a path that does not fit). */
int unix_connect(const char *path);

/* Starts the daemon (RUND_DAEMON, run by /bin/sh, its output appended to RUND_LOG)
 * detached from the caller: double fork and setsid. 0, or -1 when it could not fork. */
int daemon_start(void);

#endif
