package io.rund.rootfs;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * Writable layers as reflink copies of one pre-formatted ext4 image, in a directory on a
 * filesystem with reflink (XFS with reflink=1, or btrfs).
 *
 * <p>A layer is cloned (FICLONE: the copy shares every block with the image until one is
 * written), opened, and unlinked at once: while a sandbox runs no path names it, and when
 * its last descriptor closes the kernel frees it, so a crashed daemon leaves nothing to
 * collect. A store without reflink is refused at open: a full copy per sandbox would be
 * slow and large, and silently so.
 */
public final class WritableLayerStore {

    private static final System.Logger LOG = System.getLogger(WritableLayerStore.class.getName());
    /** _IOW(0x94, 9, int) */
    static final long FICLONE = 0x40049409L;
    private static final int EOPNOTSUPP = 95;
    private static final int EXDEV = 18;
    private static final int EINVAL = 22;
    private static final int ENOTTY = 25;
    private static final int ENOSPC = 28;
    private static final String LAYER = "layer-";

    private final Path dir;
    private final Path template;
    private final long sizeBytes;
    private final AtomicLong counter = new AtomicLong();

    private WritableLayerStore(Path dir, Path template, long sizeBytes) {
        this.dir = dir;
        this.template = template;
        this.sizeBytes = sizeBytes;
    }

    /**
     * Opens the store in {@code dir}, formatting the ext4 image of {@code sizeMiB} if it is
     * not there yet, removing layers left by a crash between clone and unlink, and checking
     * that the filesystem clones.
     */
    public static WritableLayerStore open(Path dir, int sizeMiB) throws StoreException {
        if (sizeMiB < 16 || sizeMiB > 1 << 20) {
            throw new IllegalArgumentException("writable layer size " + sizeMiB + " MiB is outside 16..1048576");
        }
        Path template = dir.resolve("ext4-" + sizeMiB + "M.img");
        try {
            Files.createDirectories(dir);
            try (Stream<Path> entries = Files.list(dir)) {
                for (Path p : entries.filter(p -> p.getFileName().toString().startsWith(LAYER)).toList()) {
                    LOG.log(Level.INFO, "writable layer store: removing {0}, left by a crash", p);
                    Files.deleteIfExists(p);
                }
            }
            if (!Files.exists(template)) {
                format(template, (long) sizeMiB << 20);
            }
        } catch (IOException e) {
            throw new StoreException("open writable layer store " + dir + ": " + e.getMessage(), e);
        }
        WritableLayerStore store = new WritableLayerStore(dir, template, (long) sizeMiB << 20);
        try {
            store.create("probe").close();
        } catch (StoreException e) {
            if (!e.noSpace()) {
                throw e;
            }
            // A full store must not keep the daemon down: running sandboxes need it, and a
            // start will fail naming the store until space is freed.
            LOG.log(Level.WARNING, "writable layer store {0}: {1}", dir, e.getMessage());
        }
        LOG.log(Level.INFO, "writable layer store: {0}, {1} MiB ext4 layers by reflink", dir, sizeMiB);
        return store;
    }

