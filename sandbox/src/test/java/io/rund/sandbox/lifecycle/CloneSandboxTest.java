package io.rund.sandbox.lifecycle;

import static io.rund.sandbox.lifecycle.SandboxLifecycleTest.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.agent.AgentClient;
import io.rund.testing.XfsLoop;
import io.rund.vm.template.TemplateStore;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Sandboxes cloned from a VM template: real QEMU, guest, the daemon's virtio-fs back-end
 * reading each clone's private RAM, the XFS reflink store and cgroupfs.
 */
@Timeout(600)
class CloneSandboxTest {

    private static final String LOOP = "while :; do sleep 1; done";
    private static Fixture fx;
    private static Path templateRoot;
    private static TemplateStore templates;
    private static SandboxManager manager;

    @BeforeAll
    static void setUp() throws Exception {
        fx = new Fixture("clone");
        templateRoot = fx.templateRoot;
        templates = TemplateStore.open(templateRoot, fx.hypervisor, AgentClient.ready(Duration.ofSeconds(60)));
        manager = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store, templates);
    }

    @AfterAll
    static void tearDown() throws Exception {
        if (fx != null) {
            fx.close();
        }
    }

    @Test
    void clonesRunContainersOverVirtioFsWriteTheirOwnDisksAndShareNoMemory() throws Exception {
        Sandbox a = manager.start(fx.spec("cl-a", "sh", "-c", LOOP));
        Sandbox b = null;
        Sandbox c = null;
        try {
            b = manager.start(fx.spec("cl-b", "sh", "-c", LOOP));
            String key = templates.key(manager.templateSpec());
            assertEquals("clone " + key, a.boot());
            assertEquals("clone " + key, b.boot());
            assertTrue(Files.readString(a.dir().resolve("state.json")).contains("\"boot\":\"clone " + key + "\""));

            // The rootfs comes over virtio-fs from the clone's own share; writes land on its own disk.
            assertEquals("0:from the top layer\n", run(a, "cat", "/etc/image-file"));
            assertEquals("0:cl-a-host\n", run(a, "hostname"));
            assertEquals("0:", run(a, "sh", "-c", "echo from-a > /data.txt"));
            assertEquals("0:from-a\n", run(a, "cat", "/data.txt"));
            assertTrue(run(b, "cat", "/data.txt").startsWith("1:"), "b must not see a's file");
            assertEquals("0:from the top layer\n", run(b, "cat", "/etc/image-file"));

            // Memory: a marker a writes into its guest RAM is in a's QEMU, not in b's, not in the template.
            String marker = "rund-marker-" + HexFormat.of().formatHex(SecureRandom.getSeed(12));
            assertEquals("0:", run(a, "sh", "-c", "printf '%s%s' " + marker.substring(0, 12) + " "
                    + marker.substring(12) + " > /dev/shm/m; cat /dev/shm/m > /dev/null"));
            byte[] needle = marker.getBytes(StandardCharsets.US_ASCII);
            TemplateStore.Template t = templates.existing(key);
            assertTrue(guestRamHolds(a.vm().pid(), t.ram(), needle), "a's RAM must hold a's marker (the check works)");
            assertFalse(guestRamHolds(b.vm().pid(), t.ram(), needle), "b's RAM must not hold a's marker");
            assertFalse(fileHolds(t.ram(), needle), "the template's RAM must not hold a's marker");

            // The template's guest mounted its own disk before the save, with the first container's
            // directories made and written through; clones' layers are copies of that disk.
            assertEquals(fx.storeDir, t.disk().getParent(), t.toString());
            String sb = XfsLoop.run("dumpe2fs", "-h", t.disk().toString());
            assertTrue(sb.matches("(?s).*\nMount count: +1\n.*"), sb);
            String root = XfsLoop.run("debugfs", "-R", "ls /", t.disk().toString());
            assertTrue(root.matches("(?s).* upper .* work .*"), root);
            assertTrue(XfsLoop.run("dumpe2fs", "-h", fx.store.image(128).toString()).matches("(?s).*\nMount count: +0\n.*"),
                    "the store's image stays as formatted");

            // A template rebuilt under running clones does not disturb them; new clones use the new one.
            templates.remove(key);
            assertFalse(Files.exists(t.dir()));
            assertFalse(Files.exists(t.disk()), "its disk goes with it");
            c = manager.start(fx.spec("cl-c", "sh", "-c", LOOP));
            assertEquals("clone " + key, c.boot(), "rebuilt from the same inputs");
            assertEquals("0:from-a\n", run(a, "cat", "/data.txt"));
            assertEquals("0:from the top layer\n", run(b, "cat", "/etc/image-file"));
            assertEquals("0:from the top layer\n", run(c, "cat", "/etc/image-file"));
            assertTrue(run(c, "cat", "/data.txt").startsWith("1:"));

            // A template whose disk is gone is no template: it is rebuilt whole, never paired with another disk.
            TemplateStore.Template rebuilt = templates.existing(key);
            Files.delete(rebuilt.disk());
            assertEquals(null, templates.existing(key));
            Sandbox d = manager.start(fx.spec("cl-d", "sh", "-c", LOOP));
            try {
                assertEquals("clone " + key, d.boot());
                assertEquals("0:from-d\n", run(d, "sh", "-c", "echo from-d > /data.txt; cat /data.txt"));
                TemplateStore.Template third = templates.existing(key);
                assertTrue(Files.isRegularFile(third.disk()) && !third.disk().equals(rebuilt.disk()), third.toString());
                try (Stream<Path> disks = Files.list(fx.storeDir)) {
                    assertEquals(List.of(third.disk().getFileName().toString()), disks.map(p -> p.getFileName().toString())
                            .filter(n -> n.startsWith("template-")).toList(), "one template disk in the store");
                }
            } finally {
                d.stop(Duration.ofSeconds(5));
            }
        } finally {
            a.stop(Duration.ofSeconds(5));
            if (b != null) {
                b.stop(Duration.ofSeconds(5));
            }
            if (c != null) {
                c.stop(Duration.ofSeconds(5));
            }
        }
        fx.assertNothingLeft();
    }

    @Test
    void aTemplateWhoseDiskIsInAnotherStoreIsBuiltAgainBesideThisOne() throws Exception {
        // The node's layer store moved (another file system), its templates stayed.
        try (XfsLoop other = new XfsLoop(1024)) {
            io.rund.rootfs.WritableLayerStore moved = io.rund.rootfs.WritableLayerStore.open(other.mount.resolve("scratch"), 128);
            SandboxManager there = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, moved, templates);
            String key = templates.key(manager.templateSpec());
            assertEquals(key, templates.key(there.templateSpec()), "the same template, by its key");
            templates.get(manager.templateSpec());
            Sandbox sb = there.start(fx.spec("moved", "sh", "-c", LOOP));
            try {
                assertEquals("clone " + key, sb.boot());
                assertEquals("0:from the top layer\n", run(sb, "cat", "/etc/image-file"));
                assertEquals(other.mount.resolve("scratch"), templates.existing(key).disk().getParent());
            } finally {
                sb.stop(Duration.ofSeconds(5));
            }
            templates.remove(key); // its disk is in the store that goes now
        }
    }

    @Test
    void startsBeyondTheirBoundWaitTheirTurnInOrder() throws Exception {
        SandboxManager one = new SandboxManager(fx.config(1), fx.hypervisor, fx.pool, fx.store, templates);
        List<String> ids = List.of("turn-a", "turn-b", "turn-c");
        List<java.util.concurrent.Future<Sandbox>> started = new java.util.ArrayList<>();
        try (var threads = java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor()) {
            for (String id : ids) {
                started.add(threads.submit(() -> one.start(fx.spec(id, "sh", "-c", LOOP))));
            }
        }
        List<Sandbox> sandboxes = new java.util.ArrayList<>();
        Exception failed = null;
        for (var f : started) {
            try {
                sandboxes.add(f.get());
            } catch (java.util.concurrent.ExecutionException e) {
                failed = failed == null ? e : failed;
            }
        }
        try {
            if (failed != null) {
                throw new AssertionError("a start failed", failed);
            }
            // Each start waited for its turn first; the turns did not overlap: each began once
            // the one before it had finished (wall clock of the start plus monotonic lengths: 2 ms of slack).
            List<long[]> turns = new java.util.ArrayList<>();
            long waited = 0;
            for (String id : ids) {
                StartTrace t = one.traces().of(id).orElseThrow();
                assertEquals("", t.error(), t.toString());
                assertEquals("wait for its turn", t.steps().get(0).name(), t.toString());
                long began = t.began().toEpochMilli() * 1000 + t.began().getNano() / 1000 % 1000;
                long wait = t.steps().get(0).micros();
                waited = Math.max(waited, wait);
                turns.add(new long[] {began + wait, began + t.totalMicros()});
            }
            turns.sort(java.util.Comparator.comparingLong(r -> r[0]));
            for (int i = 1; i < turns.size(); i++) {
                assertTrue(turns.get(i)[0] >= turns.get(i - 1)[1] - 2_000, "turn " + i + " began "
                        + (turns.get(i - 1)[1] - turns.get(i)[0]) + " µs before the one before it ended");
            }
            assertTrue(waited >= 100_000, "the last of three waited for two starts, not " + waited + " µs");
            for (Sandbox b : sandboxes) {
                assertEquals("0:" + b.id() + "-host\n", run(b, "hostname"));
            }
        } finally {
            for (Sandbox b : sandboxes) {
                b.stop(Duration.ofSeconds(5));
            }
        }
        fx.assertNothingLeft();
    }

    @Test
    void aSpareVmBecomesTheSandboxAndIsReplaced() throws Exception {
        SandboxManager m = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store, templates);
        Sandbox sb = null;
        try {
            m.startSpares(1);
            awaitSpares(m, 1);
            Path spareDir = spareDirs().getFirst();
            long sparePid = SandboxState.read(spareDir).vmPid();
            assertTrue(ProcessHandle.of(sparePid).isPresent(), "the spare's QEMU runs before any start");

            sb = m.start(fx.spec("sp-a", "sh", "-c", LOOP));
            assertEquals(sparePid, sb.vm().pid(), "the sandbox runs in the spare's VM");
            // The template was saved once its agent had seen the build's connection go: a clone's
            // agent waits for a host and serves the daemon's first connection; no stale "connected"
            // state makes it drop that connection's first call (a 30 s Health wait, once).
            // (The console reaches its file through the daemon's copier: the line may land a moment later.)
            String console = Files.readString(sb.dir().resolve("console.log"));
            for (long end = System.nanoTime() + 10_000_000_000L; !console.contains("rund-agent: serving the host")
                    && System.nanoTime() < end; console = Files.readString(sb.dir().resolve("console.log"))) {
                Thread.sleep(20);
            }
            assertTrue(console.contains("rund-agent: serving the host (connection 1)"), console);
            assertFalse(console.contains("host disconnected"), console);
            assertEquals("clone " + templates.key(m.templateSpec()), sb.boot());
            assertFalse(Files.exists(spareDir), "the spare's directory became the sandbox's");
            SandboxState state = SandboxState.read(sb.dir());
            assertEquals("sp-a", state.sandboxId());
            assertEquals(spareDir.toString(), state.vmDir());
            assertTrue(sb.cgroup().pids().contains(sparePid), "the VM moved into the sandbox's cgroup");
            // The share given after the VM was loaded, the disk it was launched with, the sandbox's identity.
            assertEquals("0:from the top layer\n", run(sb, "cat", "/etc/image-file"));
            assertEquals("0:sp-a-host\n", run(sb, "hostname"));
            assertEquals("0:from-spare\n", run(sb, "sh", "-c", "echo from-spare > /data.txt; cat /data.txt"));

            awaitSpares(m, 1); // the pool launched the next one
            assertEquals(1, spareDirs().size());
            assertThrows(SandboxException.class, () -> m.start(fx.spec("sp-a", "true")), "the id is taken");
            assertEquals(1, m.sparesReady(), "a start that fails on its id costs no spare");
        } finally {
            if (sb != null) {
                sb.stop(Duration.ofSeconds(5));
            }
            m.close();
        }
        assertEquals(List.of(), spareDirs());
        fx.assertNothingLeft();
    }

    @Test
    void sparesADeadDaemonLeftAreEndedOnRecovery() throws Exception {
        SandboxManager dead = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store, templates);
        try {
            dead.startSpares(1);
            awaitSpares(dead, 1);
            Path spareDir = spareDirs().getFirst();
            ProcessHandle qemu = ProcessHandle.of(SandboxState.read(spareDir).vmPid()).orElseThrow();

            new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store, templates).recover();
            qemu.onExit().get(10, java.util.concurrent.TimeUnit.SECONDS);
            assertFalse(Files.exists(spareDir));
        } finally {
            dead.close();
        }
        fx.assertNothingLeft();
    }

    private static List<Path> spareDirs() throws IOException {
        try (Stream<Path> s = Files.list(fx.stateRoot)) {
            return s.filter(p -> p.getFileName().toString().startsWith(".spare-")).toList();
        }
    }

    /** Waits (up to a minute: the first spare may build the template) until {@code n} spares are ready. */
    private static void awaitSpares(SandboxManager m, int n) throws InterruptedException {
        long end = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (m.sparesReady() < n) {
            if (System.nanoTime() > end) {
                throw new AssertionError(m.sparesReady() + " spare VM(s) ready after a minute, not " + n);
            }
            Thread.sleep(20);
        }
    }

    @Test
    void coldBootWhenForcedOrWhenTheCloneFails() throws Exception {
        assertBootsColdAndRuns(new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store, null), "cold-1");

        // A template whose device state is damaged: the clone fails, the sandbox boots cold.
        Path brokenRoot = Path.of(templateRoot + "-broken");
        TemplateStore broken = TemplateStore.open(brokenRoot, fx.hypervisor, AgentClient.ready(Duration.ofSeconds(60)));
        try {
            SandboxManager m = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store, broken);
            TemplateStore.Template t = broken.get(m.templateSpec());
            Files.write(t.state(), "not a migration stream".getBytes(StandardCharsets.US_ASCII));
            assertBootsColdAndRuns(m, "cold-2");
        } finally {
            for (String k : broken.keys()) {
                broken.remove(k);
            }
            io.rund.testing.Trees.delete(brokenRoot); // with the memo of its key
        }
        fx.assertNothingLeft();
    }

    private static void assertBootsColdAndRuns(SandboxManager m, String id) throws Exception {
        Sandbox sb = m.start(fx.spec(id, "sh", "-c", LOOP));
        try {
            assertEquals("cold", sb.boot());
            assertEquals("0:from the top layer\n", run(sb, "cat", "/etc/image-file"));
        } finally {
            sb.stop(Duration.ofSeconds(5));
        }
    }

    /** Whether the guest RAM of QEMU {@code pid} (its mapping of the template's file) holds {@code needle}. */
    private static boolean guestRamHolds(long pid, Path ramFile, byte[] needle) throws IOException {
        String file = ramFile.toString();
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/maps"))) {
            if (!line.endsWith(file)) {
                continue;
            }
            String[] range = line.substring(0, line.indexOf(' ')).split("-");
            long start = Long.parseUnsignedLong(range[0], 16);
            long end = Long.parseUnsignedLong(range[1], 16);
            try (RandomAccessFile mem = new RandomAccessFile("/proc/" + pid + "/mem", "r")) {
                if (holds(mem, start, end - start, needle)) {
                    return true;
                }
            }
        }
        return false;
    }

    private static boolean fileHolds(Path f, byte[] needle) throws IOException {
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "r")) {
            return holds(r, 0, r.length(), needle);
        }
    }

    private static boolean holds(RandomAccessFile in, long start, long length, byte[] needle) throws IOException {
        byte[] buf = new byte[(1 << 20) + needle.length];
        for (long off = 0; off < length; off += 1 << 20) {
            int n = (int) Math.min(buf.length, length - off);
            in.seek(start + off);
            in.readFully(buf, 0, n);
            outer:
            for (int i = 0; i + needle.length <= n; i++) {
                for (int j = 0; j < needle.length; j++) {
                    if (buf[i + j] != needle[j]) {
                        continue outer;
                    }
                }
                return true;
            }
        }
        return false;
    }
}
