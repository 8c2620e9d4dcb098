package io.rund.shim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Empty;
import io.rund.containerd.task.v2.CreateTaskRequest;
import io.rund.containerd.task.v2.CreateTaskResponse;
import io.rund.containerd.task.v2.DeleteRequest;
import io.rund.containerd.task.v2.DeleteResponse;
import io.rund.containerd.task.v2.ShutdownRequest;
import io.rund.containerd.task.v2.StateRequest;
import io.rund.containerd.task.v2.StateResponse;
import io.rund.testing.Command;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.Metadata;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import io.rund.ttrpc.TtrpcException;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A task endpoint's relay (shim/launcher/relay.c, forked by the launcher's start) between
 * containerd (a ttrpc client here) and daemons this test plays, each a ttrpc server on
 * relay.sock that the test can kill: what containerd sees when the daemon dies with calls
 * in flight, while none runs, and when one stops on purpose. No root, no VM.
 */
@Timeout(120)
class RelayTest {

    private static final String TASK = "containerd.task.v2.Task";
    private static final Duration T = Duration.ofSeconds(20);

    @TempDir
    Path dir;
    private Path relaySocket;
    private Path endpoint;
    private Map<String, String> env;
    private final AtomicLong relayPid = new AtomicLong();
    private FakeDaemon daemon;
    private Client containerd;

    /** A daemon as the relay sees it: relay.sock, the control link's "ok", a ttrpc server per link. */
    private final class FakeDaemon implements AutoCloseable {
        final ServerSocketChannel listener;
        final Server server;
        final BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        final List<SocketChannel> links = new java.util.concurrent.CopyOnWriteArrayList<>();
        private final boolean knowsEndpoint;

        FakeDaemon(ServiceDefinition tasks) throws IOException {
            this(tasks, true);
        }

        /** A daemon that has ({@code knowsEndpoint}) or has not the relay's endpoint. */
        FakeDaemon(ServiceDefinition tasks, boolean knowsEndpoint) throws IOException {
            this.knowsEndpoint = knowsEndpoint;
            Files.deleteIfExists(relaySocket);
            listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            listener.bind(UnixDomainSocketAddress.of(relaySocket));
            server = Server.builder().name("fake-daemon").register(tasks).stoppingCode(Code.ABORTED).build();
            Thread.ofVirtual().start(this::accept);
        }

        private void accept() {
            while (listener.isOpen()) {
                try {
                    SocketChannel ch = listener.accept();
                    links.add(ch);
                    String hello = line(ch);
                    if (hello.startsWith("ctl ")) {
                        relayPid.set(Long.parseLong(hello.split(" ")[2]));
                        ch.write(ByteBuffer.wrap((knowsEndpoint ? "ok\n" : "unknown\n").getBytes(StandardCharsets.US_ASCII)));
                    } else {
                        server.serve(ch);
                    }
                } catch (IOException e) {
                    return;
                }
            }
        }

        /**
         * As SIGKILL ends a daemon: every socket closes, nothing is answered. The socket's name
         * goes too: a JDK listener closed while a thread waits in its accept is let go only
         * when that thread returns, and a relay could link to it meanwhile.
         */
        @Override
        public void close() throws IOException {
            Files.deleteIfExists(relaySocket);
            listener.close();
            for (SocketChannel ch : links) {
                ch.close();
            }
            server.close();
        }
    }

    private static String line(SocketChannel ch) throws IOException {
        StringBuilder b = new StringBuilder();
        ByteBuffer one = ByteBuffer.allocate(1);
        while (true) {
            one.clear();
            if (ch.read(one) < 0) {
                throw new IOException("closed");
            }
            char c = (char) one.get(0);
            if (c == '\n') {
                return b.toString();
            }
            b.append(c);
        }
    }

    /** Calls {@code method}s of the task API: each handler names what it does with the request. */
    private interface Handler {
        Object handle(io.rund.ttrpc.CallContext c, Object request) throws Exception;
    }

    private static ServiceDefinition tasks(Handler handler) {
        return ServiceDefinition.builder(TASK)
                .unary("State", StateRequest.parser(), (c, r) -> (StateResponse) handler.handle(c, r))
                .unary("Delete", DeleteRequest.parser(), (c, r) -> (DeleteResponse) handler.handle(c, r))
                .unary("Create", CreateTaskRequest.parser(), (c, r) -> (CreateTaskResponse) handler.handle(c, r))
                .unary("Shutdown", ShutdownRequest.parser(), (c, r) -> (Empty) handler.handle(c, r))
                .build();
    }