    private static void format(Path template, long bytes) throws IOException, StoreException {
        Path tmp = template.resolveSibling(template.getFileName() + ".tmp");
        try (RandomAccessFile f = new RandomAccessFile(tmp.toFile(), "rw")) {
            f.setLength(bytes);
        }
        Process mkfs = new ProcessBuilder(List.of("mkfs.ext4", "-q", "-F", "-L", "rund-upper", tmp.toString()))
                .redirectErrorStream(true).start();
        String out = new String(mkfs.getInputStream().readAllBytes());
        try {
            if (!mkfs.waitFor(60, TimeUnit.SECONDS) || mkfs.exitValue() != 0) {
                mkfs.destroyForcibly();
                Files.deleteIfExists(tmp);
                throw new StoreException("format " + template + " with mkfs.ext4: " + out.strip());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new StoreException("format " + template + ": interrupted");
        }
        Files.move(tmp, template, StandardCopyOption.ATOMIC_MOVE);
    }

    /** Clones, opens and unlinks a new layer for {@code sandboxId}. */
    public WritableLayer create(String sandboxId) throws StoreException {
        Path path = dir.resolve(LAYER + ProcessHandle.current().pid() + "-" + counter.incrementAndGet());
        int src = -1;
        int dst = -1;
        try {
            src = Syscalls.open(template, Syscalls.O_RDONLY | Syscalls.O_CLOEXEC, 0);
            dst = Syscalls.open(path, Syscalls.O_RDWR | Syscalls.O_CREAT | Syscalls.O_EXCL | Syscalls.O_CLOEXEC, 0600);
            try {
                Syscalls.ioctl(dst, FICLONE, src);
            } finally {
                Syscalls.unlink(path);
            }
            WritableLayer layer = new WritableLayer(dst, sizeBytes);
            dst = -1;
            return layer;
        } catch (Syscalls.SyscallException e) {
            throw new StoreException(explain(sandboxId, e), e);
        } finally {
            Syscalls.closeQuietly(src);
            Syscalls.closeQuietly(dst);
            try {
                Files.deleteIfExists(path);
            } catch (IOException ignored) {
                // unlinked above in every path that created it
            }
        }
    }

    /**
     * Makes {@code dir} a store of its own beside the store in {@code nodeStore} (on its
     * filesystem): the node's formatted image, cloned, so that {@link #open} need not format
     * one. For a daemon's rehearsal of its start, which must not touch the node's store.
     */
    public static void seed(Path nodeStore, Path dir, int sizeMiB) throws StoreException {
        Path image = nodeStore.resolve("ext4-" + sizeMiB + "M.img");
        int src = -1;
        int dst = -1;
        try {
            Files.createDirectories(dir);
            src = Syscalls.open(image, Syscalls.O_RDONLY | Syscalls.O_CLOEXEC, 0);
            dst = Syscalls.open(dir.resolve(image.getFileName()),
                    Syscalls.O_RDWR | Syscalls.O_CREAT | Syscalls.O_EXCL | Syscalls.O_CLOEXEC, 0600);
            Syscalls.ioctl(dst, FICLONE, src);
        } catch (IOException e) {
            throw new StoreException("make store " + dir + ": " + e.getMessage(), e);
        } catch (Syscalls.SyscallException e) {
            throw new StoreException(explain(dir, "clone " + image, e), e);
        } finally {
            Syscalls.closeQuietly(src);
            Syscalls.closeQuietly(dst);
        }
    }

    /**
     * Checks, without touching the store's image or layers, that {@code dir} can clone
     * files: clones a 4 KiB probe file and removes both. For `rund check`, which must not
     * change a store a running daemon uses.
     *
     * @throws StoreException naming why not (no reflink, full, missing)
     */
    public static void checkClone(Path dir) throws StoreException {
        Path probe = dir.resolve(".check-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        Path clone = probe.resolveSibling(probe.getFileName() + ".clone");
        int src = -1;
        int dst = -1;
        try {
            Files.write(probe, new byte[4096]);
            src = Syscalls.open(probe, Syscalls.O_RDONLY | Syscalls.O_CLOEXEC, 0);
            dst = Syscalls.open(clone, Syscalls.O_RDWR | Syscalls.O_CREAT | Syscalls.O_EXCL | Syscalls.O_CLOEXEC, 0600);
            Syscalls.ioctl(dst, FICLONE, src);
        } catch (IOException e) {
            throw new StoreException("write a probe file in " + dir + ": " + e.getMessage(), e);
        } catch (Syscalls.SyscallException e) {
            throw new StoreException(explain(dir, "clone a probe file", e), e);
        } finally {
            Syscalls.closeQuietly(src);
            Syscalls.closeQuietly(dst);
            try {
                Files.deleteIfExists(probe);
                Files.deleteIfExists(clone);
            } catch (IOException ignored) {
                // the probe names carry pid and time: a leftover never collides, and open() removes none
            }
        }
    }

    private String explain(String sandboxId, Syscalls.SyscallException e) {
        return explain(dir, "create writable layer sandbox=" + sandboxId, e);
    }

    private static String explain(Path dir, String doing, Syscalls.SyscallException e) {
        String what = doing + " in " + dir + ": ";
        return switch (e.errno()) {
            case EOPNOTSUPP, EXDEV, EINVAL, ENOTTY -> what + "this filesystem cannot clone files (" + e.getMessage()
                    + "); the store must be on XFS with reflink=1 or on btrfs (hack/setup makes a loop-mounted XFS)";
            case ENOSPC -> what + "the store is full (" + e.getMessage() + ")";
            default -> what + e.getMessage();
        };
    }

    /** The least a start needs free in the store: its disk's first writes (a mount's journal, a container's files). */
    public static final long MIN_FREE_BYTES = 64L << 20;

    /**
     * Refuses a start the store cannot hold, naming the store and its free space: a disk is a
     * clone whose blocks are allocated as the guest writes them (a spare's was made before),
     * and a store without room would fail the guest's first writes with EIO instead.
     */
    public void requireRoom(String sandboxId) throws StoreException {
        long free;
        try {
            free = Files.getFileStore(dir).getUsableSpace();
        } catch (IOException e) {
            throw new StoreException("store " + dir + ": free space: " + e.getMessage(), e);
        }
        if (free < MIN_FREE_BYTES) {
            throw new StoreException("create writable layer sandbox=" + sandboxId + " in " + dir + ": the store is full ("
                    + free + " bytes free, fewer than the " + MIN_FREE_BYTES + " a start needs)");
        }
    }

    public Path dir() {
        return dir;
    }

    public Path template() {
        return template;
    }
}
