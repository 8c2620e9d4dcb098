package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
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
 * Load: 50 sandboxes started at once through containerd while 10 others are being deleted,
 * on a daemon whose cgroup pool holds 4 (it may run dry) and whose spare VMs are taken
 * by the first starts. No call may hang (each is bounded, and all must succeed), every new
 * task runs and answers an exec, and afterwards the pool and the spares are refilled and
 * nothing else is left.
 */
@Timeout(900)
class LoadTest {

    private static final Duration T = Duration.ofSeconds(300);
    private static final String RUNTIME = "io.containerd.rund.v2";
    private static final int STARTS = 50;
    private static final int DELETES = 10;
    private static Containerd ctd;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        ctd = new Containerd("load");
    }

    @AfterAll
    static void stop() throws Exception {
        if (ctd != null) {
            ctd.close();
        }
    }

    @Test
    void fiftyStartsAtOnceWhileOthersAreDeleted() throws Exception {
        ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor();
        try {
            List<Callable<Command.Result>> old = new ArrayList<>();
            for (int i = 0; i < DELETES; i++) {
                String id = "old" + i;
                old.add(() -> ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, id, "sleep", "1000"));
            }
            for (Future<Command.Result> f : pool.invokeAll(old)) {
                assertEquals(0, f.get().exitCode(), f.get().toString());
            }

            List<Callable<Command.Result>> calls = new ArrayList<>();
            for (int i = 0; i < STARTS; i++) {
                String id = "new" + i;
                calls.add(() -> ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, id, "sleep", "1000"));
            }
            for (int i = 0; i < DELETES; i++) {
                String id = "old" + i;
                calls.add(() -> ctd.killAndDelete(id));
            }
            long t0 = System.nanoTime();
            List<Future<Command.Result>> results = pool.invokeAll(calls);
            long seconds = (System.nanoTime() - t0) / 1_000_000_000;
            for (int i = 0; i < STARTS; i++) {
                assertEquals(0, results.get(i).get().exitCode(), results.get(i).get().toString());
            }
            for (int i = STARTS; i < results.size(); i++) {
                results.get(i).get(); // a delete that failed has thrown
            }
            System.out.println("load: " + STARTS + " starts and " + DELETES + " deletes at once took " + seconds + " s");

            String tasks = ctd.ctr(T, "task", "ls").stdout();
            for (int i = 0; i < STARTS; i++) {
                assertTrue(tasks.matches("(?s).*\\bnew" + i + "\\s+\\d+\\s+RUNNING.*"), "new" + i + ": " + tasks);
            }
            List<Callable<Command.Result>> execs = new ArrayList<>();
            for (int i = 0; i < STARTS; i++) {
                String id = "new" + i;
                execs.add(() -> ctd.ctr(T, "task", "exec", "--exec-id", "x", id, "echo", id));
            }
            List<Future<Command.Result>> answered = pool.invokeAll(execs);
            for (int i = 0; i < STARTS; i++) {
                assertEquals("new" + i + "\n", answered.get(i).get().stdout(), answered.get(i).get().toString());
            }
            // Whether the refiller kept up depends on this machine's speed (CgroupPoolTest covers
            // a dry pool deterministically); what must hold is that every start got a cgroup.
            long dry = Files.readAllLines(ctd.daemonLog).stream()
                    .filter(l -> l.contains("cgroup pool: empty, creating a cgroup on the start path")).count();
            System.out.println("load: " + dry + " of " + STARTS + " starts found the pool of 4 dry");

            List<Callable<Command.Result>> deletes = new ArrayList<>();
            for (int i = 0; i < STARTS; i++) {
                String id = "new" + i;
                deletes.add(() -> ctd.killAndDelete(id));
            }
            for (Future<Command.Result> f : pool.invokeAll(deletes)) {
                assertTrue(f.get().stderr().contains("exit code 137"), f.get().toString());
            }
        } finally {
            pool.shutdownNow();
        }
        // The pool and the spares refill; nothing else is left.
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (freeCgroups() != 4 || ctd.sparePids().size() != Containerd.SPARES) {
            assertTrue(System.nanoTime() < end, "the pool holds " + freeCgroups() + " free cgroups and "
                    + ctd.sparePids().size() + " spare VMs");
            Thread.sleep(250);
        }
        ctd.assertNothingLeft();
    }

    private static int freeCgroups() throws Exception {
        Path root = Path.of("/sys/fs/cgroup/memory", ctd.pool);
        try (Stream<Path> s = Files.list(root)) {
            return (int) s.filter(p -> p.getFileName().toString().startsWith("free-")).count();
        }
    }
}
