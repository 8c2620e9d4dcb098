package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.PodSandboxConfig;
import io.rund.testing.Command;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * The soak: N create / start / exec / stop / delete cycles through containerd, K at a time,
 * three plain containers (ctr) to one CRI pod (a pod VM with a container in it), and a leak
 * audit every M cycles while nothing runs: processes (QEMUs, helpers, relays), mounts under
 * the daemon's state, claimed cgroups, store files, taps and ingress qdiscs on the host,
 * descriptors and threads of the daemon and of the helpers, and the daemon's heap after a
 * full GC. Every count of things must be back to the first audit's; the daemon's descriptors
 * and threads within 8 of it (the JDK's own pools of threads come and go with time), the
 * helpers' exactly; the heap within 8 MiB. The table goes to target/soak-audit.md.
 *
 * <p>{@code -Drund.soak.cycles=N -Drund.soak.concurrency=K -Drund.soak.audit=M} (hack/soak);
 * CI runs 100 cycles, 2 at a time, audited every 25.
 */
@Timeout(value = 4, unit = TimeUnit.HOURS)
class SoakTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUNTIME = "io.containerd.rund.v2";
    private static final int CYCLES = Integer.getInteger("rund.soak.cycles", 100);
    private static final int CONCURRENCY = Integer.getInteger("rund.soak.concurrency", 2);
    private static final int EVERY = Integer.getInteger("rund.soak.audit", 25);
    private static Containerd ctd;
    private static CriClient cri;
    private static CriPods pods;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        pods = CriPods.start("soak");
        ctd = pods.ctd();
        cri = pods.cri();
    }

    @AfterAll
    static void stop() throws Exception {
        if (pods != null) {
            pods.close();
        }
    }

    /** One audit: what is left with nothing running. */
    record Audit(int cycle, int qemus, int helpers, int relays, int mounts, int claimedCgroups, int storeFiles, int taps,
            int ingressQdiscs, int daemonFds, int daemonThreads, int helperFds, long heapKiB) {

        static String header() {
            return "| cycle | QEMUs | helpers | relays | mounts | claimed cgroups | store files | taps | ingress qdiscs"
                    + " | daemon fds | daemon threads | helper fds | daemon heap after GC (KiB) |\n"
                    + "|---|---|---|---|---|---|---|---|---|---|---|---|---|";
        }

        String row() {
            return "| " + cycle + " | " + qemus + " | " + helpers + " | " + relays + " | " + mounts + " | " + claimedCgroups
                    + " | " + storeFiles + " | " + taps + " | " + ingressQdiscs + " | " + daemonFds + " | " + daemonThreads
                    + " | " + helperFds + " | " + heapKiB + " |";
        }

        /** The counts that must come back exactly. */
        List<Integer> counts() {
            return List.of(qemus, helpers, relays, mounts, claimedCgroups, storeFiles, taps, ingressQdiscs, helperFds);
        }
    }

    @Test
    void cyclesLeaveNothingBehind() throws Exception {
        // Warm up (template, spare VMs, JIT, a pod's first network) with a cycle of each kind;
        // then the first audit is the baseline.
        for (int warm = 0; warm < 4; warm++) {
            cycle(warm);
        }
        List<Audit> audits = new ArrayList<>();
        audits.add(audit(0));
        ExecutorService workers = Executors.newFixedThreadPool(CONCURRENCY);
        long t0 = System.nanoTime();
        try {
            for (int done = 0; done < CYCLES; ) {
                List<Callable<Void>> batch = new ArrayList<>();
                int n = Math.min(EVERY, CYCLES - done);
                for (int i = 0; i < n; i++) {
                    int c = done + i + 4;
                    batch.add(() -> {
                        cycle(c);
                        return null;
                    });
                }
                for (Future<Void> f : workers.invokeAll(batch)) {
                    f.get();
                }
                done += n;
                Audit a = audit(done);
                audits.add(a);
                System.out.println("soak: " + a.row() + " after " + (System.nanoTime() - t0) / 1_000_000_000 + " s");
            }
        } finally {
            workers.shutdownNow();
        }
        StringBuilder table = new StringBuilder(Audit.header()).append('\n');
        audits.forEach(a -> table.append(a.row()).append('\n'));
        String report = "soak: " + CYCLES + " cycles, " + CONCURRENCY + " at a time, audited every " + EVERY + ", "
                + (System.nanoTime() - t0) / 1_000_000_000 + " s\n\n" + table;
        Files.writeString(Path.of("target/soak-audit.md"), report);
        System.out.println(report);
        Audit first = audits.get(0);
        for (Audit a : audits) {
            assertEquals(first.counts(), a.counts(), "what is left after cycle " + a.cycle() + " against the first audit:\n"
                    + table);
            assertTrue(a.daemonFds() <= first.daemonFds() + 8 && a.daemonThreads() <= first.daemonThreads() + 8,
                    "the daemon's descriptors or threads grew by cycle " + a.cycle() + ":\n" + table);
        }
        Audit last = audits.get(audits.size() - 1);
        assertTrue(last.heapKiB() - first.heapKiB() < 8 * 1024, "the daemon's heap after GC grew: " + table);
        ctd.awaitNothingLeft();
    }

    /** One cycle: a plain container (three in four) or a CRI pod with a container. */
    private static void cycle(int n) throws Exception {
        if (n % 4 == 3) {
            podCycle(n);
        } else {
            containerCycle(n);
        }
    }

    private static void containerCycle(int n) throws Exception {
        String id = "soak" + n;
        Command.Result run = ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, id, "sleep", "1000");
        assertEquals(0, run.exitCode(), run.toString());
        Command.Result exec = ctd.ctr(T, "task", "exec", "--exec-id", "x", id, "echo", "ok" + n);
        assertEquals("ok" + n + "\n", exec.stdout(), exec.toString());
        Command.Result deleted = ctd.killAndDelete(id);
        assertTrue(deleted.stderr().contains("exit code 137"), deleted.toString());
    }

    private static void podCycle(int n) throws Exception {
        PodSandboxConfig pod = pods.pod("soakpod" + n, NamespaceMode.POD);
        String podId = pods.runPod(pod, "rund");
        String app = pods.createAndStart(podId, pod, "app", "sleep 1000");
        var exec = pods.exec(app, "echo", "pod" + n);
        assertEquals("pod" + n + "\n", exec.getStdout().toStringUtf8(), exec.toString());
        pods.stopAndRemovePod(podId);
    }

    /**
     * Waits for the spare VMs to be back and for what is being released (a QEMU's tap, a
     * helper) to be gone, that is until two counts a second apart agree; returns the last.
     */
    private static Audit audit(int cycle) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        Audit before = count(cycle);
        while (true) {
            Thread.sleep(1000);
            Audit now = count(cycle);
            if (now.counts().equals(before.counts()) || System.nanoTime() > end) {
                return now;
            }
            before = now;
        }
    }

    /** Waits for the spare VMs to be back, then counts what is there. */
    private static Audit count(int cycle) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (ctd.sparePids().size() != Containerd.SPARES || ctd.sparePids().stream().anyMatch(p -> ProcessHandle.of(p).isEmpty())
                || !ctd.relays().isEmpty()) {
            assertTrue(System.nanoTime() < end, "spares did not come back, or relays stayed: " + ctd.sparePids() + " "
                    + ctd.relays());
            Thread.sleep(200);
        }
        long daemon = ctd.daemonPid();
        String qemu = "/usr/bin/qemu-system-x86_64";
        String helperExe = ctd.dir.resolve("bin/rund-helper").toString();
        List<Long> qemus = Containerd.running(qemu).stream().filter(p -> cwd(p).startsWith(ctd.rundState.toString())).toList();
        List<Long> helpers = Containerd.running(helperExe);
        int mounts = (int) Files.readAllLines(Path.of("/proc/self/mountinfo")).stream()
                .filter(l -> l.split(" ")[4].startsWith(ctd.rundState + "/")).count();
        int claimed = 0;
        for (String h : List.of("memory", "cpu", "pids")) {
            Path root = Path.of("/sys/fs/cgroup", h, ctd.pool);
            if (Files.isDirectory(root)) {
                try (Stream<Path> s = Files.list(root)) {
                    claimed += (int) s.filter(Files::isDirectory).filter(p -> !p.getFileName().toString().startsWith("free-"))
                            .count();
                }
            }
        }
        int store;
        try (Stream<Path> s = Files.list(ctd.scratch.mount.resolve("scratch"))) {
            store = (int) s.count();
        }
        int taps;
        try (Stream<Path> s = Files.list(Path.of("/sys/class/net"))) {
            taps = (int) s.filter(p -> p.getFileName().toString().startsWith("rt")).count();
        }
        int ingress = (int) Command.run(T, null, Map.of(), List.of("tc", "qdisc", "show")).stdout().lines()
                .filter(l -> l.contains("ingress")).count();
        int helperFds = 0;
        for (long h : helpers) {
            helperFds += fds(h);
        }
        return new Audit(cycle, qemus.size(), helpers.size(), ctd.relays().size(), mounts, claimed, store, taps, ingress,
                fds(daemon), threads(daemon), helperFds, heapAfterGc(daemon));
    }

    private static String cwd(long pid) {
        try {
            return Files.readSymbolicLink(Path.of("/proc", Long.toString(pid), "cwd")).toString();
        } catch (IOException e) {
            return "";
        }
    }

    private static int fds(long pid) throws IOException {
        try (Stream<Path> s = Files.list(Path.of("/proc", Long.toString(pid), "fd"))) {
            return (int) s.count();
        }
    }

    private static int threads(long pid) throws IOException {
        return Files.readAllLines(Path.of("/proc", Long.toString(pid), "status")).stream()
                .filter(l -> l.startsWith("Threads:")).map(l -> Integer.parseInt(l.substring(8).trim())).findFirst()
                .orElse(-1);
    }

    /** The daemon's used heap after a full collection (jcmd GC.run, then GC.heap_info). */
    private static long heapAfterGc(long pid) throws Exception {
        String jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd").toString();
        Command.run(T, null, Map.of(), List.of(jcmd, Long.toString(pid), "GC.run")).ok();
        String info = Command.run(T, null, Map.of(), List.of(jcmd, Long.toString(pid), "GC.heap_info")).ok().stdout();
        var m = java.util.regex.Pattern.compile("used (\\d+)K").matcher(info);
        assertTrue(m.find(), info);
        return Long.parseLong(m.group(1));
    }
}
