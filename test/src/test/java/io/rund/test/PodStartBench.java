package io.rund.test;

import io.rund.test.cri.LinuxPodSandboxConfig;
import io.rund.test.cri.LinuxSandboxSecurityContext;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.NamespaceOption;
import io.rund.test.cri.PodSandboxConfig;
import io.rund.test.cri.PodSandboxMetadata;
import io.rund.test.cri.PodSandboxState;
import io.rund.test.cri.PodSandboxStatusRequest;
import io.rund.test.cri.PodSandboxStatusResponse;
import io.rund.test.cri.RemovePodSandboxRequest;
import io.rund.test.cri.RemovePodSandboxResponse;
import io.rund.test.cri.RunPodSandboxRequest;
import io.rund.test.cri.RunPodSandboxResponse;
import io.rund.test.cri.StopPodSandboxRequest;
import io.rund.test.cri.StopPodSandboxResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Pod start latency through containerd's CRI plugin, as the RunD paper measures it: N
 * pods started at once (RunPodSandbox, each then polled with PodSandboxStatus until
 * READY), the time from the first start to the last ready; and each pod's own latency.
 * rund and runc take turns on the same containerd, with the same pause image and the
 * same CNI bridge network. Run by `hack/bench pod-start`; prints Markdown.
 *
 * <p>Arguments: single-pod runs (default 20), then the concurrency levels with their
 * rounds as N:R (default 10:3 50:1).
 */
public final class PodStartBench {

    private static final AtomicInteger SEQ = new AtomicInteger();

    public static void main(String[] args) throws Exception {
        int singles = args.length > 0 ? Integer.parseInt(args[0]) : 20;
        List<int[]> levels = new ArrayList<>();
        for (String a : args.length > 1 ? Arrays.copyOfRange(args, 1, args.length) : new String[] {"10:3", "50:1"}) {
            String[] nr = a.split(":");
            levels.add(new int[] {Integer.parseInt(nr[0]), Integer.parseInt(nr[1])});
        }
        int most = levels.stream().mapToInt(l -> l[0]).max().orElse(1);
        // A pool as large as the most pods at once: a cgroup made on the start path is not what is measured.
        try (Containerd ctd = new Containerd("podbench", Map.of("RUND_POOL_SIZE", Integer.toString(most + 8)));
                CriClient cri = new CriClient(ctd.socket)) {
            ctd.importCriImages();
            List<String> runtimes = List.of("rund", "runc");
            for (String rt : runtimes) { // warm: rund's daemon starts and builds its template, runc's binaries are cached
                stopAndRemove(cri, List.of(start(cri, ctd, rt)));
            }
            Thread.sleep(2000);
            System.out.println("| runtime | pods at once | rounds | per pod median ms | per pod p99 ms | first start to last ready, median ms | max ms |");
            System.out.println("|---|---|---|---|---|---|---|");
            // One pod at a time, the runtimes alternating; a second of quiet after each (rund refills its spare VMs).
            double[][] single = new double[runtimes.size()][singles];
            for (int i = 0; i < singles; i++) {
                for (int r = 0; r < runtimes.size(); r++) {
                    long t0 = System.nanoTime();
                    String id = start(cri, ctd, runtimes.get(r));
                    awaitReady(cri, id);
                    single[r][i] = (System.nanoTime() - t0) / 1e6;
                    stopAndRemove(cri, List.of(id));
                    Thread.sleep(1000);
                }
            }
            for (int r = 0; r < runtimes.size(); r++) {
                double[] s = single[r].clone();
                Arrays.sort(s);
                System.out.printf("| %s | 1 | %d | %.0f | %.0f | %.0f | %.0f |%n", label(runtimes.get(r)), singles, pct(s, 50),
                        pct(s, 99), pct(s, 50), s[s.length - 1]);
            }
            for (int[] level : levels) {
                for (String rt : runtimes) {
                    List<Double> perPod = new ArrayList<>();
                    double[] totals = new double[level[1]];
                    for (int round = 0; round < level[1]; round++) {
                        totals[round] = burst(cri, ctd, rt, level[0], perPod);
                        Thread.sleep(3000);
                    }
                    double[] p = perPod.stream().mapToDouble(Double::doubleValue).sorted().toArray();
                    double[] t = totals.clone();
                    Arrays.sort(t);
                    System.out.printf("| %s | %d | %d | %.0f | %.0f | %.0f | %.0f |%n", label(rt), level[0], level[1],
                            pct(p, 50), pct(p, 99), pct(t, 50), t[t.length - 1]);
                }
            }
            System.out.println();
            System.out.println(ctd.rund(java.time.Duration.ofSeconds(30), "status").stdout().lines()
                    .filter(l -> l.startsWith("accelerator") || l.startsWith("spare"))
                    .map(l -> "- rund " + l).reduce("", (x, y) -> x + y + "\n"));
        }
    }

