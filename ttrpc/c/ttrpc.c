#include "ttrpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Protobuf wire types used by the envelope. */
#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define WT_I32 5

int ttrpc_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

static int skip_field(const uint8_t **p, const uint8_t *end, int wire_type)
{
    uint64_t n;
    switch (wire_type) {
    case WT_VARINT:
        return ttrpc_read_varint(p, end, &n);
    case WT_I64:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 0;
    case WT_I32:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 0;
    case WT_LEN:
        if (ttrpc_read_varint(p, end, &n) || n > (uint64_t)(end - *p))
            return -1;
        *p += n;
        return 0;
    default:
        return -1;
    }
}

static int copy_string(char *dst, size_t cap, const uint8_t *src, uint64_t n)
{
    if (n >= cap)
        return -1;
    memcpy(dst, src, n);
    dst[n] = 0;
    return 0;
}

int ttrpc_decode_request(const uint8_t *buf, size_t len, struct ttrpc_request *req, char *err, size_t errlen)
{
    const uint8_t *p = buf, *end = buf + len;
    memset(req, 0, sizeof(*req));
    req->payload = buf; /* an empty payload still points somewhere valid */
    while (p < end) {
        uint64_t key, n;
        if (ttrpc_read_varint(&p, end, &key)) {
            snprintf(err, errlen, "malformed request: truncated field key");
            return -1;
        }
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if ((field >= 1 && field <= 3) && wt == WT_LEN) {
            if (ttrpc_read_varint(&p, end, &n) || n > (uint64_t)(end - p)) {
                snprintf(err, errlen, "malformed request: field %d runs past the message", field);
                return -1;
            }
            if (field == 1 && copy_string(req->service, sizeof(req->service), p, n)) {
                snprintf(err, errlen, "service name of %llu bytes is too long", (unsigned long long)n);
                return -1;
            }
            if (field == 2 && copy_string(req->method, sizeof(req->method), p, n)) {
                snprintf(err, errlen, "method name of %llu bytes is too long", (unsigned long long)n);
                return -1;
            }
            if (field == 3) {
                req->payload = p;
                req->payload_len = n;
            }
            p += n;
        } else if (field == 4 && wt == WT_VARINT) {
            if (ttrpc_read_varint(&p, end, &n)) {
                snprintf(err, errlen, "malformed request: truncated timeout");
                return -1;
            }
            req->timeout_nano = (int64_t)n;
        } else if (skip_field(&p, end, wt)) {
            /* Metadata (field 5) and anything newer are skipped. */
            snprintf(err, errlen, "malformed request: field %d of wire type %d", field, wt);
            return -1;
        }
    }
    return 0;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

size_t ttrpc_encode_response(uint8_t **out, int code, const char *message, const uint8_t *payload, size_t payload_len)
{
    size_t mlen = message ? strlen(message) : 0;
    /* Status { int32 code = 1; string message = 2; } */
    size_t status_len = 0;
    if (code)
        status_len += 1 + varint_len((uint64_t)code);
    if (mlen)
        status_len += 1 + varint_len(mlen) + mlen;
    /* Response { Status status = 1; bytes payload = 2; } */
    size_t total = 1 + varint_len(status_len) + status_len;
    if (payload_len)
        total += 1 + varint_len(payload_len) + payload_len;
    uint8_t *buf = malloc(TTRPC_HEADER_LEN + total);
    if (!buf)
        return 0;
    uint8_t *p = buf + TTRPC_HEADER_LEN;
    *p++ = (1 << 3) | WT_LEN;
    p = put_varint(p, status_len);
    if (code) {
        *p++ = (1 << 3) | WT_VARINT;
        p = put_varint(p, (uint64_t)code);
    }
    if (mlen) {
        *p++ = (2 << 3) | WT_LEN;
        p = put_varint(p, mlen);
        memcpy(p, message, mlen);
        p += mlen;
    }
    if (payload_len) {
        *p++ = (2 << 3) | WT_LEN;
        p = put_varint(p, payload_len);
        memcpy(p, payload, payload_len);
        p += payload_len;
    }
    *out = buf;
    return total;
}

static uint8_t *put_bytes(uint8_t *p, int field, const void *data, size_t len)
{
    *p++ = (uint8_t)(field << 3 | WT_LEN);
    p = put_varint(p, len);
    memcpy(p, data, len);
    return p + len;
}

size_t ttrpc_encode_request(uint8_t **out, const char *service, const char *method, const uint8_t *payload,
                            size_t payload_len)
{
    size_t sl = strlen(service), ml = strlen(method);
    size_t total = 1 + varint_len(sl) + sl + 1 + varint_len(ml) + ml + 1 + varint_len(payload_len) + payload_len;
    uint8_t *buf = malloc(TTRPC_HEADER_LEN + total);
    if (!buf)
        return 0;
    uint8_t *p = buf + TTRPC_HEADER_LEN;
    p = put_bytes(p, 1, service, sl);
    p = put_bytes(p, 2, method, ml);
    put_bytes(p, 3, payload, payload_len);
    *out = buf;
    return total;
}

int ttrpc_decode_response(const uint8_t *buf, size_t len, struct ttrpc_response *resp)
{
    const uint8_t *p = buf, *end = buf + len;
    memset(resp, 0, sizeof(*resp));
    while (p < end) {
        uint64_t key, n;
        if (ttrpc_read_varint(&p, end, &key))
            return -1;
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (wt != WT_LEN) {
            if (skip_field(&p, end, wt))
                return -1;
            continue;
        }
        if (ttrpc_read_varint(&p, end, &n) || n > (uint64_t)(end - p))
            return -1;
        if (field == 1) {
            /* Status { int32 code = 1; string message = 2; ... } */
            const uint8_t *q = p, *qend = p + n;
            while (q < qend) {
                uint64_t k, v;
                if (ttrpc_read_varint(&q, qend, &k))
                    return -1;
                if ((k >> 3) == 1 && (k & 7) == WT_VARINT) {
                    if (ttrpc_read_varint(&q, qend, &v))
                        return -1;
                    resp->code = (int)v;
                } else if ((k >> 3) == 2 && (k & 7) == WT_LEN) {
                    if (ttrpc_read_varint(&q, qend, &v) || v > (uint64_t)(qend - q))
                        return -1;
                    resp->message = q;
                    resp->message_len = v;
                    q += v;
                } else if (skip_field(&q, qend, (int)(k & 7))) {
                    return -1;
                }
            }
        } else if (field == 2) {
            resp->payload = p;
            resp->payload_len = n;
        }
        p += n;
    }
    return 0;
}

void ttrpc_put_header(uint8_t *h, uint32_t length, uint32_t stream_id, uint8_t type, uint8_t flags)
{
    h[0] = length >> 24;
    h[1] = length >> 16;
    h[2] = length >> 8;
    h[3] = length;
    h[4] = stream_id >> 24;
    h[5] = stream_id >> 16;
    h[6] = stream_id >> 8;
    h[7] = stream_id;
    h[8] = type;
    h[9] = flags;
}

uint32_t ttrpc_header_length(const uint8_t *h)
{
    return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

uint32_t ttrpc_header_stream(const uint8_t *h)
{
    return (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
}

int ttrpc_frame_add_metadata(uint8_t **frame, size_t *len, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = strlen(value);
    size_t kv = 1 + varint_len(kl) + kl + 1 + varint_len(vl) + vl;
    size_t add = 1 + varint_len(kv) + kv;
    size_t payload = *len - TTRPC_HEADER_LEN;
    if (payload + add > TTRPC_MAX_PAYLOAD)
        return -1;
    uint8_t *f = realloc(*frame, *len + add);
    if (!f)
        return -1;
    uint8_t *p = f + *len;
    *p++ = (5 << 3) | WT_LEN;
    p = put_varint(p, kv);
    p = put_bytes(p, 1, key, kl);
    put_bytes(p, 2, value, vl);
    ttrpc_put_header(f, (uint32_t)(payload + add), ttrpc_header_stream(f), f[8], f[9]);
    *frame = f;
    *len += add;
    return 0;
}
