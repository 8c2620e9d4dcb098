package io.rund.ttrpc;

/**
 * One ttrpc message on the wire: a 10-byte header, then {@code length} bytes of payload.
 *
 * <pre>
 *  0               4               8       9      10
 *  +---------------+---------------+-------+-------+------------------+
 *  | length (u32)  | stream id(u32)| type  | flags | payload ...      |
 *  +---------------+---------------+-------+-------+------------------+
 *  all integers big-endian; length counts the payload only
 * </pre>
 *
 * Clients open streams with odd ids; a request travels as type 1 and its answer, on the
 * same stream id, as type 2.
 */
public record Frame(int streamId, byte type, byte flags, byte[] payload) {

    public static final int HEADER_LENGTH = 10;
    /** The largest payload either side accepts (containerd's limit). */
    public static final int MAX_PAYLOAD = 4 << 20;

    public static final byte TYPE_REQUEST = 0x1;
    public static final byte TYPE_RESPONSE = 0x2;

    /** The stream id as the unsigned number it is on the wire. */
    public long unsignedStreamId() {
        return Integer.toUnsignedLong(streamId);
    }
}
