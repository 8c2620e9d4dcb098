package io.rund.testing;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/** A real XFS with reflink=1 on a loop device, mounted in a temporary directory. */
public final class XfsLoop implements AutoCloseable {

    public final Path base;
    public final Path mount;

    public XfsLoop(long sizeMiB) throws Exception {
        base = Files.createTempDirectory("rund-xfs-");
        Path image = base.resolve("xfs.img");
        mount = base.resolve("mnt");
        Files.createDirectory(mount);
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(sizeMiB << 20);
        }
        run("mkfs.xfs", "-q", "-m", "reflink=1", image.toString());
        run("mount", "-o", "loop", image.toString(), mount.toString());
    }

    public static String run(String... argv) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(List.of(argv)).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new AssertionError(String.join(" ", argv) + " failed: " + out);
        }
        return out;
    }

    /** Blocks in use on the filesystem, from df. */
    public long usedKiB() throws Exception {
        String[] lines = run("df", "-k", "--output=used", mount.toString()).strip().split("\n");
        return Long.parseLong(lines[lines.length - 1].trim());
    }

    @Override
    public void close() throws Exception {
        run("umount", mount.toString());
        try (Stream<Path> s = Files.walk(base)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