    /** The runtime as the table names it: containerd's version, and for rund how its pods are made. */
    private static String label(String runtime) {
        String how = !runtime.equals("rund") ? "" : Containerd.SANDBOXER.equals("shim") ? ", Sandbox API" : ", pause container";
        return runtime + " (containerd " + Containerd.VERSION + how + ")";
    }

    /** N pods started together; each one's latency into {@code perPod}; the first start to the last ready, in ms. */
    private static double burst(CriClient cri, Containerd ctd, String runtime, int n, List<Double> perPod) throws Exception {
        CountDownLatch go = new CountDownLatch(1);
        long[] begin = new long[n];
        long[] end = new long[n];
        String[] ids = new String[n];
        Throwable[] failed = new Throwable[1];
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            int k = i;
            threads.add(Thread.ofPlatform().start(() -> {
                try {
                    go.await();
                    begin[k] = System.nanoTime();
                    ids[k] = start(cri, ctd, runtime);
                    awaitReady(cri, ids[k]);
                    end[k] = System.nanoTime();
                } catch (Throwable t) {
                    failed[0] = t;
                }
            }));
        }
        go.countDown();
        for (Thread t : threads) {
            t.join();
        }
        List<String> started = Arrays.stream(ids).filter(java.util.Objects::nonNull).toList();
        stopAndRemove(cri, started);
        if (failed[0] != null) {
            throw new IllegalStateException(runtime + ": " + n + " pods at once: " + failed[0].getMessage(), failed[0]);
        }
        for (int i = 0; i < n; i++) {
            perPod.add((end[i] - begin[i]) / 1e6);
        }
        return (Arrays.stream(end).max().orElseThrow() - Arrays.stream(begin).min().orElseThrow()) / 1e6;
    }

    private static String start(CriClient cri, Containerd ctd, String runtime) throws Exception {
        String name = "bench-" + runtime + "-" + SEQ.incrementAndGet();
        Path logs = Files.createDirectories(ctd.dir.resolve("pod-logs").resolve(name));
        PodSandboxConfig pod = PodSandboxConfig.newBuilder()
                .setMetadata(PodSandboxMetadata.newBuilder().setName(name).setUid("uid-" + name).setNamespace("bench"))
                .setHostname(name).setLogDirectory(logs.toString())
                .setLinux(LinuxPodSandboxConfig.newBuilder().setSecurityContext(LinuxSandboxSecurityContext.newBuilder()
                        .setNamespaceOptions(NamespaceOption.newBuilder().setNetwork(NamespaceMode.POD)
                                .setPid(NamespaceMode.CONTAINER).setIpc(NamespaceMode.POD))))
                .build();
        return cri.runtime("RunPodSandbox", RunPodSandboxRequest.newBuilder().setConfig(pod).setRuntimeHandler(runtime)
                .build(), RunPodSandboxResponse.parser()).getPodSandboxId();
    }

    /** Polls PodSandboxStatus until READY, as the kubelet's pod workers do. */
    private static void awaitReady(CriClient cri, String id) throws InterruptedException {
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (cri.runtime("PodSandboxStatus", PodSandboxStatusRequest.newBuilder().setPodSandboxId(id).build(),
                PodSandboxStatusResponse.parser()).getStatus().getState() != PodSandboxState.SANDBOX_READY) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("pod " + id + " not ready after 120 s");
            }
            Thread.sleep(5);
        }
    }

    private static void stopAndRemove(CriClient cri, List<String> ids) throws InterruptedException {
        List<Thread> threads = new ArrayList<>();
        for (String id : ids) {
            threads.add(Thread.ofPlatform().start(() -> {
                cri.runtime("StopPodSandbox", StopPodSandboxRequest.newBuilder().setPodSandboxId(id).build(),
                        StopPodSandboxResponse.parser());
                cri.runtime("RemovePodSandbox", RemovePodSandboxRequest.newBuilder().setPodSandboxId(id).build(),
                        RemovePodSandboxResponse.parser());
            }));
        }
        for (Thread t : threads) {
            t.join();
        }
    }

    /** The p-th percentile of sorted values (nearest rank). */
    private static double pct(double[] sorted, int p) {
        int rank = (int) Math.ceil(p / 100.0 * sorted.length);
        return sorted[Math.max(0, Math.min(sorted.length - 1, rank - 1))];
    }
}