    @BeforeEach
    void startRelay() throws Exception {
        Path bin = dir.resolve("bin");
        Command.run(Duration.ofMinutes(2), Path.of("launcher").toAbsolutePath(), Map.of(), List.of("make", "-s", "OUT=" + bin)).ok();
        Path control = dir.resolve("rund.sock");
        relaySocket = dir.resolve("relay.sock");
        endpoint = Files.createDirectories(dir.resolve("t")).resolve("e1.sock");
        // No daemon is ever started by the relay here: a "daemon" that only says so.
        Path noDaemon = dir.resolve("no-daemon");
        Files.writeString(noDaemon, "#!/bin/sh\necho started >> " + dir.resolve("starts") + "\n");
        noDaemon.toFile().setExecutable(true);
        env = Map.of("RUND_CONTROL_SOCKET", control.toString(), "RUND_LOG", dir.resolve("relay.log").toString(),
                "RUND_DAEMON", noDaemon.toString());
        daemon = new FakeDaemon(tasks((c, r) -> StateResponse.newBuilder().setId("first").build()));
        // The launcher's start asks the control socket; its answer names the endpoint and its relay.
        try (ServerSocketChannel ctl = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            ctl.bind(UnixDomainSocketAddress.of(control));
            Server controlServer = Server.builder().name("control").register(ServiceDefinition.builder("rund.control.v1.Control")
                    .unary("Start", io.rund.control.v1.StartRequest.parser(), (c, r) -> io.rund.control.v1.StartResponse
                            .newBuilder().setAddress("unix://" + endpoint).setRelay("e1").build())
                    .build()).build();
            controlServer.serve(ctl);
            Command.Result r = Command.run(T, dir, env, List.of(bin.resolve("containerd-shim-rund-v2").toString(),
                    "-namespace", "default", "-address", "/a", "-publish-binary", "/b", "-id", "e1", "start"));
            controlServer.close();
            assertEquals(0, r.exitCode(), r.toString());
            assertEquals("unix://" + endpoint, r.stdout());
        }
        containerd = Client.connect(endpoint);
        assertEquals("first", containerd.call(TASK, "State", StateRequest.getDefaultInstance(), StateResponse.parser(),
                CallOptions.DEFAULT).getId(), "the relay links containerd to the daemon");
    }

    @AfterEach
    void stopRelay() throws Exception {
        if (containerd != null) {
            containerd.close();
        }
        if (daemon != null) {
            daemon.close();
        }
        long pid = relayPid.get();
        if (pid > 0) {
            ProcessHandle.of(pid).ifPresent(p -> {
                p.destroy();
                p.onExit().orTimeout(10, TimeUnit.SECONDS).join();
            });
        }
    }

    @Test
    void aCallThatMayRunTwiceGoesToTheNextDaemonMarkedAndOneThatMayNotIsUnavailable() throws Exception {
        CountDownLatch inFlight = new CountDownLatch(2);
        daemon.close();
        daemon = new FakeDaemon(tasks((c, r) -> {
            inFlight.countDown();
            Thread.sleep(60_000); // killed before it answers
            throw new AssertionError("unreachable");
        }));
        awaitLinked();
        CompletableFuture<DeleteResponse> delete = containerd.callAsync(TASK, "Delete",
                DeleteRequest.newBuilder().setId("e1").build(), DeleteResponse.parser(), CallOptions.DEFAULT);
        CompletableFuture<CreateTaskResponse> create = containerd.callAsync(TASK, "Create",
                CreateTaskRequest.newBuilder().setId("e1").build(), CreateTaskResponse.parser(), CallOptions.DEFAULT);
        assertTrue(inFlight.await(20, TimeUnit.SECONDS), "both calls reached the daemon");
        daemon.close(); // SIGKILL

        var created = assertThrows(java.util.concurrent.ExecutionException.class, () -> create.get(20, TimeUnit.SECONDS));
        TtrpcException unknown = (TtrpcException) created.getCause();
        assertEquals(Code.UNAVAILABLE, unknown.code());
        assertTrue(unknown.getMessage().contains("whether it took effect is unknown"), unknown.getMessage());
        assertFalse(delete.isDone(), "a Delete waits for the next daemon");

        BlockingQueue<String> marks = new LinkedBlockingQueue<>();
        daemon = new FakeDaemon(tasks((c, r) -> {
            marks.add(c.method() + " " + c.metadata().get("rund-replay").orElse("-"));
            return DeleteResponse.newBuilder().setExitStatus(3).build();
        }));
        assertEquals(3, delete.get(20, TimeUnit.SECONDS).getExitStatus(), "answered by the next daemon");
        assertEquals("Delete 1", marks.poll(), "sent again, marked as a repeat");
    }

