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
            WritableLayerStore store = WritableLayerStore.open(dir, 16);
            byte[] image = sha256(store.template());
            long usedBefore = xfs.usedKiB();
            List<WritableLayer> layers = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                layers.add(store.create("sb-" + i, 16));
            }
            assertEquals(List.of("ext4-16M.img"), files(dir), "no layer may be named by a path");
            // Each is a whole ext4 image, reachable through /proc as the hypervisor will reach it.
            for (WritableLayer layer : layers) {
                try (RandomAccessFile f = new RandomAccessFile(layer.procPath().toFile(), "rw")) {
                    assertEquals(16L << 20, f.length());
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
            // Fifty clones of a 16 MiB image cost far less than their 800 MiB.
            long cloned = xfs.usedKiB() - usedBefore;
            assertTrue(cloned < 64 * 1024, "50 clones used " + cloned + " KiB");
            for (WritableLayer layer : layers) {
                layer.close();
                layer.close(); // idempotent
            }
            assertEquals(List.of("ext4-16M.img"), files(dir));
        }
    }

    /**
     * The store never overcommits: each layer a VM holds is owed the blocks it may still
     * take, and a layer the free space cannot also cover is refused before anything is made,
     * naming the store and its numbers. A layer given back (its VM gone, or never handed to
     * one) returns its promise; what a layer writes beyond its image is no longer owed.
     */
    @Test
    void theStorePromisesEveryLayerItsSizeAndRefusesWhatItCannotHold() throws Exception {
        try (XfsLoop xfs = new XfsLoop(1024)) {
            Path dir = xfs.mount.resolve("store");
            WritableLayerStore store = WritableLayerStore.open(dir, 256);
            long free = Files.getFileStore(dir).getUsableSpace();
            int fit = (int) ((free - WritableLayerStore.MIN_FREE_BYTES) / (256L << 20));
            assertTrue(fit >= 2, "a 1 GiB store holds a few 256 MiB layers: " + free);
            List<WritableLayer> layers = new ArrayList<>();
            for (int i = 0; i < fit; i++) {
                layers.add(store.create("sb-" + i, 256));
            }
            StoreException full = assertThrows(StoreException.class, () -> store.create("one-more", 256));
            assertTrue(full.getMessage().startsWith("create writable layer sandbox=one-more in " + dir + ": the store is full (")
                    && full.getMessage().contains(" of them promised to the " + fit + " layers VMs hold; a layer of 256 MiB needs "),
                    full.getMessage());
            assertThrows(StoreException.class, () -> store.requireRoom("one-more", 256));
            assertEquals(List.of("ext4-256M.img"), files(dir), "a refused layer leaves nothing");
            assertEquals(new WritableLayerStore.Usage(fit, store.usage().allocated(), (long) fit * (256L << 20)), store.usage());

            // Handed to a VM, a layer stays owed after the daemon's descriptor closes, until the VM is gone.
            java.util.concurrent.CompletableFuture<Void> vmGone = new java.util.concurrent.CompletableFuture<>();
            layers.get(0).heldUntil(vmGone);
            layers.get(0).close();
            assertThrows(StoreException.class, () -> store.requireRoom("one-more", 256));
            vmGone.complete(null);
            store.requireRoom("one-more", 256);
            // One never handed is given back when it closes.
            layers.get(1).close();
            assertEquals(fit - 2, store.usage().layers());
            // What a layer has written beyond its image is no longer owed: it is allocated already.
            WritableLayer written = layers.size() > 2 ? layers.get(2) : store.create("sb-w", 256);
            long owedBefore = store.usage().promised();
            try (RandomAccessFile f = new RandomAccessFile(written.procPath().toFile(), "rw")) {
                // 140..172 MiB: a hole of the 256 MiB image (mkfs.ext4 puts nothing between its journal,
                // at 112 MiB, and block group 1's backups at 128 MiB and 200 MiB). A write over the
                // image's own blocks copies them instead, and those stay owed.
                f.seek(140L << 20);
                f.write(new byte[32 << 20]);
                f.getFD().sync();
            }
            assertEquals(owedBefore - (32L << 20), store.usage().promised(), "written blocks are no longer promised");
            for (WritableLayer layer : layers) {
                layer.close();
            }
            written.close();
            assertEquals(0, store.usage().layers());
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
