package io.rund.ttrpc;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** The frame cutter on an in-memory channel that hands out bytes in chunks of a chosen size. */
@Tag("unit")
class FrameReaderTest {

    /** A channel over fixed bytes that returns at most {@code chunk} bytes per read. */
    private static ReadableByteChannel chunked(byte[] bytes, int chunk) {
        ByteBuffer src = ByteBuffer.wrap(bytes);
        return new ReadableByteChannel() {
            @Override
            public int read(ByteBuffer dst) {
                if (!src.hasRemaining()) {
                    return -1;
                }
                int n = Math.min(chunk, Math.min(dst.remaining(), src.remaining()));
                dst.put(dst.position(), src, src.position(), n);
                dst.position(dst.position() + n);
                src.position(src.position() + n);
                return n;
            }

            @Override
            public boolean isOpen() {
                return true;
            }

            @Override
            public void close() {}
        };
    }

    @Test
    void framesComeOutWholeWhateverTheChunking() throws Exception {
        ByteArrayOutputStream wire = new ByteArrayOutputStream();
        byte[] big = new byte[200_000];
        for (int i = 0; i < big.length; i++) {
            big[i] = (byte) i;
        }
        wire.write(RawPeer.frame(1, 1, "a".getBytes()));
        wire.write(RawPeer.frame(3, 2, new byte[0]));
        wire.write(RawPeer.frame(-1, 1, big));
        for (int chunk : new int[] {1, 3, 9, 10, 11, 4096, 1 << 20}) {
            FrameReader r = new FrameReader(chunked(wire.toByteArray(), chunk));
            Frame a = r.read();
            assertEquals(1, a.streamId());
            assertArrayEquals("a".getBytes(), a.payload());
            Frame empty = r.read();
            assertEquals(3, empty.streamId());
            assertEquals(Frame.TYPE_RESPONSE, empty.type());
            assertEquals(0, empty.payload().length);
            Frame large = r.read();
            assertEquals(0xFFFF_FFFFL, large.unsignedStreamId(), "stream ids are unsigned");
            assertArrayEquals(big, large.payload());
            assertNull(r.read(), "a clean end between frames is not an error");
        }
    }

    @Test
    void anOversizedFrameIsSkippedAndReadingGoesOn() throws Exception {
        ByteArrayOutputStream wire = new ByteArrayOutputStream();
        int length = Frame.MAX_PAYLOAD + 10;
        wire.write(RawPeer.header(length, 5, 1, 0));
        wire.write(new byte[length]);
        wire.write(RawPeer.frame(7, 1, "after".getBytes()));
        FrameReader r = new FrameReader(chunked(wire.toByteArray(), 777));
        OversizedFrameException e = assertThrows(OversizedFrameException.class, r::read);
        assertEquals(5, e.streamId());
        assertEquals(length, e.length());
        assertArrayEquals("after".getBytes(), r.read().payload());
    }

    @Test
    void aLengthOverFourGigabytesIsNotTakenAsNegative() throws Exception {
        FrameReader r = new FrameReader(chunked(RawPeer.header(0xFFFF_FFFFL, 1, 1, 0), 10));
        // It is oversized, and the stream ends while skipping it.
        assertThrows(EOFException.class, r::read);
    }

    @Test
    void anEndInsideAFrameIsAnError() {
        byte[] frame = RawPeer.frame(1, 1, new byte[50]);
        for (int cut : new int[] {1, 9, 10, 30}) {
            byte[] part = java.util.Arrays.copyOf(frame, cut);
            assertThrows(EOFException.class, () -> new FrameReader(chunked(part, 4)).read(), "cut at " + cut);
        }
    }
}
