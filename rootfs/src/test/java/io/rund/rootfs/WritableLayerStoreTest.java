package io.rund.rootfs;

import io.rund.testing.XfsLoop;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The store on a real XFS with reflink, on a loop device. */
@Timeout(120)
class WritableLayerStoreTest {

    private static List<String> files(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    private static byte[] sha256(Path p) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(p));
    }

    @Test
    void fiftyLayersShareTheImageAndNoPathNamesThem() throws Exception {
        try (XfsLoop xfs = new XfsLoop(1024)) {
            Path dir = xfs.mount.resolve("store");
            WritableLayerStore store = WritableLayerStore.open(dir, 256);
            byte[] image = sha256(store.template());
            long usedBefore = xfs.usedKiB();
            List<WritableLayer> layers = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                layers.add(store.create("sb-" + i));
            }
            assertEquals(List.of("ext4-256M.img"), files(dir), "no layer may be named by a path");
            // Each is a whole ext4 image, reachable through /proc as the hypervisor will reach it.
            for (WritableLayer layer : layers) {
                try (RandomAccessFile f = new RandomAccessFile(layer.procPath().toFile(), "rw")) {
                    assertEquals(256L << 20, f.length());
                    f.seek(1080);
                    assertEquals(0xEF53, Short.toUnsignedInt(Short.reverseBytes(f.readShort())), "ext4 magic");
                }
            }
            // Writing one layer changes neither the image nor its siblings.
            try (RandomAccessFile f = new RandomAccessFile(layers.get(0).procPath().toFile(), "rw")) {
                f.seek(10L << 20);
                f.write(new byte[1 << 20]);
                f.seek(10L << 20);
                f.write("written by sandbox 0".getBytes());
            }
            assertArrayEquals(image, sha256(store.template()));
            try (RandomAccessFile f = new RandomAccessFile(layers.get(1).procPath().toFile(), "r")) {
                byte[] b = new byte[20];
                f.seek(10L << 20);
                f.readFully(b);
                assertArrayEquals(new byte[20], b);
            }
            // Fifty clones of a 256 MiB image cost far less than one copy of it.
            long cloned = xfs.usedKiB() - usedBefore;
            assertTrue(cloned < 64 * 1024, "50 clones used " + cloned + " KiB");
            for (WritableLayer layer : layers) {
                layer.close();
                layer.close(); // idempotent
            }
            assertEquals(List.of("ext4-256M.img"), files(dir));
        }
    }

    @Test
    void aStoreWithoutReflinkIsRefusedAtOpen() throws Exception {
        Path dir = Files.createTempDirectory(Path.of("/var/tmp"), "rund-noreflink-");
        try {
            assertEquals("ext4", XfsLoop.run("stat", "-f", "-c", "%T", dir.toString()).strip().replace("ext2/ext3", "ext4"));
            StoreException e = assertThrows(StoreException.class, () -> WritableLayerStore.open(dir, 16));
            assertTrue(e.getMessage().contains("cannot clone"), e.getMessage());
            assertTrue(e.getMessage().contains(dir.toString()), e.getMessage());
            assertTrue(e.getMessage().contains("Operation not supported"), e.getMessage());
        } finally {
            try (Stream<Path> s = Files.list(dir)) {
                for (Path p : s.toList()) {
                    Files.delete(p);
                }
            }
            Files.delete(dir);
        }
    }

    @Test
    void layersLeftByACrashAreRemovedAtOpen() throws Exception {
        try (XfsLoop xfs = new XfsLoop(512)) {
            Path dir = xfs.mount.resolve("store");
            WritableLayerStore.open(dir, 16);
            Files.writeString(dir.resolve("layer-1234-1"), "left between clone and unlink");
            WritableLayerStore.open(dir, 16);
            assertEquals(List.of("ext4-16M.img"), files(dir));
        }
    }
}
