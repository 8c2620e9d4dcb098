/* containerd 2.3's bootstrap protocol: `start` reads one BootstrapParams protobuf on
 * stdin instead of a bare runtime-options Any, and may answer a BootstrapResult. */
#ifndef RUND_BOOTSTRAP_H
#define RUND_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

/* What the launcher takes from a BootstrapParams (pointers into the input). */
struct bootstrap {
    const uint8_t *ttrpc_address; /* containerd_ttrpc_address (5) */
    size_t ttrpc_address_len;
    const uint8_t *version; /* containerd_version (4) */
    size_t version_len;
    const uint8_t *options; /* the first extension's Any (8 -> Extension.value 1) */
    size_t options_len;
};

/* Whether `in` is a BootstrapParams for this start: it parses as one, field by field with
 * the wire type each field has, and its instance_id (1) and namespace (2) are `id` and
 * `ns` (bytes of a legacy options Any may parse as anything; these two they do not match).
 * 1 and `out` filled when it is; 0 when the input is the legacy options Any (or nothing). */
int bootstrap_parse(const uint8_t *in, size_t len, const char *id, const char *ns, struct bootstrap *out);

#endif