    @Test
    void aCallWhileNoDaemonRunsWaitsForTheNextOneUpToItsOwnDeadline() throws Exception {
        daemon.close();
        Thread.sleep(200); // the relay has seen the daemon go
        CompletableFuture<StateResponse> waiting = containerd.callAsync(TASK, "State", StateRequest.getDefaultInstance(),
                StateResponse.parser(), CallOptions.DEFAULT);
        var short_ = containerd.callAsync(TASK, "State", StateRequest.getDefaultInstance(), StateResponse.parser(),
                new CallOptions(Duration.ofMillis(300), Metadata.EMPTY));
        var expired = assertThrows(java.util.concurrent.ExecutionException.class, () -> short_.get(20, TimeUnit.SECONDS));
        assertEquals(Code.DEADLINE_EXCEEDED, ((TtrpcException) expired.getCause()).code());
        assertFalse(waiting.isDone(), "no daemon is no error: the call waits");
        BlockingQueue<String> marks = new LinkedBlockingQueue<>();
        daemon = new FakeDaemon(tasks((c, r) -> {
            marks.add(c.metadata().get("rund-replay").orElse("-"));
            return StateResponse.newBuilder().setId("second").build();
        }));
        assertEquals("second", waiting.get(20, TimeUnit.SECONDS).getId());
        assertEquals("-", marks.poll(), "never sent before: not marked as a repeat");
        assertTrue(Files.readString(dir.resolve("starts")).startsWith("started"),
                "the relay started a daemon at once when none answered");
    }

    @Test
    void aStoppingDaemonsAbortedCallGoesToTheNextDaemonAndContainerdNeverSeesIt() throws Exception {
        CountDownLatch arrived = new CountDownLatch(1);
        CompletableFuture<Void> stopping = new CompletableFuture<>();
        daemon.close();
        daemon = new FakeDaemon(tasks((c, r) -> {
            arrived.countDown();
            stopping.get();
            throw new io.rund.ttrpc.TtrpcException(Code.ABORTED, "stopping: not run");
        }));
        awaitLinked();
        CompletableFuture<CreateTaskResponse> create = containerd.callAsync(TASK, "Create",
                CreateTaskRequest.newBuilder().setId("e1").build(), CreateTaskResponse.parser(), CallOptions.DEFAULT);
        assertTrue(arrived.await(20, TimeUnit.SECONDS));
        stopping.complete(null);
        Thread.sleep(300);
        assertFalse(create.isDone(), "ABORTED is the daemon's word to the relay, not containerd's answer");
        daemon.close();
        BlockingQueue<String> marks = new LinkedBlockingQueue<>();
        daemon = new FakeDaemon(tasks((c, r) -> {
            marks.add(c.metadata().get("rund-replay").orElse("-"));
            return CreateTaskResponse.newBuilder().setPid(42).build();
        }));
        assertEquals(42, create.get(20, TimeUnit.SECONDS).getPid(), "a Create the stopping daemon did not run runs once");
        assertEquals("-", marks.poll(), "it never ran: not marked as a repeat");
    }

    @Test
    void aDaemonWithoutTheEndpointEndsItsCallsAndAShutdownIsDone() throws Exception {
        daemon.close();
        Thread.sleep(200);
        var shutdown = containerd.callAsync(TASK, "Shutdown", ShutdownRequest.newBuilder().setId("e1").build(), Empty.parser(),
                CallOptions.DEFAULT);
        var state = containerd.callAsync(TASK, "State", StateRequest.getDefaultInstance(), StateResponse.parser(),
                CallOptions.DEFAULT);
        Thread.sleep(200);
        daemon = new FakeDaemon(tasks((c, r) -> {
            throw new AssertionError("no call reaches a daemon that has no such endpoint");
        }), false);
        shutdown.get(20, TimeUnit.SECONDS); // what it asked for is so: the endpoint is gone
        var notFound = assertThrows(java.util.concurrent.ExecutionException.class, () -> state.get(20, TimeUnit.SECONDS));
        assertEquals(Code.NOT_FOUND, ((TtrpcException) notFound.getCause()).code());
        long pid = relayPid.get();
        assertTrue(ProcessHandle.of(pid).map(p -> p.onExit().orTimeout(20, TimeUnit.SECONDS).join()).isPresent(),
                "the relay leaves");
    }

    @Test
    void noDaemonIsStartedWhileOneHoldsTheNodesLock() throws Exception {
        try (FileChannel ch = FileChannel.open(dir.resolve("rund.lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                FileLock lock = ch.lock()) {
            daemon.close();
            Thread.sleep(1000); // the relay tries its socket 50 times a second
            assertFalse(Files.exists(dir.resolve("starts")), "a daemon holds the lock (one starting, say): none started");
        }
        long end = System.nanoTime() + T.toNanos();
        while (!Files.exists(dir.resolve("starts"))) {
            assertTrue(System.nanoTime() < end, "the lock was let go: the relay starts a daemon; its log:\n"
                    + Files.readString(dir.resolve("relay.log")));
            Thread.sleep(20);
        }
        daemon = new FakeDaemon(tasks((c, r) -> StateResponse.getDefaultInstance()));
    }

    /** Waits until the relay's containerd link reaches the current fake daemon (its link reopens after a loss). */
    private void awaitLinked() throws Exception {
        long end = System.nanoTime() + T.toNanos();
        while (daemon.links.size() < 2) {
            assertTrue(System.nanoTime() < end, "the relay linked to the new daemon");
            Thread.sleep(10);
        }
    }
}
