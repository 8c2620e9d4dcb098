package io.rund.sandbox.cgroup;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The pool on this host's real cgroupfs, under a root named after the test. */
@Timeout(60)
class CgroupPoolTest {

    private static String poolName(String test) {
        return "rund-test-" + test + "-" + ProcessHandle.current().pid();
    }

    /** Whatever a failed test left: its pool's cgroups (emptied of processes first) and roots. */
    private static void removeAll(CgroupLayout layout) {
        for (Path root : layout.roots().values()) {
            try (Stream<Path> s = Files.exists(root) ? Files.list(root) : Stream.empty()) {
                for (Path dir : s.filter(Files::isDirectory).toList()) {
                    Files.deleteIfExists(dir);
                }
                Files.deleteIfExists(root);
            } catch (Exception e) {
                System.err.println("could not clean " + root + ": " + e);
            }
        }
    }

    private static Process sleeper() throws Exception {
        return new ProcessBuilder("sleep", "60").start();
    }

    private static List<String> names(Path root) throws Exception {
        try (Stream<Path> s = Files.list(root)) {
            return s.filter(Files::isDirectory).map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    private static boolean poll(java.util.function.BooleanSupplier c) throws InterruptedException {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!c.getAsBoolean()) {
            if (System.nanoTime() > end) {
                return false;
            }
            Thread.sleep(20);
        }
        return true;
    }

    @Test
    void claimBindLimitReleaseAndReopenOnThisHost(@TempDir Path claims) throws Exception {
        CgroupLayout layout = CgroupLayout.detect(poolName("host"));
        CgroupPool pool = CgroupPool.open(layout, claims, 4);
        Process p = sleeper();
        try {
            assertEquals(4, pool.freeCount());
            for (Path root : layout.roots().values()) {
                assertEquals(4, names(root).size(), root + " must hold the pool");
            }
            Cgroup cg = pool.claim("sb-1");
            cg.bind(p.pid());
            assertEquals(List.of(p.pid()), cg.pids());
            String own = Files.readString(Path.of("/proc/" + p.pid() + "/cgroup"));
            for (Path dir : cg.dirs()) {
                assertTrue(Files.isDirectory(dir), dir.toString());
            }
            if (layout.version() == CgroupLayout.Version.V1) {
                assertTrue(own.contains("/" + poolName("host") + "/sb-1"), own);
                assertEquals(List.of("free-1", "free-2", "free-3", "sb-1"), names(layout.roots().get("memory")).stream()
                        .filter(n -> !n.equals("free-4")).toList(), "sb-1 is the renamed free-0");
            }
            cg.setLimits(new Cgroup.Limits(64L << 20, 50_000, 100_000, 10, 512));
            if (layout.version() == CgroupLayout.Version.V1) {
                assertEquals("512", Files.readString(layout.roots().get("cpu").resolve("sb-1/cpu.shares")).trim());
                Path mem = layout.roots().get("memory").resolve("sb-1");
                assertEquals(String.valueOf(64L << 20), Files.readString(mem.resolve("memory.limit_in_bytes")).trim());
                assertEquals("10", Files.readString(layout.roots().get("pids").resolve("sb-1/pids.max")).trim());
                assertEquals("50000", Files.readString(layout.roots().get("cpu").resolve("sb-1/cpu.cfs_quota_us")).trim());
            }
            // The refiller brings the pool back to its size in the background.
            assertTrue(poll(() -> pool.freeCount() == 4), "the pool did not refill");

            CgroupException busy = assertThrows(CgroupException.class, () -> pool.release(cg));
            assertTrue(busy.getMessage().contains(String.valueOf(p.pid())), busy.getMessage());
            CgroupException twice = assertThrows(CgroupException.class, () -> pool.claim("sb-1"));
            assertTrue(twice.getMessage().contains("sb-1"), twice.getMessage());
            CgroupException bad = assertThrows(CgroupException.class, () -> pool.claim("../escape"));
            assertTrue(bad.getMessage().contains("../escape"), bad.getMessage());

            // A restarted daemon finds the claimed cgroup again.
            pool.close();
            CgroupPool reopened = CgroupPool.open(layout, claims, 4);
            assertEquals(List.of("sb-1"), List.copyOf(reopened.claimed().keySet()));
            Cgroup found = reopened.claimed().get("sb-1");
            assertEquals(List.of(p.pid()), found.pids());

            p.destroyForcibly().waitFor();
            assertTrue(poll(() -> {
                try {
                    return found.pids().isEmpty();
                } catch (CgroupException e) {
                    return false;
                }
            }));
            reopened.release(found);
            reopened.release(found); // idempotent
            assertTrue(reopened.claimed().isEmpty());
            assertTrue(poll(() -> reopened.freeCount() == 4), "the surplus from the release must be removed");
            for (Path root : layout.roots().values()) {
                assertFalse(names(root).contains("sb-1"), root + " still has sb-1");
                assertTrue(names(root).stream().allMatch(n -> n.startsWith("free-")), names(root).toString());
            }
            if (layout.version() == CgroupLayout.Version.V1) {
                Path released = layout.roots().get("memory").resolve(names(layout.roots().get("memory")).getLast());
                assertEquals("9223372036854771712", Files.readString(released.resolve("memory.limit_in_bytes")).trim(),
                        "limits are reset on release");
                assertEquals("1024", Files.readString(layout.roots().get("cpu").resolve(released.getFileName())
                        .resolve("cpu.shares")).trim(), "shares are reset on release");
            }
            reopened.destroy();
            for (Path root : layout.roots().values()) {
                assertFalse(Files.exists(root), root + " must be gone after destroy");
            }
        } finally {
            p.destroyForcibly().waitFor();
            pool.close();
            removeAll(layout);
        }
    }

    @Test
    void aUnifiedHierarchyUsesSlotsAndClaimFiles(@TempDir Path claims) throws Exception {
        Path unified = Path.of("/sys/fs/cgroup/unified");
        assumeTrue(Files.exists(unified.resolve("cgroup.procs")), "no cgroup2 mount at " + unified);
        CgroupLayout layout = CgroupLayout.v2(unified, poolName("v2"));
        CgroupPool pool = CgroupPool.open(layout, claims, 2);
        Process p = sleeper();
        try {
            Cgroup cg = pool.claim("sb-2");
            assertTrue(cg.slot().startsWith("free-"), "cgroup v2 refuses rename: the slot keeps its name");
            assertEquals("sb-2", Files.readString(claims.resolve(cg.slot())));
            cg.bind(p.pid());
            assertEquals(List.of(p.pid()), cg.pids());
            if (!layout.controllers().contains("memory")) {
                CgroupException noMemory = assertThrows(CgroupException.class,
                        () -> cg.setLimits(new Cgroup.Limits(1 << 26, 0, 0, 0)));
                assertTrue(noMemory.getMessage().contains("memory controller"), noMemory.getMessage());
            }
            pool.close();
            CgroupPool reopened = CgroupPool.open(layout, claims, 2);
            assertEquals(cg.slot(), reopened.claimed().get("sb-2").slot());
            p.destroyForcibly().waitFor();
            Cgroup found = reopened.claimed().get("sb-2");
            assertTrue(poll(() -> {
                try {
                    return found.pids().isEmpty();
                } catch (CgroupException e) {
                    return false;
                }
            }));
            reopened.release(found);
            assertFalse(Files.exists(claims.resolve(cg.slot())));
            reopened.destroy();
            assertFalse(Files.exists(layout.roots().get("")));
        } finally {
            p.destroyForcibly().waitFor();
            pool.close();
            removeAll(layout);
        }
    }

    @Test
    void sharesBecomeWeightsAsRuncConvertsThem() {
        assertEquals(1, Cgroup.weightOf(2));
        assertEquals(39, Cgroup.weightOf(1024));
        assertEquals(10000, Cgroup.weightOf(262144));
        assertEquals(100, Cgroup.weightOf(0), "none asked: the kernel's default");
    }

    @Test
    void aDryPoolCreatesTheCgroupOnTheStartPath(@TempDir Path claims) throws Exception {
        CgroupLayout layout = CgroupLayout.detect(poolName("dry"));
        CgroupPool pool = CgroupPool.open(layout, claims, 1);
        try {
            // Closing stops the refiller: from here on nothing refills, as when claims outrun it.
            pool.close();
            Cgroup first = pool.claim("sb-a");
            assertEquals(0, pool.createdOnStartPath(), "the one free cgroup served the first claim");
            assertEquals(0, pool.freeCount());
            Cgroup second = pool.claim("sb-b");
            assertEquals(1, pool.createdOnStartPath(), "the second claim found the pool dry and made its own");
            for (Path dir : second.dirs()) {
                assertTrue(Files.isDirectory(dir), dir.toString());
            }
            assertEquals(List.of("sb-a", "sb-b"), pool.claimed().keySet().stream().sorted().toList());
            pool.release(first);
            pool.release(second);
            assertTrue(pool.claimed().isEmpty());
        } finally {
            pool.close();
            removeAll(layout);
        }
    }
}
