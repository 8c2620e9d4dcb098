package io.rund.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

/**
 * The C programs tests run as production runs them: rund-jail, rund-helper, and memholder
 * (which plays a VM's QEMU for the helper's tests), built from this tree with make into
 * {@code rootfs/target/native} once per test JVM. Tests of every module use it.
 */
public final class NativeTools {

    /** Test VMs' and helpers' group; uids above it. Not the daemon's default (2000000), so a test never shares a uid with a real sandbox. */
    public static final int TEST_GID = 3_000_000;
    private static final Path REPO = repo();
    private static final Path OUT = REPO.resolve("rootfs/target/native");
    private static volatile boolean built;

    private NativeTools() {}

    /** The repository root: the parent of the module directory the tests run in. */
    private static Path repo() {
        Path here = Path.of("").toAbsolutePath();
        return here.resolve("pom.xml").toFile().exists() && here.resolve("rootfs").toFile().isDirectory() ? here
                : here.getParent();
    }

    /** Builds the three programs (make: only what changed). */
    public static synchronized Path build() throws IOException {
        if (!built) {
            make(REPO.resolve("vm-template/jailer"), List.of());
            make(REPO.resolve("rootfs/helper"), List.of("rund-helper-and-tools"));
            built = true;
        }
        return OUT;
    }

    private static void make(Path dir, List<String> targets) throws IOException {
        List<String> argv = new java.util.ArrayList<>(List.of("make", "-s", "-C", dir.toString(), "OUT=" + OUT));
        argv.addAll(targets);
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        try {
            if (p.waitFor() != 0) {
                throw new IOException("make in " + dir + " failed: " + out);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted building " + dir, e);
        }
    }

    public static Path jailer() throws IOException {
        return build().resolve("rund-jail");
    }

    public static Path helper() throws IOException {
        return build().resolve("rund-helper");
    }

    public static Path memholder() throws IOException {
        return build().resolve("memholder");
    }
}
