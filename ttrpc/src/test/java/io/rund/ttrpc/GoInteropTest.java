package io.rund.ttrpc;

import static io.rund.ttrpc.EchoFixture.SERVICE;
import static io.rund.ttrpc.EchoFixture.text;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.rund.testing.Command;
import io.rund.testing.GoHarness;
import io.rund.ttrpc.test.EchoRequest;
import io.rund.ttrpc.test.EchoResponse;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * rund's ttrpc against containerd's Go ttrpc (Debian's golang-github-containerd-ttrpc-dev),
 * in both directions, through the harness in src/test/go/ttrpc-interop.
 */
@Timeout(300)
class GoInteropTest {

    private static final Path HARNESS_SOURCE = Path.of("src/test/go/ttrpc-interop");

    @Test
    void goClientCallsJavaServer() throws Exception {
        Path harness = GoHarness.build(HARNESS_SOURCE);
        try (EchoFixture f = new EchoFixture("goclient")) {
            Command.Result r = Command.run(Duration.ofSeconds(60), null, Map.of(),
                    List.of(harness.toString(), "client", f.socket.toString())).ok();
            List<String> lines = r.stdout().lines().toList();
            assertEquals(List.of(
                    "echo text=\"hello from go\" blob=[0 1 2 255] metadata=from-go-1,from-go-2",
                    "fail code=NotFound message=\"asked to fail with NOT_FOUND\"",
                    "missing code=Unimplemented",
                    "deadline code=DeadlineExceeded",
                    "concurrent calls=200 failed=0"), lines, r.toString());
            // Go sent its deadline as timeout_nano; the Java server must have acted on it.
            assertTrue(Poll.until(Duration.ofSeconds(10), () -> f.interrupted.get() == 1),
                    "the handler of the timed-out call was not interrupted");
        }
    }

    @Test
    void javaClientCallsGoServer() throws Exception {
        Path harness = GoHarness.build(HARNESS_SOURCE);
        Path dir = Files.createTempDirectory("ttrpc-go-");
        Path socket = dir.resolve("goserver.sock");
        Process go = new ProcessBuilder(harness.toString(), "server", socket.toString()).start();
        CompletableFuture<String> stderr = Command.drain(go.getErrorStream());
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(go.getInputStream(), StandardCharsets.UTF_8));
            assertEquals("ready", out.readLine(), () -> "the Go server did not start: " + stderr.getNow(""));
            try (Client c = Client.connect(socket)) {
                byte[] blob = {0, 1, 2, (byte) 255};
                EchoResponse echo = c.call(SERVICE, "Echo",
                        EchoRequest.newBuilder().setText("hello from java").setBlob(ByteString.copyFrom(blob)).build(),
                        EchoResponse.parser(), CallOptions.DEFAULT.withMetadata(Metadata.of("echo", "a", "ECHO", "b")));
                assertEquals("hello from java", echo.getText());
                assertEquals(ByteString.copyFrom(blob), echo.getBlob());
                assertEquals(List.of("a", "b"), echo.getMetadataList());

                TtrpcException fail = assertThrows(TtrpcException.class,
                        () -> c.call(SERVICE, "Fail", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
                assertEquals(Code.NOT_FOUND, fail.code());
                assertEquals("go was asked to fail: x", fail.status().message());

                TtrpcException missing = assertThrows(TtrpcException.class,
                        () -> c.call(SERVICE, "Missing", text("x"), EchoResponse.parser(), CallOptions.DEFAULT));
                assertEquals(Code.UNIMPLEMENTED, missing.code());

                TtrpcException late = assertThrows(TtrpcException.class, () -> c.call(SERVICE, "Echo",
                        EchoRequest.newBuilder().setSleepMs(30_000).build(), EchoResponse.parser(),
                        CallOptions.DEFAULT.withTimeout(Duration.ofMillis(200))));
                assertEquals(Code.DEADLINE_EXCEEDED, late.code());

                List<CompletableFuture<EchoResponse>> calls = new ArrayList<>();
                for (int i = 0; i < 500; i++) {
                    calls.add(c.callAsync(SERVICE, "Echo", EchoRequest.newBuilder().setText("n" + i).setSleepMs(5).build(),
                            EchoResponse.parser(), CallOptions.DEFAULT));
                }
                for (int i = 0; i < calls.size(); i++) {
                    assertEquals("n" + i, calls.get(i).get(30, TimeUnit.SECONDS).getText());
                }
                assertTrue(c.isOpen());
            }
            go.getOutputStream().close();
            assertTrue(go.waitFor(10, TimeUnit.SECONDS), "the Go server did not stop");
            assertEquals(0, go.exitValue(), () -> "Go server: " + stderr.join());
        } finally {
            go.destroyForcibly();
            Files.deleteIfExists(socket);
            Files.deleteIfExists(dir);
        }
    }
}
