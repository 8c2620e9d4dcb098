package io.rund.ttrpc;

import static io.rund.ttrpc.EchoFixture.SERVICE;
import static io.rund.ttrpc.EchoFixture.text;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.rund.ttrpc.test.EchoRequest;
import io.rund.ttrpc.test.EchoResponse;
import java.nio.file.FileSystems;
import java.nio.file.attribute.UserPrincipal;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The Java client against the Java server, over real unix sockets. */
@Timeout(60)
class ClientServerTest {

    private static final Duration SHORT = Duration.ofSeconds(10);

    @Test
    void roundTripCarriesPayloadAndMetadata() throws Exception {
        try (EchoFixture f = new EchoFixture("roundtrip"); Client c = f.connect()) {
            byte[] blob = new byte[100_000];
            for (int i = 0; i < blob.length; i++) {
                blob[i] = (byte) (i * 31);
            }
            EchoRequest req = EchoRequest.newBuilder().setText("héllo").setBlob(ByteString.copyFrom(blob)).build();
            CallOptions opts = CallOptions.DEFAULT.withMetadata(Metadata.of("echo", "one", "Echo", "two"));
            EchoResponse resp = c.call(SERVICE, "Echo", req, EchoResponse.parser(), opts);
            assertEquals("héllo", resp.getText());
            assertEquals(ByteString.copyFrom(blob), resp.getBlob());
            assertEquals(List.of("one", "two"), resp.getMetadataList(), "keys are case-insensitive, values keep order");
        }
    }

    @Test
    void thousandConcurrentCallsShareOneConnection() throws Exception {
        try (EchoFixture f = new EchoFixture("thousand"); Client c = f.connect()) {
            List<CompletableFuture<EchoResponse>> calls = new ArrayList<>();
            for (int i = 0; i < 1000; i++) {
                EchoRequest req = EchoRequest.newBuilder().setText("call-" + i).setSleepMs(20).build();
                calls.add(c.callAsync(SERVICE, "Echo", req, EchoResponse.parser(), CallOptions.DEFAULT));
            }
            for (int i = 0; i < calls.size(); i++) {
                assertEquals("call-" + i, calls.get(i).get(30, TimeUnit.SECONDS).getText());
            }
            assertEquals(1, f.server.connectionCount());
            assertTrue(f.mostRunning.get() > 100,
                    "calls on one connection must run concurrently; at most " + f.mostRunning.get() + " did");
            assertEquals(0, c.pendingCalls());
        }
    }

    @Test
    void manyThreadsCallingAtOnceKeepStreamIdsInOrderOnTheWire() throws Exception {
        // The server refuses a stream id below one it has seen, so a client whose threads
        // took ids in one order and wrote them in another would see calls fail.
        try (EchoFixture f = new EchoFixture("threads"); Client c = f.connect()) {
            List<Thread> threads = new ArrayList<>();
            List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
            for (int t = 0; t < 64; t++) {
                int thread = t;
                threads.add(Thread.ofVirtual().start(() -> {
                    for (int i = 0; i < 200; i++) {
                        String text = thread + "/" + i;
                        try {
                            EchoResponse r = c.call(SERVICE, "Echo", text(text), EchoResponse.parser(), CallOptions.DEFAULT);
                            if (!r.getText().equals(text)) {
                                failures.add(new AssertionError("sent " + text + ", got " + r.getText()));
                            }
                        } catch (TtrpcException e) {
                            failures.add(e);
                        }
                    }
                }));
            }
            for (Thread t : threads) {
                t.join();
            }
            assertEquals(List.of(), failures);
            assertEquals(64 * 200, f.finished.get());
        }
    }

