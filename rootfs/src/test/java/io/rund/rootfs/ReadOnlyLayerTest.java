package io.rund.rootfs;

import io.rund.testing.NativeTools;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The share as the sandbox's helper sees it: images mounted after the helper started appear
 * in its mount namespace, read-only from their first moment, and go when removed; closing
 * the layer ends the helper and unmounts everything.
 */
class ReadOnlyLayerTest {

    @TempDir
    Path dir;

    @Test
    void imagesMountedLaterReachTheHelperReadOnlyAndGoWhenRemoved() throws Exception {
        Path image = Files.createDirectories(dir.resolve("image/etc"));
        Files.writeString(image.resolve("os-release"), "ID=test\n");
        Path sandbox = Files.createDirectories(dir.resolve("sb"));
        ReadOnlyLayer layer = ReadOnlyLayer.start("sb", sandbox, new SandboxHelper.Jail(NativeTools.jailer(), NativeTools.helper(), NativeTools.TEST_GID + 3, NativeTools.TEST_GID));
        Path helperRoot = Path.of("/proc", Long.toString(layer.helper().process().pid()), "root");
        Path mountinfo = helperRoot.getParent().resolve("mountinfo");
        try {
            String name = layer.add("c1", ReadOnlyLayer.lowerDirs("c1",
                    List.of(new RootfsMount("bind", dir.resolve("image").toString(), List.of("rbind")))));
            assertEquals("ID=test\n", Files.readString(helperRoot.resolve(name.substring(1) + "/etc/os-release")),
                    "an image mounted after the helper started reaches its namespace");
            String line = Files.readAllLines(mountinfo).stream().filter(l -> l.split(" ")[4].equals(name)).findFirst()
                    .orElseThrow(() -> new AssertionError(name + " not mounted for the helper"));
            assertTrue(line.split(" ")[5].matches("ro,nosuid,nodev.*"), "read-only there from the start: " + line);
            layer.remove(name);
            assertFalse(Files.readAllLines(mountinfo).stream().anyMatch(l -> l.split(" ")[4].equals(name)),
                    "a removed image leaves the helper's namespace");
        } finally {
            layer.close();
        }
        assertTrue(layer.helper().awaitExit(java.time.Duration.ofSeconds(5)).isPresent(), "the helper is gone");
        assertFalse(Files.exists(sandbox.resolve("shared")), "the share is unmounted and removed");
        assertFalse(Files.readString(Path.of("/proc/self/mountinfo")).contains(sandbox.toString()));
    }
}
