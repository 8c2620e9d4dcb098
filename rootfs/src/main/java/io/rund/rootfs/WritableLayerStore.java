package io.rund.rootfs;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * Writable layers as reflink copies of pre-formatted ext4 images (one per layer size), in a
 * directory on a filesystem with reflink (XFS with reflink=1, or btrfs).
 *
 * <p>A layer is cloned (FICLONE: the copy shares every block with the image until one is
 * written), opened, and unlinked at once: while a sandbox runs no path names it, and when
 * its last descriptor closes the kernel frees it, so a crashed daemon leaves nothing to
 * collect. A store without reflink is refused at open: a full copy per sandbox would be
 * slow and large, and silently so.
 *
 * <p>A layer is its sandbox's own disk, and the store never overcommits: every layer a VM
 * holds is promised the blocks it may still take (its size less what it has written beyond
 * its image), and a new layer is made only when the store's free space covers every such
 * promise and the new layer's size. So a full layer is its own guest's ENOSPC, and never
 * another sandbox's EIO; a start the store cannot hold is refused before it makes anything,
 * naming the store and its numbers. Blocks a guest frees come back: its disk passes discard
 * through (QEMU punches holes in the layer), and the guest's ext4 discards what it frees.
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
    private final int defaultMiB;
    private final AtomicLong counter = new AtomicLong();
    /** Formatted images by size in MiB. */
    private final Map<Integer, Image> images = new ConcurrentHashMap<>();
    /** By size, the bytes a fresh clone of its image has allocated (which it shares): what it does not owe. */
    private final Map<Integer, Long> cloneAllocated = new ConcurrentHashMap<>();
    /** The layers VMs hold, each with the promise it is owed. Guarded by itself, with every admission. */
    private final Set<Held> held = new HashSet<>();

    private record Image(Path path, long allocated) {}

    /**
     * A layer a VM holds, known by a descriptor of the store's own (O_PATH: it keeps the
     * file, reads only its size and blocks).
     */
    static final class Held {
        final int fd;
        final long shared;

        /** {@code shared}: the bytes it had allocated when it was cloned (its image's, shared). */
        Held(int fd, long shared) {
            this.fd = fd;
            this.shared = shared;
        }

        /** Its size and blocks now; null only were its file gone (a descriptor the store holds does not fail fstat). */
        Syscalls.Stat stat() {
            try {
                return Syscalls.fstat(fd);
            } catch (Syscalls.SyscallException e) {
                return null;
            }
        }

        /** The blocks it may still take, by {@code st}: its size, less what it has allocated beyond its image's. */
        long promised(Syscalls.Stat st) {
            return st == null ? 0 : Math.max(0, st.size() - Math.max(0, st.blocks() * 512 - shared));
        }
    }

    private WritableLayerStore(Path dir, int defaultMiB) {
        this.dir = dir;
        this.defaultMiB = defaultMiB;
    }

    /**
     * Opens the store in {@code dir}, formatting the ext4 image of {@code sizeMiB} if it is
     * not there yet, removing layers left by a crash between clone and unlink, and checking
     * that the filesystem clones.
     */
    public static WritableLayerStore open(Path dir, int sizeMiB) throws StoreException {
        checkSize(sizeMiB);
        try {
            Files.createDirectories(dir);
            try (Stream<Path> entries = Files.list(dir)) {
                for (Path p : entries.filter(p -> p.getFileName().toString().startsWith(LAYER)).toList()) {
                    LOG.log(Level.INFO, "writable layer store: removing {0}, left by a crash", p);
                    Files.deleteIfExists(p);
                }
            }
        } catch (IOException e) {
            throw new StoreException("open writable layer store " + dir + ": " + e.getMessage(), e);
        }
        WritableLayerStore store = new WritableLayerStore(dir, sizeMiB);
        store.imageOf(sizeMiB);
        try {
            store.create("probe", sizeMiB).close();
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

    /** The smallest and largest layer, in MiB. */
    public static final int MIN_MIB = 16, MAX_MIB = 1 << 20;

    /** Refuses a layer size outside {@link #MIN_MIB}..{@link #MAX_MIB}, naming it. */
    public static void checkSize(int sizeMiB) {
        if (sizeMiB < MIN_MIB || sizeMiB > MAX_MIB) {
            throw new IllegalArgumentException("writable layer size " + sizeMiB + " MiB is outside " + MIN_MIB + ".." + MAX_MIB);
        }
    }

    /**
     * The formatted ext4 image of {@code sizeMiB} that new layers of that size are cloned
     * from (formatted now on first need): a template clones it too, for a disk of its own
     * that its guest mounts before the save and its clones' layers are cloned from.
     */
    public Path image(int sizeMiB) throws StoreException {
        checkSize(sizeMiB);
        return imageOf(sizeMiB).path();
    }

    /** Where the store in {@code dir} keeps (or will keep) its image of {@code sizeMiB}. */
    public static Path imagePath(Path dir, int sizeMiB) {
        return dir.resolve("ext4-" + sizeMiB + "M.img");
    }

    /** The image layers of {@code sizeMiB} are cloned from, formatted on first need. */
    private Image imageOf(int sizeMiB) throws StoreException {
        Image known = images.get(sizeMiB);
        if (known != null) {
            return known;
        }
        synchronized (images) {
            known = images.get(sizeMiB);
            if (known != null) {
                return known;
            }
            Path path = imagePath(dir, sizeMiB);
            try {
                if (!Files.exists(path)) {
                    format(path, (long) sizeMiB << 20);
                }
                int fd = Syscalls.open(path, Syscalls.O_PATH | Syscalls.O_CLOEXEC, 0);
                try {
                    known = new Image(path, Syscalls.fstat(fd).blocks() * 512);
                } finally {
                    Syscalls.closeQuietly(fd);
                }
            } catch (IOException e) {
                throw new StoreException("format " + path + ": " + e.getMessage(), e);
            } catch (Syscalls.SyscallException e) {
                throw new StoreException("open " + path + ": " + e.getMessage(), e);
            }
            images.put(sizeMiB, known);
            return known;
        }
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

    /** The size of a layer nobody asked a size for. */
    public int defaultMiB() {
        return defaultMiB;
    }

    /**
     * Clones, opens and unlinks a new layer of {@code sizeMiB} for {@code sandboxId}, once
     * the store can promise it every block ({@link #requireRoom}); the store counts it as
     * held until it is closed unhanded, or until what {@link WritableLayer#heldUntil} names.
     */
    public WritableLayer create(String sandboxId, int sizeMiB) throws StoreException {
        return create(sandboxId, sizeMiB, null);
    }

    /**
     * As {@link #create(String, int)}, cloned from {@code from}: a template's disk in this
     * store, of {@code sizeMiB} (its guest mounted it before the save, so its clones' layers
     * must be copies of it); null: the size's formatted image.
     */
    public WritableLayer create(String sandboxId, int sizeMiB, Path from) throws StoreException {
        checkSize(sizeMiB);
        Path source = from != null ? from : imageOf(sizeMiB).path();
        if (from != null && !dir.equals(from.getParent())) {
            throw new StoreException("create writable layer sandbox=" + sandboxId + ": " + from + " is not in the store " + dir);
        }
        Path path = dir.resolve(LAYER + ProcessHandle.current().pid() + "-" + counter.incrementAndGet());
        int src = -1;
        int dst = -1;
        int own = -1;
        try {
            synchronized (held) {
                requireRoom(sandboxId, sizeMiB);
                src = Syscalls.open(source, Syscalls.O_RDONLY | Syscalls.O_CLOEXEC, 0);
                long bytes = Syscalls.fstat(src).size();
                if (bytes != (long) sizeMiB << 20) {
                    throw new StoreException("create writable layer sandbox=" + sandboxId + ": " + source + " holds "
                            + bytes + " bytes, not " + sizeMiB + " MiB");
                }
                dst = Syscalls.open(path, Syscalls.O_RDWR | Syscalls.O_CREAT | Syscalls.O_EXCL | Syscalls.O_CLOEXEC, 0600);
                try {
                    Syscalls.ioctl(dst, FICLONE, src);
                } finally {
                    Syscalls.unlink(path);
                }
                own = Syscalls.reopen(dst, Syscalls.O_PATH);
                long shared = Syscalls.fstat(own).blocks() * 512;
                cloneAllocated.putIfAbsent(sizeMiB, shared);
                Held h = new Held(own, shared);
                held.add(h);
                own = -1;
                WritableLayer layer = new WritableLayer(dst, (long) sizeMiB << 20, this, h);
                dst = -1;
                return layer;
            }
        } catch (Syscalls.SyscallException e) {
            throw new StoreException(explain(sandboxId, e), e);
        } finally {
            Syscalls.closeQuietly(src);
            Syscalls.closeQuietly(dst);
            Syscalls.closeQuietly(own);
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
        Path image = imagePath(nodeStore, sizeMiB);
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new StoreException("make store " + dir + ": " + e.getMessage(), e);
        }
        cloneFile(image, dir.resolve(image.getFileName()));
    }

    /**
     * Clones {@code from} into the new file {@code to} (mode 0600) on the same filesystem:
     * a copy that shares every block until either is written.
     */
    public static void cloneFile(Path from, Path to) throws StoreException {
        int src = -1;
        int dst = -1;
        try {
            src = Syscalls.open(from, Syscalls.O_RDONLY | Syscalls.O_CLOEXEC, 0);
            dst = Syscalls.open(to, Syscalls.O_RDWR | Syscalls.O_CREAT | Syscalls.O_EXCL | Syscalls.O_CLOEXEC, 0600);
            Syscalls.ioctl(dst, FICLONE, src);
        } catch (Syscalls.SyscallException e) {
            if (dst >= 0) {
                try {
                    Files.deleteIfExists(to);
                } catch (IOException ignored) {
                    // the error below names it
                }
            }
            throw new StoreException(explain(to.getParent(), "clone " + from, e), e);
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

    /** What the store keeps free beyond every promise: room for the filesystem's own metadata. */
    public static final long MIN_FREE_BYTES = 64L << 20;

    /**
     * Refuses a layer of {@code sizeMiB} the store cannot promise, naming the store and its
     * numbers: the free space must cover what every held layer may still take, the new
     * layer's size and {@link #MIN_FREE_BYTES}. A disk is a clone whose blocks are allocated
     * as its guest writes them; without the promise, a store that filled would fail some
     * other guest's next write with EIO. A start taking a spare is checked the same (the
     * pool makes another).
     */
    public void requireRoom(String sandboxId, int sizeMiB) throws StoreException {
        long free;
        try {
            free = Files.getFileStore(dir).getUsableSpace();
        } catch (IOException e) {
            throw new StoreException("store " + dir + ": free space: " + e.getMessage(), e);
        }
        long promised = 0;
        int layers;
        synchronized (held) {
            for (Held h : held) {
                promised += h.promised(h.stat());
            }
            layers = held.size();
        }
        long need = ((long) sizeMiB << 20) + MIN_FREE_BYTES;
        if (free - promised < need) {
            throw new StoreException("create writable layer sandbox=" + sandboxId + " in " + dir + ": the store is full ("
                    + free + " bytes free, " + promised + " of them promised to the " + layers + " layers VMs hold; a layer of "
                    + sizeMiB + " MiB needs " + need + " more)");
        }
    }

    /** What the held layers have allocated and may still take, in bytes, and how many there are. */
    public record Usage(int layers, long allocated, long promised) {}

    public Usage usage() {
        synchronized (held) {
            long allocated = 0;
            long promised = 0;
            for (Held h : held) {
                Syscalls.Stat st = h.stat();
                allocated += st == null ? 0 : st.blocks() * 512;
                promised += h.promised(st);
            }
            return new Usage(held.size(), allocated, promised);
        }
    }

    /** Counts {@code h} held until {@code gone} completes (its VM has exited). */
    void holdUntil(Held h, java.util.concurrent.CompletableFuture<?> gone) {
        gone.whenComplete((x, e) -> release(h));
    }

    /** Stops counting {@code h}: its VM is gone, or it was never handed to one. */
    void release(Held h) {
        synchronized (held) {
            if (!held.remove(h)) {
                return;
            }
        }
        Syscalls.closeQuietly(h.fd);
    }

    /**
     * Counts again the layer the running VM {@code vmPid} holds (a previous daemon made it),
     * until {@code gone}: the one of its descriptors that is a layer of this store. False when
     * it holds none.
     */
    public boolean adopt(String sandboxId, long vmPid, java.util.concurrent.CompletableFuture<?> gone) {
        Path fds = Path.of("/proc", Long.toString(vmPid), "fd");
        String prefix = dir.resolve(LAYER).toString();
        try (Stream<Path> s = Files.list(fds)) {
            for (Path fd : s.toList()) {
                String target;
                try {
                    target = Files.readSymbolicLink(fd).toString();
                } catch (IOException closedMeanwhile) {
                    continue;
                }
                if (!target.startsWith(prefix) || !target.endsWith(" (deleted)")) {
                    continue;
                }
                long size = Files.size(fd);
                // What a fresh clone of its size shares; before this daemon cloned one, its image's
                // (no less: a clone shares at most its image's blocks, so the promise errs high).
                int mib = (int) Math.min(size >> 20, MAX_MIB);
                Long shared = cloneAllocated.get(mib);
                Held h = new Held(Syscalls.open(fd, Syscalls.O_PATH | Syscalls.O_CLOEXEC, 0), shared != null ? shared
                        : size == (long) mib << 20 && mib >= MIN_MIB ? imageOf(mib).allocated() : 0);
                synchronized (held) {
                    held.add(h);
                }
                holdUntil(h, gone);
                return true;
            }
        } catch (IOException | Syscalls.SyscallException | StoreException e) {
            LOG.log(Level.WARNING, "writable layer store: the layer of sandbox={0} (VM pid {1}): {2}", sandboxId, vmPid,
                    e.getMessage());
        }
        return false;
    }

    public Path dir() {
        return dir;
    }

    /** The image layers of the default size are cloned from. */
    public Path template() {
        return dir.resolve("ext4-" + defaultMiB + "M.img");
    }
}