    @Test
    void handlerFaultsReachTheCallerWithTheirCode() throws Exception {
        try (EchoFixture f = new EchoFixture("faults"); Client c = f.connect()) {
            for (Code code : List.of(Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION,
                    Code.INVALID_ARGUMENT)) {
                TtrpcException e = assertThrows(TtrpcException.class,
                        () -> c.call(SERVICE, "Fail", text(code.name()), EchoResponse.parser(), CallOptions.DEFAULT));
                assertEquals(code, e.code());
                assertEquals("asked to fail with " + code.name(), e.status().message());
            }
            TtrpcException crash = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Crash", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.UNKNOWN, crash.code());
            assertTrue(crash.status().message().contains("crashed on purpose"), crash.status().message());

            TtrpcException noService = assertThrows(TtrpcException.class,
                    () -> c.call("no.such.Service", "Echo", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.UNIMPLEMENTED, noService.code());
            assertTrue(noService.status().message().contains("no.such.Service"));
            TtrpcException noMethod = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Nope", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.UNIMPLEMENTED, noMethod.code());
            assertTrue(noMethod.status().message().contains(SERVICE + "/Nope"));

            // The connection is still good after all of that.
            assertEquals("ok", c.call(SERVICE, "Echo", text("ok"), EchoResponse.parser(), CallOptions.DEFAULT).getText());
        }
    }

    @Test
    void anApplicationMapperChoosesCodesForItsOwnFaults() throws Exception {
        ErrorMapper app = t -> t instanceof IllegalStateException ? new Status(Code.FAILED_PRECONDITION, t.getMessage()) : null;
        try (EchoFixture f = new EchoFixture("mapper", b -> b.errorMapper(ErrorMapper.standard().orElse(app)));
                Client c = f.connect()) {
            TtrpcException e = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Crash", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.FAILED_PRECONDITION, e.code());
            assertEquals("crashed on purpose", e.status().message());
            TtrpcException typed = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Fail", text("NOT_FOUND"), EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.NOT_FOUND, typed.code(), "the standard mapping still comes first");
        }
    }

    @Test
    void aCallPastItsDeadlineFailsAndTheHandlerIsInterrupted() throws Exception {
        try (EchoFixture f = new EchoFixture("deadline"); Client c = f.connect()) {
            EchoRequest slow = EchoRequest.newBuilder().setText("slow").setSleepMs(30_000).build();
            long start = System.nanoTime();
            TtrpcException e = assertThrows(TtrpcException.class, () -> c.call(SERVICE, "Echo", slow,
                    EchoResponse.parser(), CallOptions.DEFAULT.withTimeout(Duration.ofMillis(200))));
            assertEquals(Code.DEADLINE_EXCEEDED, e.code());
            assertTrue(System.nanoTime() - start < TimeUnit.SECONDS.toNanos(10), "the deadline was not kept");
            // The server got the timeout too and stopped the handler.
            assertTrue(Poll.until(SHORT, () -> f.interrupted.get() == 1), "handler was not interrupted");
            assertEquals(0, c.pendingCalls());
            assertEquals("after", c.call(SERVICE, "Echo", text("after"), EchoResponse.parser(),
                    CallOptions.DEFAULT.withTimeout(SHORT)).getText());
        }
    }

    @Test
    void pendingCallsFailWhenTheConnectionDrops() throws Exception {
        try (EchoFixture f = new EchoFixture("drop")) {
            Client c = f.connect();
            CompletableFuture<EchoResponse> blocked = c.callAsync(SERVICE, "Block", text("b"), EchoResponse.parser(),
                    CallOptions.DEFAULT);
            CompletableFuture<EchoResponse> slow = c.callAsync(SERVICE, "Echo",
                    EchoRequest.newBuilder().setSleepMs(30_000).build(), EchoResponse.parser(), CallOptions.DEFAULT);
            assertTrue(f.blocked.await(10, TimeUnit.SECONDS));
            f.server.close();
            for (CompletableFuture<EchoResponse> call : List.of(blocked, slow)) {
                ExecutionException e = assertThrows(ExecutionException.class, () -> call.get(10, TimeUnit.SECONDS));
                TtrpcException t = (TtrpcException) e.getCause();
                assertEquals(Code.UNAVAILABLE, t.code());
                assertTrue(t.status().message().contains(SERVICE), t.status().message());
            }
            assertFalse(c.isOpen());
            TtrpcException later = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Echo", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.UNAVAILABLE, later.code());
            c.close();
        }
    }

    @Test
    void oversizedRequestIsRefusedLocallyAndTheConnectionLivesOn() throws Exception {
        try (EchoFixture f = new EchoFixture("bigreq"); Client c = f.connect()) {
            EchoRequest big = EchoRequest.newBuilder().setBlob(ByteString.copyFrom(new byte[Frame.MAX_PAYLOAD])).build();
            TtrpcException e = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Echo", big, EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.RESOURCE_EXHAUSTED, e.code());
            assertTrue(c.isOpen());
            assertEquals("small", c.call(SERVICE, "Echo", text("small"), EchoResponse.parser(), CallOptions.DEFAULT).getText());
        }
    }

    @Test
    void oversizedResponseBecomesResourceExhausted() throws Exception {
        try (EchoFixture f = new EchoFixture("bigresp"); Client c = f.connect()) {
            EchoRequest req = EchoRequest.newBuilder().setReplyBytes(Frame.MAX_PAYLOAD + 1).build();
            TtrpcException e = assertThrows(TtrpcException.class,
                    () -> c.call(SERVICE, "Echo", req, EchoResponse.parser(), CallOptions.DEFAULT));
            assertEquals(Code.RESOURCE_EXHAUSTED, e.code());
            EchoRequest fits = EchoRequest.newBuilder().setReplyBytes(Frame.MAX_PAYLOAD - 1024).build();
            assertEquals(Frame.MAX_PAYLOAD - 1024,
                    c.call(SERVICE, "Echo", fits, EchoResponse.parser(), CallOptions.DEFAULT).getBlob().size());
        }
    }

    @Test
    void gracefulShutdownLetsCallsInFlightFinish() throws Exception {
        try (EchoFixture f = new EchoFixture("graceful"); Client c = f.connect()) {
            CompletableFuture<EchoResponse> inFlight = c.callAsync(SERVICE, "Echo",
                    EchoRequest.newBuilder().setText("finishing").setSleepMs(300).build(), EchoResponse.parser(),
                    CallOptions.DEFAULT);
            assertTrue(Poll.until(SHORT, () -> f.running.get() == 1));
            assertTrue(f.server.shutdown(Duration.ofSeconds(10)), "an idle server must shut down cleanly");
            assertEquals("finishing", inFlight.get(1, TimeUnit.SECONDS).getText());
            assertEquals(0, f.server.connectionCount());
            assertThrows(java.io.IOException.class, f::connect, "the listener must be closed");
        }
    }

    @Test
    void shutdownGivesUpOnStuckCallsAtItsDeadline() throws Exception {
        try (EchoFixture f = new EchoFixture("stuck"); Client c = f.connect()) {
            CompletableFuture<EchoResponse> stuck = c.callAsync(SERVICE, "Block", text("b"), EchoResponse.parser(),
                    CallOptions.DEFAULT);
            assertTrue(f.blocked.await(10, TimeUnit.SECONDS));
            long start = System.nanoTime();
            assertFalse(f.server.shutdown(Duration.ofMillis(300)), "a stuck call must not count as clean");
            assertTrue(System.nanoTime() - start < TimeUnit.SECONDS.toNanos(5));
            ExecutionException e = assertThrows(ExecutionException.class, () -> stuck.get(10, TimeUnit.SECONDS));
            assertEquals(Code.UNAVAILABLE, ((TtrpcException) e.getCause()).code());
        }
    }

    @Test
    void aPeerThePolicyRefusesIsDisconnectedBeforeAnyCall() throws Exception {
        UserPrincipal nobody = FileSystems.getDefault().getUserPrincipalLookupService().lookupPrincipalByName("nobody");
        try (EchoFixture f = new EchoFixture("refused", b -> b.peerPolicy(PeerPolicy.users(Set.of(nobody))));
                Client c = f.connect()) {
            TtrpcException e = assertThrows(TtrpcException.class, () -> c.call(SERVICE, "Echo", text("x"),
                    EchoResponse.parser(), CallOptions.DEFAULT.withTimeout(SHORT)));
            assertEquals(Code.UNAVAILABLE, e.code());
            assertEquals(0, f.finished.get());
        }
    }

    @Test
    void theDefaultPolicyAcceptsTheSameUser() throws Exception {
        try (EchoFixture f = new EchoFixture("sameuser", b -> b.peerPolicy(PeerPolicy.sameUser()));
                Client c = f.connect()) {
            assertEquals("me", c.call(SERVICE, "Echo", text("me"), EchoResponse.parser(), CallOptions.DEFAULT).getText());
        }
    }
}
