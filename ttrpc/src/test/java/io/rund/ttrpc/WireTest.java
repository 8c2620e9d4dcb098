package io.rund.ttrpc;

import static io.rund.ttrpc.EchoFixture.text;
import static io.rund.ttrpc.RawPeer.frame;
import static io.rund.ttrpc.RawPeer.header;
import static io.rund.ttrpc.RawPeer.request;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.ttrpc.test.EchoRequest;
import io.rund.ttrpc.test.EchoResponse;
import io.rund.ttrpc.wire.Request;
import io.rund.ttrpc.wire.Response;
import java.io.ByteArrayOutputStream;
import java.time.Duration;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The server against hand-made bytes: split, joined, oversized, truncated and garbage frames. */
@Timeout(60)
class WireTest {

    private static final Duration BOUND = Duration.ofSeconds(10);

    private static String echoed(Response r) throws Exception {
        assertEquals(0, r.getStatus().getCode(), r.getStatus().getMessage());
        return EchoResponse.parseFrom(r.getPayload()).getText();
    }

    /** After whatever a test did, the server must still serve a fresh, well-behaved client. */
    private static void assertStillServing(EchoFixture f) throws Exception {
        try (Client c = f.connect()) {
            assertEquals("alive", c.call(EchoFixture.SERVICE, "Echo", text("alive"), EchoResponse.parser(),
                    CallOptions.DEFAULT.withTimeout(BOUND)).getText());
        }
    }

    @Test
    void aFrameSplitIntoSingleBytesIsReassembled() throws Exception {
        try (EchoFixture f = new EchoFixture("split"); RawPeer p = new RawPeer(f.socket)) {
            for (byte b : request(1, "Echo", text("dribbled"))) {
                p.write(new byte[] {b});
            }
            assertEquals("dribbled", echoed(p.response(1, BOUND)));
        }
    }

    @Test
    void framesJoinedInOneWriteAreAllAnswered() throws Exception {
        try (EchoFixture f = new EchoFixture("joined"); RawPeer p = new RawPeer(f.socket)) {
            ByteArrayOutputStream joined = new ByteArrayOutputStream();
            for (int i = 0; i < 3; i++) {
                joined.write(request(2 * i + 1, "Echo", text("n" + i)));
            }
            p.write(joined.toByteArray());
            // Calls run concurrently, so answers may come in any order.
            java.util.Map<Long, String> got = new java.util.HashMap<>();
            for (int i = 0; i < 3; i++) {
                RawPeer.Received r = assertInstanceOf(RawPeer.Received.class, p.next(BOUND));
                got.put(r.frame().unsignedStreamId(), echoed(Response.parseFrom(r.frame().payload())));
            }
            assertEquals(java.util.Map.of(1L, "n0", 3L, "n1", 5L, "n2"), got);
        }
    }

    @Test
    void anOversizedFrameIsAnsweredAndTheConnectionLivesOn() throws Exception {
        try (EchoFixture f = new EchoFixture("oversized"); RawPeer p = new RawPeer(f.socket)) {
            int length = Frame.MAX_PAYLOAD + 1;
            p.write(header(length, 1, Frame.TYPE_REQUEST, 0));
            p.write(new byte[length]);
            Response r = p.response(1, BOUND);
            assertEquals(Code.RESOURCE_EXHAUSTED.value(), r.getStatus().getCode());
            assertTrue(r.getStatus().getMessage().contains(String.valueOf(length)), r.getStatus().getMessage());
            p.write(request(3, "Echo", text("next")));
            assertEquals("next", echoed(p.response(3, BOUND)));
        }
    }

    @Test
    void aTruncatedFrameClosesOnlyThatConnection() throws Exception {
        try (EchoFixture f = new EchoFixture("truncated"); RawPeer p = new RawPeer(f.socket)) {
            p.write(header(100, 1, Frame.TYPE_REQUEST, 0));
            p.write(new byte[10]);
            p.channel.shutdownOutput();
            assertInstanceOf(RawPeer.Ended.class, p.next(BOUND));
            assertTrue(Poll.until(BOUND, () -> f.server.connectionCount() == 0));
            assertStillServing(f);
        }
    }

    @Test
    void evenAndReusedStreamIdsAreRejected() throws Exception {
        try (EchoFixture f = new EchoFixture("streamids"); RawPeer p = new RawPeer(f.socket)) {
            p.write(request(2, "Echo", text("even")));
            Response even = p.response(2, BOUND);
            assertEquals(Code.INVALID_ARGUMENT.value(), even.getStatus().getCode());
            assertTrue(even.getStatus().getMessage().contains("stream id 2"), even.getStatus().getMessage());

            p.write(request(7, "Echo", text("seven")));
            assertEquals("seven", echoed(p.response(7, BOUND)));
            for (int reused : new int[] {7, 5}) {
                p.write(request(reused, "Echo", text("again")));
                Response r = p.response(reused, BOUND);
                assertEquals(Code.INVALID_ARGUMENT.value(), r.getStatus().getCode());
                assertTrue(r.getStatus().getMessage().contains("reused"), r.getStatus().getMessage());
            }
            p.write(request(9, "Echo", text("nine")));
            assertEquals("nine", echoed(p.response(9, BOUND)));
            assertEquals(2, f.finished.get(), "rejected requests must not reach the handler");
        }
    }

