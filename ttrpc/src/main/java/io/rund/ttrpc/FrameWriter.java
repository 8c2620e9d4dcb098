package io.rund.ttrpc;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.GatheringByteChannel;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Writes whole frames to a channel. Safe for many threads: each frame goes out in one
 * piece, never interleaved with another.
 */
public final class FrameWriter {

    private final GatheringByteChannel out;
    private final ReentrantLock lock = new ReentrantLock();

    public FrameWriter(GatheringByteChannel out) {
        this.out = out;
    }

    /**
     * Sends one frame.
     *
     * @throws IllegalArgumentException when the payload is over {@link Frame#MAX_PAYLOAD}:
     *     callers check sizes first, because the peer would refuse it
     */
    public void write(int streamId, byte type, byte flags, byte[] payload) throws IOException {
        if (payload.length > Frame.MAX_PAYLOAD) {
            throw new IllegalArgumentException("payload of " + payload.length
                    + " bytes exceeds the maximum message size of " + Frame.MAX_PAYLOAD);
        }
        ByteBuffer header = ByteBuffer.allocate(Frame.HEADER_LENGTH)
                .putInt(payload.length)
                .putInt(streamId)
                .put(type)
                .put(flags)
                .flip();
        ByteBuffer[] frame = {header, ByteBuffer.wrap(payload)};
        lock.lock();
        try {
            while (frame[1].hasRemaining() || frame[0].hasRemaining()) {
                out.write(frame);
            }
        } finally {
            lock.unlock();
        }
    }
}
