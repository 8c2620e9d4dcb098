/* containerd 2.3's BootstrapParams, read from a start's stdin (bootstrap.h). Field
 * numbers are those of containerd's api/runtime/bootstrap/v1/bootstrap.proto. */
#include "bootstrap.h"

#include <string.h>

#include "ttrpc.h"

static int same(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* The Any of an Extension { google.protobuf.Any value = 1; }, or -1 when it is malformed. */
static int extension_value(const uint8_t *p, const uint8_t *end, const uint8_t **value, size_t *len)
{
    while (p < end) {
        uint64_t key, n;
        if (ttrpc_read_varint(&p, end, &key))
            return -1;
        if ((key & 7) != 2 || ttrpc_read_varint(&p, end, &n) || n > (uint64_t)(end - p))
            return -1;
        if (key >> 3 == 1 && !*value) {
            *value = p;
            *len = (size_t)n;
        }
        p += n;
    }
    return 0;
}

int bootstrap_parse(const uint8_t *in, size_t len, const char *id, const char *ns, struct bootstrap *out)
{
    memset(out, 0, sizeof(*out));
    const uint8_t *p = in, *end = in + len;
    int seen_id = 0, seen_ns = 0;
    while (p < end) {
        uint64_t key, v;
        if (ttrpc_read_varint(&p, end, &key))
            return 0;
        uint64_t field = key >> 3, wire = key & 7;
        if (field == 0)
            return 0;
        if (wire == 0) { /* log_level (3) and any varint field */
            if (ttrpc_read_varint(&p, end, &v))
                return 0;
            continue;
        }
        if (wire == 1 || wire == 5) { /* fixed64 / fixed32: no such field, but skippable */
            size_t n = wire == 1 ? 8 : 4;
            if ((size_t)(end - p) < n)
                return 0;
            p += n;
            continue;
        }
        if (wire != 2 || ttrpc_read_varint(&p, end, &v) || v > (uint64_t)(end - p))
            return 0;
        const uint8_t *f = p;
        size_t n = (size_t)v;
        p += n;
        switch (field) {
        case 1:
            if (!same(f, n, id))
                return 0;
            seen_id = 1;
            break;
        case 2:
            if (!same(f, n, ns))
                return 0;
            seen_ns = 1;
            break;
        case 4:
            out->version = f;
            out->version_len = n;
            break;
        case 5:
            out->ttrpc_address = f;
            out->ttrpc_address_len = n;
            break;
        case 8:
            if (!out->options && extension_value(f, f + n, &out->options, &out->options_len))
                return 0;
            break;
        case 3:
            return 0; /* log_level is a varint, never length-delimited */
        default:
            break; /* grpc address, binary, socket dir, fields to come */
        }
    }
    if (!seen_id || !seen_ns) {
        memset(out, 0, sizeof(*out));
        return 0;
    }
    return 1;
}
