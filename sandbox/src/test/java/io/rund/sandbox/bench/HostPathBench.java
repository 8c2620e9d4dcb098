package io.rund.sandbox.bench;

import io.rund.rootfs.WritableLayer;
import io.rund.rootfs.WritableLayerStore;
import io.rund.testing.XfsLoop;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * The host-side steps of a sandbox start, each against what it replaces, side by side in
 * one run (hack/bench host-path; prints Markdown):
 * <ul>
 *   <li>writable layer: FICLONE + open + unlink + /proc handoff path, vs a full copy of the
 *       image, vs mkfs.ext4 of a fresh file; 1,000 one at a time and 50 at once;</li>
 *   <li>cgroup: claim from the pool (rename) + limits + bind a process, vs mkdir + limits +
 *       attach; one at a time and 16 at once. Release and rmdir run after the clock stops:
 *       they are not on the start path.</li>
 * </ul>
 */
public final class HostPathBench {

    private HostPathBench() {}

    /** One timed iteration; what it returns is run after the clock stopped (its clean-up). */
    interface Op {
        Undo run(int i) throws Exception;
    }

    interface Undo {
        void run() throws Exception;
    }

    /** Runs op n times on `workers` threads; returns sorted per-iteration latencies in µs (clean-up untimed). */
    static double[] time(int n, int workers, Op op) throws Exception {
        double[] lat = new double[n];
        try (ExecutorService pool = Executors.newFixedThreadPool(workers)) {
            List<Future<?>> fs = new ArrayList<>();
            java.util.concurrent.atomic.AtomicInteger next = new java.util.concurrent.atomic.AtomicInteger();
            for (int w = 0; w < workers; w++) {
                fs.add(pool.submit((Callable<Void>) () -> {
                    int i;
                    while ((i = next.getAndIncrement()) < n) {
                        long t = System.nanoTime();
                        Undo undo = op.run(i);
                        lat[i] = (System.nanoTime() - t) / 1000.0;
                        undo.run();
                    }
                    return null;
                }));
            }
            for (Future<?> f : fs) {
                f.get();
            }
        }
        Arrays.sort(lat);
        return lat;
    }

    static void row(String what, int n, int workers, double[] lat) {
        System.out.printf("| %s | %d | %d | %.1f | %.1f |%n", what, n, workers, lat[lat.length / 2],
                lat[Math.min(lat.length - 1, (int) Math.ceil(lat.length * 0.99) - 1)]);
    }

    public static void main(String[] args) throws Exception {
        System.out.println("| step | iterations | concurrent | p50 µs | p99 µs |");
        System.out.println("|---|---:|---:|---:|---:|");
        try (XfsLoop xfs = new XfsLoop(4096)) {
            WritableLayerStore store = WritableLayerStore.open(xfs.mount.resolve("scratch"), 256);
            for (int workers : new int[] {1, 50}) {
                row("writable layer: FICLONE+open+unlink+handoff (256 MiB ext4)", 1000, workers, time(1000, workers, i -> {
                    WritableLayer l = store.create("bench", 256);
                    l.procPath();
                    return l::close;
                }));
            }
            Path copies = Files.createDirectories(xfs.mount.resolve("copies"));
            // cp --reflink=never: Files.copy would use copy_file_range, which XFS turns into a reflink.
            row("writable layer: full copy of the 256 MiB image (cp --reflink=never)", 20, 1, time(20, 1, i -> {
                Path dst = copies.resolve("c" + i);
                Process p = new ProcessBuilder("cp", "--reflink=never", store.template().toString(), dst.toString()).start();
                if (p.waitFor() != 0) {
                    throw new IllegalStateException("cp failed");
                }
                return () -> Files.delete(dst);
            }));
            row("writable layer: mkfs.ext4 of a fresh 256 MiB file", 50, 1, time(50, 1, i -> {
                Path dst = copies.resolve("m" + i);
                try (RandomAccessFile f = new RandomAccessFile(dst.toFile(), "rw")) {
                    f.setLength(256L << 20);
                }
                Process p = new ProcessBuilder("mkfs.ext4", "-q", "-F", dst.toString()).start();
                if (p.waitFor() != 0) {
                    throw new IllegalStateException("mkfs.ext4 failed");
                }
                return () -> Files.delete(dst);
            }));
        }
        String name = "rund-bench-" + ProcessHandle.current().pid();
        CgroupLayout layout = CgroupLayout.detect(name);
        Path claims = Files.createTempDirectory("rund-bench-claims-");
        CgroupPool pool = CgroupPool.open(layout, claims, 32);
        Process sleeper = new ProcessBuilder("sleep", "600").start();
        try {
            for (int workers : new int[] {1, 16}) {
                row("cgroup: claim from the pool (rename) + limits + bind", 2000, workers, time(2000, workers, i -> {
                    Cgroup cg = pool.claim("sb-" + i);
                    cg.setLimits(new Cgroup.Limits(512L << 20, 0, 0, 512));
                    cg.bind(sleeper.pid());
                    return () -> {
                        backToRoot(layout, sleeper.pid());
                        pool.release(cg);
                    };
                }));
                row("cgroup: mkdir + limits + attach (+ rmdir after)", 2000, workers, time(2000, workers, i -> {
                    List<Path> made = new ArrayList<>();
                    for (var e : layout.roots().entrySet()) {
                        Path d = Files.createDirectory(e.getValue().resolve("mk-" + i));
                        made.add(d);
                        if (e.getKey().equals("memory")) {
                            Files.writeString(d.resolve("memory.limit_in_bytes"), String.valueOf(512L << 20));
                        }
                        if (e.getKey().equals("pids")) {
                            Files.writeString(d.resolve("pids.max"), "512");
                        }
                        Files.writeString(d.resolve("cgroup.procs"), String.valueOf(sleeper.pid()));
                    }
                    return () -> {
                        backToRoot(layout, sleeper.pid());
                        for (Path d : made) {
                            Files.delete(d);
                        }
                    };
                }));
            }
        } finally {
            sleeper.destroyForcibly().waitFor();
            pool.destroy();
            Files.deleteIfExists(claims);
        }
        System.out.println();
        System.out.println("cgroups: " + layout.version() + " " + layout.roots().keySet() + "; created on a start path: "
                + pool.createdOnStartPath());
    }

    /** Moves the process back to each hierarchy's root, so that the cgroup can be released. */
    private static void backToRoot(CgroupLayout layout, long pid) throws Exception {
        for (Path root : layout.roots().values()) {
            Files.writeString(root.getParent().resolve("cgroup.procs"), String.valueOf(pid));
        }
    }
}
