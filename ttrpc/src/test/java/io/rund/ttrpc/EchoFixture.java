package io.rund.ttrpc;

import com.google.protobuf.ByteString;
import io.rund.testing.Trees;
import io.rund.ttrpc.test.EchoRequest;
import io.rund.ttrpc.test.EchoResponse;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.UnaryOperator;

/**
 * A real server on a real unix socket in a fresh directory, serving the test service
 * {@code rund.ttrpc.test.Echo}:
 * <ul>
 *   <li>Echo: answers with the request's text and blob and the "echo" metadata values,
 *       after sleeping sleep_ms; reply_bytes asks for a blob of that size;</li>
 *   <li>Fail: throws a TtrpcException whose code is named by the text;</li>
 *   <li>Crash: throws an IllegalStateException;</li>
 *   <li>Block: waits until {@link #release} opens, or until interrupted.</li>
 * </ul>
 */
final class EchoFixture implements AutoCloseable {

    static final String SERVICE = "rund.ttrpc.test.Echo";

    final Path dir;
    final Path socket;
    final Server server;
    final AtomicInteger running = new AtomicInteger();
    final AtomicInteger mostRunning = new AtomicInteger();
    final AtomicInteger interrupted = new AtomicInteger();
    final AtomicInteger finished = new AtomicInteger();
    final CountDownLatch release = new CountDownLatch(1);
    final CountDownLatch blocked = new CountDownLatch(1);

    EchoFixture(String testName) throws IOException {
        this(testName, b -> b);
    }

    EchoFixture(String testName, UnaryOperator<Server.Builder> configure) throws IOException {
        dir = Files.createTempDirectory("ttrpc-");
        socket = dir.resolve(testName + ".sock");
        Server.Builder builder = Server.builder().name(testName).register(service());
        server = configure.apply(builder).build();
        ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(socket));
        server.serve(listener);
    }

    ServiceDefinition service() {
        return ServiceDefinition.builder(SERVICE)
                .unary("Echo", EchoRequest.parser(), (ctx, req) -> track(() -> {
                    if (req.getSleepMs() > 0) {
                        Thread.sleep(req.getSleepMs());
                    }
                    ByteString blob = req.getReplyBytes() > 0
                            ? ByteString.copyFrom(new byte[(int) req.getReplyBytes()]) : req.getBlob();
                    return EchoResponse.newBuilder()
                            .setText(req.getText())
                            .setBlob(blob)
                            .addAllMetadata(ctx.metadata().getAll("echo"))
                            .build();
                }))
                .unary("Fail", EchoRequest.parser(), (ctx, req) -> {
                    throw new TtrpcException(Code.valueOf(req.getText()), "asked to fail with " + req.getText());
                })
                .unary("Crash", EchoRequest.parser(), (ctx, req) -> {
                    throw new IllegalStateException("crashed on purpose");
                })
                .unary("Block", EchoRequest.parser(), (ctx, req) -> track(() -> {
                    blocked.countDown();
                    release.await();
                    return EchoResponse.newBuilder().setText("released").build();
                }))
                .build();
    }

    interface Body {
        EchoResponse run() throws Exception;
    }

    private EchoResponse track(Body body) throws Exception {
        int now = running.incrementAndGet();
        mostRunning.accumulateAndGet(now, Math::max);
        try {
            EchoResponse r = body.run();
            finished.incrementAndGet();
            return r;
        } catch (InterruptedException e) {
            interrupted.incrementAndGet();
            throw e;
        } finally {
            running.decrementAndGet();
        }
    }

    Client connect() throws IOException {
        return Client.connect(socket);
    }

    static EchoRequest text(String text) {
        return EchoRequest.newBuilder().setText(text).build();
    }

    @Override
    public void close() throws IOException {
        release.countDown();
        server.close();
        Trees.delete(dir);
    }
}