    @Test
    void undecodableRequestsAreInvalidArguments() throws Exception {
        try (EchoFixture f = new EchoFixture("undecodable"); RawPeer p = new RawPeer(f.socket)) {
            // Not a Request at all: field 1 claims 100 bytes that are not there.
            p.write(frame(1, Frame.TYPE_REQUEST, new byte[] {0x0a, 100, 1, 2}));
            Response envelope = p.response(1, BOUND);
            assertEquals(Code.INVALID_ARGUMENT.value(), envelope.getStatus().getCode());
            // A good Request whose payload is not an EchoRequest.
            byte[] bad = Request.newBuilder().setService(EchoFixture.SERVICE).setMethod("Echo")
                    .setPayload(com.google.protobuf.ByteString.copyFrom(new byte[] {(byte) 0xff, (byte) 0xff}))
                    .build().toByteArray();
            p.write(frame(3, Frame.TYPE_REQUEST, bad));
            Response payload = p.response(3, BOUND);
            assertEquals(Code.INVALID_ARGUMENT.value(), payload.getStatus().getCode());
            assertTrue(payload.getStatus().getMessage().contains("Echo"), payload.getStatus().getMessage());
        }
    }

    @Test
    void framesOfUnknownTypeAreSkipped() throws Exception {
        try (EchoFixture f = new EchoFixture("unknowntype"); RawPeer p = new RawPeer(f.socket)) {
            p.write(frame(1, 0x7f, new byte[] {1, 2, 3}));
            p.write(frame(1, Frame.TYPE_RESPONSE, new byte[0]));
            p.write(request(3, "Echo", text("after")));
            assertEquals("after", echoed(p.response(3, BOUND)));
        }
    }

    @Test
    void aServerDeadlineIsKeptWithoutHelpFromTheClient() throws Exception {
        try (EchoFixture f = new EchoFixture("serverdeadline"); RawPeer p = new RawPeer(f.socket)) {
            byte[] req = Request.newBuilder().setService(EchoFixture.SERVICE).setMethod("Block")
                    .setPayload(text("b").toByteString()).setTimeoutNano(Duration.ofMillis(200).toNanos())
                    .build().toByteArray();
            p.write(frame(1, Frame.TYPE_REQUEST, req));
            Response r = p.response(1, BOUND);
            assertEquals(Code.DEADLINE_EXCEEDED.value(), r.getStatus().getCode());
            assertTrue(Poll.until(BOUND, () -> f.interrupted.get() == 1), "the handler must be interrupted");
        }
    }

    @Test
    void aPeerThatLeavesMidCallHasItsCallsInterruptedAndTheServerCarriesOn() throws Exception {
        try (EchoFixture f = new EchoFixture("leaves")) {
            try (RawPeer p = new RawPeer(f.socket)) {
                p.write(request(1, "Block", text("b")));
                assertTrue(f.blocked.await(10, java.util.concurrent.TimeUnit.SECONDS));
            }
            // Nobody is left to read the answer: the handler is told, like a Go handler's
            // context is cancelled, and the connection is gone.
            assertTrue(Poll.until(BOUND, () -> f.interrupted.get() == 1), "the orphaned call was not interrupted");
            assertTrue(Poll.until(BOUND, () -> f.server.connectionCount() == 0));
            assertStillServing(f);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 5, 6, 7, 8})
    void garbageIsAnsweredOrClosedNeverHung(int seed) throws Exception {
        try (EchoFixture f = new EchoFixture("garbage" + seed)) {
            Random random = new Random(seed);
            byte[] garbage = new byte[64 + random.nextInt(16 * 1024)];
            random.nextBytes(garbage);
            if (seed % 2 == 0) {
                // Half the runs keep the length plausible, so the bytes reach the decoder.
                System.arraycopy(header(garbage.length - Frame.HEADER_LENGTH, 1, Frame.TYPE_REQUEST, 0), 0, garbage, 0,
                        Frame.HEADER_LENGTH);
            }
            try (RawPeer p = new RawPeer(f.socket)) {
                p.write(garbage);
                p.channel.shutdownOutput();
                // Drain whatever comes until the server closes; each event must come in time.
                while (!(p.next(BOUND) instanceof RawPeer.Ended)) {
                    // an answer to some stream: fine
                }
            }
            assertTrue(Poll.until(BOUND, () -> f.server.connectionCount() == 0));
            assertStillServing(f);
        }
    }
}
