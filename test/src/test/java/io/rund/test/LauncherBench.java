package io.rund.test;

import io.rund.control.v1.DeleteRequest;
import io.rund.control.v1.StartRequest;
import io.rund.control.v1.StartResponse;
import io.rund.containerd.task.v2.DeleteResponse;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Metadata;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * What a task's start costs before any VM: the launcher containerd executes (fork, exec,
 * connect, the daemon's Start, print), against a fork+exec of /bin/true spawned the same
 * way, and the daemon's Start alone over the control socket. Run by `hack/bench launcher`;
 * prints Markdown rows.
 */
public final class LauncherBench {

    public static void main(String[] args) throws Exception {
        int runs = args.length > 0 ? Integer.parseInt(args[0]) : 200;
        try (Containerd ctd = new Containerd("bench")) {
            Path bundle = Files.createDirectories(ctd.dir.resolve("bundle"));
            Files.writeString(bundle.resolve("config.json"), "{\"process\":{\"args\":[\"true\"],\"cwd\":\"/\"}}");
            Map<String, String> env = new java.util.HashMap<>(ctd.rundEnv);
            env.put("TTRPC_ADDRESS", ctd.dir.resolve("containerd.sock.ttrpc").toString());
            List<String> ids = new ArrayList<>();
            // The first start also starts the daemon: not measured.
            launch(ctd, env, bundle, "warm", ids);
            double[] trueRuns = new double[runs];
            double[] launcher = new double[runs];
            for (int i = -20; i < runs; i++) {
                long t0 = System.nanoTime();
                Process p = new ProcessBuilder("/bin/true").start();
                p.waitFor();
                long t1 = System.nanoTime();
                launch(ctd, env, bundle, "l" + i, ids);
                long t2 = System.nanoTime();
                if (i >= 0) {
                    trueRuns[i] = (t1 - t0) / 1e6;
                    launcher[i] = (t2 - t1) / 1e6;
                }
            }
            double[] control = new double[runs];
            try (Client c = Client.connect(ctd.rundState.resolve("rund.sock"))) {
                for (int i = -20; i < runs; i++) {
                    String id = "c" + i;
                    long t0 = System.nanoTime();
                    c.call("rund.control.v1.Control", "Start", StartRequest.newBuilder().setId(id).setNamespace("bench")
                            .setBundle(bundle.toString()).setTtrpcAddress(env.get("TTRPC_ADDRESS")).build(),
                            StartResponse.parser(), new CallOptions(Duration.ofSeconds(10), Metadata.EMPTY));
                    long t1 = System.nanoTime();
                    ids.add(id);
                    if (i >= 0) {
                        control[i] = (t1 - t0) / 1e6;
                    }
                }
                for (String id : ids) {
                    c.call("rund.control.v1.Control", "Delete", DeleteRequest.newBuilder().setId(id).setNamespace("bench")
                            .build(), DeleteResponse.parser(), new CallOptions(Duration.ofSeconds(30), Metadata.EMPTY));
                }
            }
            System.out.println("| what | runs | median ms | p99 ms |");
            System.out.println("|---|---:|---:|---:|");
            row("fork+exec of /bin/true from Java, for scale", trueRuns);
            row("launcher `start` from Java: fork+exec, connect, Control.Start, print", launcher);
            row("Control.Start alone over the control socket (the daemon's part)", control);
            ctd.assertNothingLeft();
        }
    }

    private static void launch(Containerd ctd, Map<String, String> env, Path bundle, String id, List<String> ids)
            throws Exception {
        ProcessBuilder pb = new ProcessBuilder(ctd.launcher.toString(), "-namespace", "bench", "-address",
                ctd.socket.toString(), "-publish-binary", "/usr/bin/containerd", "-id", id, "start")
                .directory(bundle.toFile()).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        pb.environment().putAll(env);
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0 || !out.startsWith("unix://")) {
            throw new AssertionError("launcher start " + id + ": " + out + new String(p.getErrorStream().readAllBytes()));
        }
        ids.add(id);
    }

    private static void row(String what, double[] ms) {
        double[] s = ms.clone();
        Arrays.sort(s);
        System.out.printf("| %s | %d | %.2f | %.2f |%n", what, s.length, s[(s.length - 1) / 2],
                s[Math.min(s.length - 1, (int) Math.ceil(s.length * 0.99) - 1)]);
    }
}
