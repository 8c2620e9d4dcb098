package io.rund.rootfs;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

/** Directories rund makes for one thing (a sandbox's state, a template) and removes again. */
public final class Dirs {

    private Dirs() {}

    /**
     * Removes {@code dir}: its files, and its empty subdirectories (a mountpoint whose mount
     * is gone). It never descends: were something still mounted below (an image on a share),
     * walking into it would delete what is mounted. A missing directory is fine.
     */
    public static void removeShallow(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.toList()) {
                Files.deleteIfExists(p);
            }
        }
        Files.deleteIfExists(dir);
    }
}
