package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * A sandbox's disk is its own. Its writable layer is a file of the store that only its VM
 * holds: what the guest frees goes back to the store (discard), a layer that fills is its
 * own container's ENOSPC while every other sandbox writes on, a start the store cannot
 * promise a layer is refused at Create naming the store and its numbers, and a pod sizes
 * its layer with the io.rund.writable-layer-mib annotation (bad values refused by name).
 */
@Timeout(900)
class WritableLayerTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUND = "io.containerd.rund.v2";
    private static final String SIZE = "io.rund.writable-layer-mib";
    private static Containerd ctd;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        ctd = new Containerd("layer");
    }

    @AfterAll
    static void stop() throws Exception {
        if (ctd != null) {
            ctd.close();
        }
    }

    /** The pid of sandbox {@code id}'s QEMU, from `rund status`. */
    private static String vmPid(String id) throws Exception {
        String status = ctd.rund(T, "status").stdout();
        Matcher m = Pattern.compile("(?m)^" + Pattern.quote(id) + " +running +.* ([1-9][0-9]*) +\\S+ +\\S+/"
                + Pattern.quote(id) + "$").matcher(status);
        assertTrue(m.find(), status);
        return m.group(1);
    }

    /** Bytes of the store the layer QEMU {@code pid} holds has allocated (its image's shared blocks too). */
    private static long allocated(String pid) throws Exception {
        Path layer;
        try (Stream<Path> fds = Files.list(Path.of("/proc", pid, "fd"))) {
            layer = fds.filter(fd -> {
                try {
                    return Files.readSymbolicLink(fd).toString().startsWith(ctd.scratch.mount + "/scratch/layer-");
                } catch (java.io.IOException e) {
                    return false;
                }
            }).findFirst().orElseThrow(() -> new AssertionError("QEMU " + pid + " holds no layer of the store"));
        }
        Command.Result st = Command.run(T, null, Map.of(), List.of("stat", "-L", "-c", "%b", layer.toString()));
        assertEquals(0, st.exitCode(), st.toString());
        return Long.parseLong(st.stdout().strip()) * 512;
    }

    private static String exec(String id, String script) throws Exception {
        Command.Result r = ctd.ctr(T, "task", "exec", "--exec-id", "x" + System.nanoTime(), id, "sh", "-c", script);
        assertEquals(0, r.exitCode(), r.toString());
        return r.stdout();
    }

    @Test
    void whatTheGuestFreesGoesBackToTheStore() throws Exception {
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUND, Containerd.IMAGE, "discard", "sleep", "1000").exitCode());
        String pid = vmPid("discard");
        exec("discard", "head -c 1 /dev/zero > /warm; sync");
        long before = allocated(pid);
        exec("discard", "head -c 100000000 /dev/urandom > /big && sync");
        long written = allocated(pid);
        assertTrue(written - before > 90_000_000L, "100 MB written: " + before + " -> " + written);
        exec("discard", "rm /big && sync");
        // ext4 discards what it frees as its journal commits (sync); QEMU punches it out of the layer.
        long end = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        long after = allocated(pid);
        while (after - before > 10_000_000L && System.nanoTime() < end) {
            Thread.sleep(500);
            after = allocated(pid);
        }
        assertTrue(after - before <= 10_000_000L, "freed in the guest, given back on the host: " + before + " -> "
                + written + " -> " + after);
        ctd.killAndDelete("discard");
        ctd.awaitNothingLeft();
    }

    @Test
    void aFullLayerIsItsOwnContainersEnospcAndNobodyElses() throws Exception {
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUND, Containerd.IMAGE, "neighbour", "sleep", "1000").exitCode());
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUND, "--annotation", SIZE + "=64", Containerd.IMAGE, "small",
                "sleep", "1000").exitCode());
        String vm = vmPid("small");
        // The store shows what it holds and owes: at least these two layers, 256 + 64 MiB promised.
        Matcher store = Pattern.compile("\nlayer store  " + Pattern.quote(ctd.scratch.mount + "/scratch")
                + ": (\\d+) layer\\(s\\) held \\(\\d+ MiB allocated\\), (\\d+) MiB promised to them, \\d+ MiB free; 256 MiB each")
                .matcher(ctd.rund(T, "status").stdout());
        assertTrue(store.find() && Integer.parseInt(store.group(1)) >= 2 && Long.parseLong(store.group(2)) >= 256 + 64 - 16,
                "rund status: " + ctd.rund(T, "status").stdout());
        // Its disk is the 64 MiB it asked for (df of its root: the overlay's upper file system).
        long kib = Long.parseLong(exec("small", "df -k / | awk 'NR==2 {print $2}'").strip());
        assertTrue(kib > 40_000 && kib <= 65_536, "a 64 MiB layer: " + kib + " KiB");
        String full = exec("small", "dd if=/dev/zero of=/big bs=1M count=100 2>&1; echo status=$?");
        assertTrue(full.contains("No space left on device") && full.endsWith("status=1\n"), full);
        assertEquals("alive\n", exec("small", "rm /big; echo alive"), "its VM runs on");
        assertEquals(vm, vmPid("small"), "the same VM");
        // The neighbour's writes are untouched.
        assertEquals("100000000\n", exec("neighbour", "head -c 100000000 /dev/zero > /big && sync && wc -c < /big"));
        ctd.killAndDelete("small");
        ctd.killAndDelete("neighbour");
        ctd.awaitNothingLeft();
    }

    @Test
    void aStartTheStoreCannotPromiseALayerIsRefusedAtCreateByName() throws Exception {
        Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUND, "--annotation", SIZE + "=1048576", Containerd.IMAGE,
                "huge", "true");
        assertNotEquals(0, r.exitCode(), r.toString());
        assertTrue(r.stderr().contains("create writable layer sandbox=huge in " + ctd.scratch.mount + "/scratch: the store is full (")
                && r.stderr().contains(" bytes free, ") && r.stderr().contains("a layer of 1048576 MiB needs "), r.toString());
        ctd.ctr(T, "container", "delete", "huge");
        ctd.awaitNothingLeft();
        for (String bad : List.of("8", "lots")) {
            Command.Result b = ctd.ctr(T, "run", "--rm", "--runtime", RUND, "--annotation", SIZE + "=" + bad, Containerd.IMAGE,
                    "bad", "true");
            assertNotEquals(0, b.exitCode(), b.toString());
            assertTrue(b.stderr().contains(SIZE + "=" + bad + ": " + (bad.equals("8") ? "is outside 16..1048576" : "is not a number")),
                    b.toString());
            ctd.ctr(T, "container", "delete", "bad");
        }
        ctd.awaitNothingLeft();
        // A layer larger than the default is the pod's, and the store holds it.
        assertEquals("ok\n", ctd.ctr(T, "run", "--rm", "--runtime", RUND, "--annotation", SIZE + "=512", Containerd.IMAGE,
                "big", "sh", "-c", "test $(df -k / | awk 'NR==2 {print $2}') -gt 400000 && echo ok").stdout());
        ctd.awaitNothingLeft();
    }
}
