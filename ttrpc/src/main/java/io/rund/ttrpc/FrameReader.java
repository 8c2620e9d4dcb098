package io.rund.ttrpc;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;

/**
 * Cuts frames out of a byte stream, however the stream splits or joins them. Used by one
 * thread at a time (each connection has one reader).
 *
 * <p>A payload is allocated only after its length passed the size check; an oversized
 * payload is read through a fixed buffer and dropped.
 */
public final class FrameReader {

    private static final int BUFFER_SIZE = 64 * 1024;

    private final ReadableByteChannel in;
    private final ByteBuffer buffer = ByteBuffer.allocate(BUFFER_SIZE).flip();

    public FrameReader(ReadableByteChannel in) {
        this.in = in;
    }

    /**
     * The next frame, or null when the peer closed the stream between two frames.
     *
     * @throws EOFException when the stream ends inside a frame
     * @throws OversizedFrameException when a frame was too large; it has been skipped and
     *     the next call reads the frame after it
     */
    public Frame read() throws IOException {
        if (!fillHeader()) {
            return null;
        }
        long length = Integer.toUnsignedLong(buffer.getInt());
        int streamId = buffer.getInt();
        byte type = buffer.get();
        byte flags = buffer.get();
        if (length > Frame.MAX_PAYLOAD) {
            skip(length);
            throw new OversizedFrameException(streamId, type, length);
        }
        byte[] payload = new byte[(int) length];
        int copied = Math.min(payload.length, buffer.remaining());
        buffer.get(payload, 0, copied);
        if (copied < payload.length) {
            ByteBuffer rest = ByteBuffer.wrap(payload, copied, payload.length - copied);
            while (rest.hasRemaining()) {
                if (in.read(rest) < 0) {
                    throw truncated(length);
                }
            }
        }
        return new Frame(streamId, type, flags, payload);
    }

    /** Makes a whole header readable; false on a clean end before its first byte. */
    private boolean fillHeader() throws IOException {
        while (buffer.remaining() < Frame.HEADER_LENGTH) {
            if (readMore() < 0) {
                if (!buffer.hasRemaining()) {
                    return false;
                }
                throw new EOFException("stream ended inside a frame header after "
                        + buffer.remaining() + " of " + Frame.HEADER_LENGTH + " bytes");
            }
        }
        return true;
    }

    private void skip(long length) throws IOException {
        long left = length;
        while (left > 0) {
            if (!buffer.hasRemaining() && readMore() < 0) {
                throw truncated(length);
            }
            int n = (int) Math.min(left, buffer.remaining());
            buffer.position(buffer.position() + n);
            left -= n;
        }
    }

    /** Appends what the channel has to the unread bytes; the channel's count, -1 at its end. */
    private int readMore() throws IOException {
        buffer.compact();
        try {
            return in.read(buffer);
        } finally {
            buffer.flip();
        }
    }

    private static EOFException truncated(long length) {
        return new EOFException("stream ended inside a frame of " + length + " bytes");
    }
}
