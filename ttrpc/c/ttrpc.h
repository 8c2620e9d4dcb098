/* ttrpc in C, for the guest agent and the launcher (shim/launcher): framing and the
 * Request/Response envelope, by the same wire rules as rund's Java library (the rest of
 * this module): a 10-byte big-endian
 * header (payload length, stream id, type, flags), payloads of at most 4 MiB, odd client
 * stream ids, unique among the calls in flight (main.c says why they need not increase).
 * The envelope is encoded by hand, so the agent needs no generated code for it. */
#ifndef RUND_TTRPC_H
#define RUND_TTRPC_H

#include <stddef.h>
#include <stdint.h>

#define TTRPC_HEADER_LEN 10
#define TTRPC_MAX_PAYLOAD (4u << 20)
#define TTRPC_TYPE_REQUEST 1
#define TTRPC_TYPE_RESPONSE 2

/* google.rpc codes; the numbers are part of the protocol. */
enum ttrpc_code {
    CODE_OK = 0,
    CODE_CANCELLED = 1,
    CODE_UNKNOWN = 2,
    CODE_INVALID_ARGUMENT = 3,
    CODE_DEADLINE_EXCEEDED = 4,
    CODE_NOT_FOUND = 5,
    CODE_ALREADY_EXISTS = 6,
    CODE_PERMISSION_DENIED = 7,
    CODE_RESOURCE_EXHAUSTED = 8,
    CODE_FAILED_PRECONDITION = 9,
    CODE_ABORTED = 10,
    CODE_OUT_OF_RANGE = 11,
    CODE_UNIMPLEMENTED = 12,
    CODE_INTERNAL = 13,
    CODE_UNAVAILABLE = 14,
};

/* A decoded Request. The strings and payload point into the buffer it was decoded from;
 * service and method are NUL-terminated copies. */
struct ttrpc_request {
    char service[128];
    char method[64];
    const uint8_t *payload;
    size_t payload_len;
    int64_t timeout_nano;
};

/* Decodes a Request envelope. Returns 0, or -1 with a reason in err. */
int ttrpc_decode_request(const uint8_t *buf, size_t len, struct ttrpc_request *req, char *err, size_t errlen);

/* Encodes a Response envelope into a new malloc'd buffer, leaving TTRPC_HEADER_LEN bytes
 * in front for the frame header. Returns the envelope length (without the header room),
 * or 0 when out of memory. */
size_t ttrpc_encode_response(uint8_t **out, int code, const char *message, const uint8_t *payload, size_t payload_len);

/* A client's side: encodes a Request envelope (malloc'd, TTRPC_HEADER_LEN bytes of room in
 * front) and decodes a Response. Returns the envelope length, or 0 when out of memory. */
size_t ttrpc_encode_request(uint8_t **out, const char *service, const char *method, const uint8_t *payload,
                            size_t payload_len);

/* A decoded Response; message and payload point into the decoded buffer. */
struct ttrpc_response {
    int code;
    const uint8_t *message;
    size_t message_len;
    const uint8_t *payload;
    size_t payload_len;
};

int ttrpc_decode_response(const uint8_t *buf, size_t len, struct ttrpc_response *resp);

/* Reads a protobuf varint at *p (at most 10 bytes, never past end) and advances *p;
 * 0 on success, -1 when it is cut short or longer than 64 bits. */
int ttrpc_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/* Fills the 10-byte frame header. */
void ttrpc_put_header(uint8_t *h, uint32_t length, uint32_t stream_id, uint8_t type, uint8_t flags);

/* A frame header's payload length and stream id. */
uint32_t ttrpc_header_length(const uint8_t *h);
uint32_t ttrpc_header_stream(const uint8_t *h);

/* Adds one metadata entry (Request field 5: KeyValue { key = 1; value = 2; }) to a whole
 * request frame (header and envelope) in *frame, *len bytes, malloc'd: a repeated field's
 * entries may arrive in any order, so the entry is appended and the header's length grown.
 * 0, or -1 (frame untouched) when out of memory or the payload would pass the limit. */
int ttrpc_frame_add_metadata(uint8_t **frame, size_t *len, const char *key, const char *value);

#endif
