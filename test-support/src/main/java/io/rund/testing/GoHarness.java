package io.rund.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Builds a small Go program from a test's sources against the Go packages Debian installs
 * under /usr/share/gocode (GOPATH mode: no module download, no network). Used to put
 * containerd's own Go code on the other end of a connection.
 *
 * <p>Needs Debian's golang-go and the -dev packages the program imports
 * (golang-github-containerd-ttrpc-dev, golang-github-containerd-containerd-dev); .ci/run
 * installs them.
 */
public final class GoHarness {

    private static final Path SYSTEM_GOPATH = Path.of("/usr/share/gocode");
    /** Go's build cache, kept outside the checkout so that a clean build stays quick. */
    private static final Path GO_CACHE = Path.of("/var/cache/rund/go-build");
    private static final Map<Path, Path> BUILT = new ConcurrentHashMap<>();

    private GoHarness() {}

    /**
     * The binary built from {@code sourceDir} (a directory holding a main package), built
     * once per test JVM into {@code target/go}.
     */
    public static Path build(Path sourceDir) {
        return BUILT.computeIfAbsent(sourceDir.toAbsolutePath().normalize(), GoHarness::compile);
    }

    private static Path compile(Path sourceDir) {
        String name = sourceDir.getFileName().toString();
        Path work = Path.of("target", "go").toAbsolutePath();
        Path gopath = work.resolve("gopath");
        Path link = gopath.resolve("src").resolve(name);
        Path binary = work.resolve("bin").resolve(name);
        try {
            if (!Files.isDirectory(SYSTEM_GOPATH.resolve("src/github.com/containerd/ttrpc"))) {
                throw new AssertionError("containerd's Go sources are missing from " + SYSTEM_GOPATH
                        + ": apt-get install golang-go golang-github-containerd-ttrpc-dev"
                        + " golang-github-containerd-containerd-dev");
            }
            Files.createDirectories(link.getParent());
            Files.createDirectories(binary.getParent());
            Files.deleteIfExists(link);
            Files.createSymbolicLink(link, sourceDir);
            Command.run(Duration.ofMinutes(5), link,
                    Map.of("GO111MODULE", "off", "GOPATH", gopath + ":" + SYSTEM_GOPATH, "GOFLAGS", "",
                            "GOCACHE", GO_CACHE.toString()),
                    List.of("go", "build", "-o", binary.toString(), ".")).ok();
            return binary;
        } catch (IOException e) {
            throw new AssertionError("build the Go harness " + name + " (is golang-go installed?): " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted while building " + name, e);
        }
    }
}
