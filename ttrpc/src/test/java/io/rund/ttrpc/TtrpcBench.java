package io.rund.ttrpc;

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
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Echo round trips over one unix-socket connection, every pairing of rund's Java ttrpc
 * and containerd's Go ttrpc as client and server, side by side in one run. Run by
 * {@code hack/bench ttrpc}; prints a Markdown table.
 *
 * <p>Each measurement: CALLS/10 warm-up calls, then CALLS calls made by WORKERS threads
 * (virtual threads in Java, goroutines in Go) sharing the connection; latency per call,
 * p50 and p99, and calls per second over the whole run.
 */
public final class TtrpcBench {

    private static final Path HARNESS = Path.of("src/test/go/ttrpc-interop");

    private record Shape(int calls, int workers, int bytes) {}

    private static final List<Shape> SHAPES = List.of(
            new Shape(20_000, 1, 16), new Shape(5_000, 1, 64 * 1024), new Shape(50_000, 32, 16));

    private TtrpcBench() {}

    public static void main(String[] args) throws Exception {
        Path go = GoHarness.build(HARNESS);
        System.out.println("| server | client | workers | payload | p50 µs | p99 µs | calls/s |");
        System.out.println("|---|---|---:|---:|---:|---:|---:|");
        // Java server.
        try (EchoFixture java = new EchoFixture("bench")) {
            for (Shape s : SHAPES) {
                row("java", "java", s, javaClient(java.socket, s));
                row("java", "go", s, goClient(go, java.socket, s));
            }
        }
        // Go server.
        Path dir = Files.createTempDirectory("ttrpc-bench-");
        Path socket = dir.resolve("go.sock");
        Process server = new ProcessBuilder(go.toString(), "server", socket.toString()).start();
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(server.getInputStream(), StandardCharsets.UTF_8));
            if (!"ready".equals(out.readLine())) {
                throw new IllegalStateException("the Go server did not start");
            }
            for (Shape s : SHAPES) {
                row("go", "java", s, javaClient(socket, s));
                row("go", "go", s, goClient(go, socket, s));
            }
        } finally {
            server.getOutputStream().close();
            server.waitFor();
            Files.deleteIfExists(socket);
            Files.deleteIfExists(dir);
        }
    }

    private static void row(String server, String client, Shape s, String result) {
        Map<String, String> r = new java.util.HashMap<>();
        for (String kv : result.trim().split(" ")) {
            String[] p = kv.split("=");
            r.put(p[0], p[1]);
        }
        System.out.printf("| %s | %s | %d | %d B | %s | %s | %s |%n", server, client, s.workers, s.bytes,
                r.get("p50_us"), r.get("p99_us"), r.get("calls_per_s"));
    }

    private static String goClient(Path go, Path socket, Shape s) throws Exception {
        return Command.run(Duration.ofMinutes(5), null, Map.of(), List.of(go.toString(), "bench", socket.toString(),
                String.valueOf(s.calls), String.valueOf(s.workers), String.valueOf(s.bytes))).ok().stdout();
    }

    private static String javaClient(Path socket, Shape s) throws Exception {
        try (Client c = Client.connect(socket)) {
            EchoRequest req = EchoRequest.newBuilder().setBlob(ByteString.copyFrom(new byte[s.bytes])).build();
            run(c, req, s.calls / 10, s.workers);
            long start = System.nanoTime();
            long[] lat = run(c, req, s.calls, s.workers);
            long total = System.nanoTime() - start;
            Arrays.sort(lat);
            return String.format("p50_us=%.1f p99_us=%.1f calls_per_s=%.0f", lat[lat.length / 2] / 1000.0,
                    lat[lat.length * 99 / 100] / 1000.0, s.calls / (total / 1e9));
        }
    }

    private static long[] run(Client c, EchoRequest req, int calls, int workers) throws Exception {
        long[] lat = new long[calls];
        AtomicInteger next = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int w = 0; w < workers; w++) {
            threads.add(Thread.ofVirtual().start(() -> {
                int i;
                while ((i = next.getAndIncrement()) < calls) {
                    long t = System.nanoTime();
                    try {
                        c.call(EchoFixture.SERVICE, "Echo", req, EchoResponse.parser(), CallOptions.DEFAULT);
                    } catch (TtrpcException e) {
                        failures.add(e);
                        return;
                    }
                    lat[i] = System.nanoTime() - t;
                }
            }));
        }
        for (Thread t : threads) {
            t.join();
        }
        if (!failures.isEmpty()) {
            throw new IllegalStateException("bench call failed", failures.getFirst());
        }
        return lat;
    }
}
