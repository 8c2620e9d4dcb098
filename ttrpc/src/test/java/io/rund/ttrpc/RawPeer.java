package io.rund.ttrpc;

import io.rund.ttrpc.wire.Request;
import io.rund.ttrpc.wire.Response;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A hand-driven peer for wire tests: writes whatever bytes a test gives it, and collects
 * what the server sends back, frame by frame, on a reader thread of its own.
 */
final class RawPeer implements AutoCloseable {

    /** What the reader thread saw: a frame, or the end of the stream. */
    sealed interface Event {}

    record Received(Frame frame) implements Event {}

    record Ended(String how) implements Event {}

    final SocketChannel channel;
    private final BlockingQueue<Event> events = new LinkedBlockingQueue<>();

    RawPeer(Path socket) throws IOException {
        channel = SocketChannel.open(StandardProtocolFamily.UNIX);
        channel.connect(UnixDomainSocketAddress.of(socket));
        Thread.ofVirtual().name("raw-peer-reader").start(() -> {
            FrameReader reader = new FrameReader(channel);
            try {
                Frame f;
                while ((f = reader.read()) != null) {
                    events.add(new Received(f));
                }
                events.add(new Ended("eof"));
            } catch (IOException e) {
                events.add(new Ended(e.toString()));
            }
        });
    }

    static byte[] header(long length, int streamId, int type, int flags) {
        return ByteBuffer.allocate(Frame.HEADER_LENGTH)
                .putInt((int) length).putInt(streamId).put((byte) type).put((byte) flags).array();
    }

    static byte[] frame(int streamId, int type, byte[] payload) {
        return ByteBuffer.allocate(Frame.HEADER_LENGTH + payload.length)
                .put(header(payload.length, streamId, type, 0)).put(payload).array();
    }

    static byte[] request(int streamId, String method, com.google.protobuf.MessageLite message) {
        return frame(streamId, Frame.TYPE_REQUEST, Request.newBuilder()
                .setService(EchoFixture.SERVICE).setMethod(method)
                .setPayload(message.toByteString()).build().toByteArray());
    }

    void write(byte[] bytes) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(bytes);
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    /** The next event, failing the test when nothing comes within {@code bound}. */
    Event next(Duration bound) throws InterruptedException {
        Event e = events.poll(bound.toMillis(), TimeUnit.MILLISECONDS);
        if (e == null) {
            throw new AssertionError("the server sent nothing and did not close within " + bound);
        }
        return e;
    }

    /** The next frame, decoded as a Response; fails the test on anything else. */
    Response response(int expectedStreamId, Duration bound) throws Exception {
        Event e = next(bound);
        if (!(e instanceof Received(Frame f))) {
            throw new AssertionError("expected a response on stream " + expectedStreamId + ", got " + e);
        }
        if (f.streamId() != expectedStreamId || f.type() != Frame.TYPE_RESPONSE) {
            throw new AssertionError("expected a response on stream " + expectedStreamId + ", got stream "
                    + f.unsignedStreamId() + " type " + f.type());
        }
        return Response.parseFrom(f.payload());
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
