/* The Agent API's methods, as the dispatcher in main.c sees them. */
#ifndef RUND_METHODS_H
#define RUND_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "agent.h"

struct method;

/* The method called `name` of the Agent service, or NULL. */
const struct method *method_find(const char *name);

/* Decodes, serves and encodes one call; returns 0 with the packed response in *out. */
int method_invoke(const struct method *m, const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len,
                  struct fault *f);

#endif
