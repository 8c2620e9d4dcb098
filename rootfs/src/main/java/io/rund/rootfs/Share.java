package io.rund.rootfs;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One of a sandbox's shares: a directory served to its VM over virtio-fs by a helper of
 * its own, whose root it is. What it serves is mounted below it, one new directory each;
 * {@link ReadOnlyLayer} (images) and {@link HostDirShare} (host directories) are its two uses.
 *
 * <p>The share is a small tmpfs at {@code <sandbox dir>/<kind's name>}, read-only except
 * while a directory is made or removed, and a shared mount: the helper's mount namespace
 * holds a slave copy of it as its root, so what is mounted under the share later (the next
 * container of a pod) appears to the helper, and so to the guest, and what is unmounted
 * here disappears there. Each mount gets a directory name never used before in this
 * sandbox, so a guest that caches cannot find a removed container's files under a new
 * container's name.
 *
 * <p>Threads: any; changes are serialised.
 */
final class Share implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(Share.class.getName());
    private static final long SHARE_FLAGS = Syscalls.MS_NOSUID | Syscalls.MS_NODEV | Syscalls.MS_NOEXEC;

    /** What is mounted on a new directory of the share. */
    interface Mounter {
        void mount(Path mountpoint) throws IOException, Syscalls.SyscallException;
    }

    private final String sandboxId;
    private final Path path;
    private final SandboxHelper.Kind kind;
    private volatile SandboxHelper helper;
    private final AtomicInteger sequence = new AtomicInteger();

    Share(String sandboxId, Path path, SandboxHelper.Kind kind, SandboxHelper helper) {
        this.sandboxId = sandboxId;
        this.path = path;
        this.kind = kind;
        this.helper = helper;
    }

    /**
     * The share already mounted at its place in {@code dir} and served by {@code helper}: a
     * spare VM's (empty), or a running sandbox's that a previous daemon started, whose
     * directories' numbers are never used again.
     */
    static Share adopt(String sandboxId, Path dir, SandboxHelper.Kind kind, SandboxHelper helper) throws StoreException {
        Share share = new Share(sandboxId, kind.share(dir), kind, helper.in(dir, kind));
        try (var names = Files.list(share.path)) {
            for (Path p : names.toList()) {
                String n = p.getFileName().toString();
                int dot = n.lastIndexOf('.');
                if (dot > 0 && n.substring(dot + 1).matches("[0-9]{1,9}")) {
                    share.sequence.accumulateAndGet(Integer.parseInt(n.substring(dot + 1)), Math::max);
                }
            }
        } catch (IOException e) {
            throw new StoreException("share " + share.path + " sandbox=" + sandboxId + ": " + e.getMessage(), e);
        }
        return share;
    }

    /** Mounts the share of {@code kind} in {@code dir}, read-only and shared, for a helper to serve. */
    static Path mount(Path dir, SandboxHelper.Kind kind) throws StoreException {
        Path share = kind.share(dir);
        try {
            Files.createDirectories(share);
            Syscalls.mount("rund-share", share, "tmpfs", SHARE_FLAGS | Syscalls.MS_RDONLY, "size=64k,nr_inodes=4096,mode=0755");
            Syscalls.mount(null, share, null, Syscalls.MS_SHARED, null);
        } catch (IOException | Syscalls.SyscallException e) {
            unmount(share);
            throw new StoreException("mount the share at " + share + ": " + e.getMessage(), e);
        }
        return share;
    }

    /** Mounts the share of {@code kind} in {@code dir} and starts its helper, as {@code jail} says. */
    static Share start(String sandboxId, Path dir, SandboxHelper.Kind kind, SandboxHelper.Jail jail) throws StoreException {
        Path share = mount(dir, kind);
        try {
            return new Share(sandboxId, share, kind, SandboxHelper.start(sandboxId, dir, share, jail,
                    SandboxHelper.Limits.DEFAULT, kind));
        } catch (StoreException e) {
            unmount(share);
            throw e;
        }
    }

    /**
     * Mounts what {@code mounter} mounts on a new directory of the share.
     *
     * @param what names it in an error
     * @return the directory's path within the share, as the guest sees it ("/name")
     */
    synchronized String attach(String containerId, String what, Mounter mounter) throws StoreException {
        String name = containerId + "." + sequence.incrementAndGet();
        Path mountpoint = path.resolve(name);
        try {
            whileWritable(() -> Files.createDirectory(mountpoint));
            mounter.mount(mountpoint);
        } catch (IOException | Syscalls.SyscallException e) {
            remove(name);
            throw new StoreException("share " + path + " sandbox=" + sandboxId + " container=" + containerId + ": mount "
                    + what + " at " + mountpoint + ": " + e.getMessage(), e);
        }
        return "/" + name;
    }

    /** Unmounts a directory {@link #attach} returned and removes it; idempotent. */
    synchronized void remove(String name) {
        Path mountpoint = path.resolve(name.startsWith("/") ? name.substring(1) : name);
        if (!mountpoint.getParent().equals(path)) {
            throw new IllegalArgumentException("directory " + name + " is not one of share " + path + "'s");
        }
        detach(mountpoint);
        try {
            whileWritable(() -> Files.deleteIfExists(mountpoint));
        } catch (IOException | Syscalls.SyscallException e) {
            LOG.log(Level.WARNING, "share {0} sandbox={1}: remove {2}: {3}", path, sandboxId, mountpoint, e.getMessage());
        }
    }

    private interface ShareChange {
        void run() throws IOException;
    }

    /**
     * Changes the share's own directory: its superblock is remounted read-write for the
     * change and read-only after; what is mounted on it keeps its own flags.
     */
    private void whileWritable(ShareChange change) throws IOException, Syscalls.SyscallException {
        Syscalls.mount(null, path, null, Syscalls.MS_REMOUNT | SHARE_FLAGS, null);
        try {
            change.run();
        } finally {
            Syscalls.mount(null, path, null, Syscalls.MS_REMOUNT | SHARE_FLAGS | Syscalls.MS_RDONLY, null);
        }
    }

    SandboxHelper helper() {
        return helper;
    }

    /**
     * Ends the helper and starts another on the same share, mounts included: a helper serves
     * one VM in its life, and a VM whose launch failed took it.
     */
    void restartHelper(SandboxHelper.Jail jail) throws StoreException {
        SandboxHelper old = helper;
        old.close();
        helper = SandboxHelper.start(sandboxId, path.getParent(), path, jail, SandboxHelper.Limits.DEFAULT, kind);
        LOG.log(Level.INFO, "share {0} sandbox={1}: {2} replaces {3}", path, sandboxId, helper, old);
    }

    /** Stops the helper and unmounts the share with everything on it; idempotent. */
    @Override
    public void close() {
        helper.close();
        unmount(path);
    }

    /**
     * Detaches whatever is mounted at {@code mountpoint}, with everything mounted below it,
     * and removes the directory; for release and for cleaning up after a crashed daemon.
     * Nothing mounted is fine.
     */
    static void unmount(Path mountpoint) {
        detach(mountpoint);
        try {
            Files.deleteIfExists(mountpoint);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "remove {0}: {1}", mountpoint, e.getMessage());
        }
    }

    private static void detach(Path mountpoint) {
        try {
            Syscalls.umount2(mountpoint, Syscalls.MNT_DETACH);
        } catch (Syscalls.SyscallException e) {
            if (e.errno() != Syscalls.EINVAL && e.errno() != Syscalls.ENOENT) {
                LOG.log(Level.WARNING, "unmount {0}: {1}", mountpoint, e.getMessage());
            }
        }
    }
}
