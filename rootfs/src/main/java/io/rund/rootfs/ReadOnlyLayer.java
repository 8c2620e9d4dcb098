package io.rund.rootfs;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A sandbox's read-only layers: each container's image, joined read-only on the host in
 * its own directory of one share, served to the guest over virtio-fs by the sandbox's
 * helper process ({@link SandboxHelper}), whose root is the share.
 *
 * <p>From containerd's rootfs mount only the lower directories are used: an overlay's
 * {@code lowerdir=} (its upperdir and workdir, the host-side writable snapshot, are not:
 * writes go to the sandbox's writable layer), or a bind mount's source. Several lowers are
 * joined by an overlay without an upper directory, which the kernel makes read-only; one
 * lower is bind-mounted and remounted read-only.
 *
 * <p>The share is a small tmpfs at {@code <sandbox dir>/shared}, read-only except while a
 * directory is made or removed, and a shared mount: the helper's mount namespace holds a
 * slave copy of it as its root, so an image mounted under the share later (the next
 * container of a pod) appears to the helper, and so to the guest, and one unmounted here
 * disappears there. Every image is read-only before it is attached (the helper's copy
 * never was writable), nosuid and nodev. Each image gets a directory name never used before in this sandbox,
 * so the guest, which caches with cache=always (an image never changes under a running
 * sandbox), cannot find a removed container's files under a new container's name.
 */
public final class ReadOnlyLayer implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(ReadOnlyLayer.class.getName());
    private static final long SHARE_FLAGS = Syscalls.MS_NOSUID | Syscalls.MS_NODEV | Syscalls.MS_NOEXEC;

    private final String sandboxId;
    private final Path share;
    private volatile SandboxHelper helper;
    private final AtomicInteger sequence = new AtomicInteger();

    private ReadOnlyLayer(String sandboxId, Path share, SandboxHelper helper) {
        this.sandboxId = sandboxId;
        this.share = share;
        this.helper = helper;
    }

    /** The image's lower directories, top first, from containerd's rootfs mounts. */
    public static List<Path> lowerDirs(String containerId, List<RootfsMount> mounts) throws StoreException {
        String what = "read-only layer of container " + containerId + ": ";
        if (mounts.size() != 1) {
            throw new StoreException(what + "expected one rootfs mount, got " + mounts.size());
        }
        RootfsMount m = mounts.getFirst();
        List<Path> lowers = new ArrayList<>();
        switch (m.type()) {
            case "overlay" -> {
                for (String o : m.options()) {
                    if (o.startsWith("lowerdir=")) {
                        for (String d : o.substring("lowerdir=".length()).split(":")) {
                            lowers.add(Path.of(d));
                        }
                    }
                }
                if (lowers.isEmpty()) {
                    throw new StoreException(what + "overlay rootfs mount has no lowerdir option: " + m.options());
                }
            }
            case "bind", "rbind", "none" -> lowers.add(Path.of(m.source()));
            default -> throw new StoreException(what + "rootfs mount type " + m.type() + " is not overlay or bind");
        }
        for (Path d : lowers) {
            if (!d.isAbsolute() || !d.normalize().equals(d) || d.toString().contains(",")) {
                throw new StoreException(what + "lower directory " + d + " must be an absolute, normal path without commas");
            }
            if (!Files.isDirectory(d)) {
                throw new StoreException(what + "lower directory " + d + " does not exist");
            }
        }
        return lowers;
    }

    /**
     * Mounts the share at {@code dir/shared}, read-only and shared (see the class comment),
     * for a helper to serve; a spare VM's helper serves it before the share holds anything.
     */
    public static Path mountShare(Path dir) throws StoreException {
        Path share = dir.resolve("shared");
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

    /** Mounts the share at {@code dir/shared} and starts the sandbox's helper serving it, as {@code jail} says. */
    public static ReadOnlyLayer start(String sandboxId, Path dir, SandboxHelper.Jail jail) throws StoreException {
        Path share = mountShare(dir);
        try {
            return adopt(sandboxId, dir, SandboxHelper.start(sandboxId, dir, share, jail, SandboxHelper.Limits.DEFAULT));
        } catch (StoreException e) {
            unmount(share);
            throw new StoreException("read-only layer sandbox=" + sandboxId + ": " + e.getMessage(), e);
        }
    }

    /**
     * The layer of a share already mounted at {@code dir/shared} ({@link #mountShare}) and
     * served by {@code helper} (a spare VM's, whose directory became the sandbox's). The
     * layer owns both from here.
     */
    public static ReadOnlyLayer adopt(String sandboxId, Path dir, SandboxHelper helper) {
        Path share = dir.resolve("shared");
        LOG.log(Level.INFO, "read-only layer sandbox={0}: share {1} served by {2} on {3}", sandboxId, share, helper,
                helper.socket());
        return new ReadOnlyLayer(sandboxId, share, helper);
    }

    /**
     * Mounts a container's image, its lower directories as {@link #lowerDirs} checked them,
     * read-only in a new directory of the share.
     *
     * @return the directory's path within the share, as the guest sees it ("/name")
     */
    public synchronized String add(String containerId, List<Path> lowers) throws StoreException {
        String name = containerId + "." + sequence.incrementAndGet();
        Path mountpoint = share.resolve(name);
        String what = "read-only layer sandbox=" + sandboxId + " container=" + containerId + ": ";
        try {
            whileWritable(() -> Files.createDirectory(mountpoint));
            if (lowers.size() == 1) {
                Syscalls.bindReadOnly(lowers.getFirst(), mountpoint);
            } else {
                StringBuilder lower = new StringBuilder("lowerdir=");
                for (int i = 0; i < lowers.size(); i++) {
                    lower.append(i == 0 ? "" : ":").append(lowers.get(i));
                }
                Syscalls.mount("overlay", mountpoint, "overlay", Syscalls.MS_RDONLY | Syscalls.MS_NOSUID | Syscalls.MS_NODEV,
                        lower.toString());
            }
        } catch (IOException | Syscalls.SyscallException e) {
            remove(name);
            throw new StoreException(what + "mount " + lowers + " at " + mountpoint + ": " + e.getMessage(), e);
        }
        LOG.log(Level.DEBUG, "read-only layer sandbox={0}: {1} lower(s) at {2}", sandboxId, lowers.size(), mountpoint);
        return "/" + name;
    }

    /**
     * Mounts a host directory a container binds, read-only (with the mounts below it when
     * {@code recursive}), in a new directory of the share.
     *
     * @return the directory's path within the share, as the guest sees it ("/name")
     */
    public synchronized String addDirectory(String containerId, Path source, boolean recursive) throws StoreException {
        String name = containerId + "." + sequence.incrementAndGet();
        Path mountpoint = share.resolve(name);
        try {
            whileWritable(() -> Files.createDirectory(mountpoint));
            Syscalls.bindDirectoryReadOnly(source, mountpoint, recursive);
        } catch (IOException | Syscalls.SyscallException e) {
            remove(name);
            throw new StoreException("read-only layer sandbox=" + sandboxId + " container=" + containerId + ": bind "
                    + source + " at " + mountpoint + ": " + e.getMessage(), e);
        }
        return "/" + name;
    }

    /** Unmounts an image or directory {@link #add} or {@link #addDirectory} returned and removes its directory; idempotent. */
    public synchronized void remove(String name) {
        Path mountpoint = share.resolve(name.startsWith("/") ? name.substring(1) : name);
        if (!mountpoint.getParent().equals(share)) {
            throw new IllegalArgumentException("image directory " + name + " is not one of the share's");
        }
        detach(mountpoint);
        try {
            whileWritable(() -> Files.deleteIfExists(mountpoint));
        } catch (IOException | Syscalls.SyscallException e) {
            LOG.log(Level.WARNING, "read-only layer sandbox={0}: remove {1}: {2}", sandboxId, mountpoint, e.getMessage());
        }
    }

    private interface ShareChange {
        void run() throws IOException;
    }

    /**
     * Changes the share's own directory: its superblock is remounted read-write for the
     * change and read-only after; the images mounted on it keep their own flags.
     */
    private void whileWritable(ShareChange change) throws IOException, Syscalls.SyscallException {
        Syscalls.mount(null, share, null, Syscalls.MS_REMOUNT | SHARE_FLAGS, null);
        try {
            change.run();
        } finally {
            Syscalls.mount(null, share, null, Syscalls.MS_REMOUNT | SHARE_FLAGS | Syscalls.MS_RDONLY, null);
        }
    }

    public Path socket() {
        return helper.socket();
    }

    /** The helper serving the share. */
    public SandboxHelper helper() {
        return helper;
    }

    /**
     * Ends the helper and starts another on the same share, images included: a helper serves
     * one VM in its life, and a VM whose launch failed took it.
     */
    public void restartHelper(SandboxHelper.Jail jail) throws StoreException {
        SandboxHelper old = helper;
        old.close();
        helper = SandboxHelper.start(sandboxId, share.getParent(), share, jail, SandboxHelper.Limits.DEFAULT);
        LOG.log(Level.INFO, "read-only layer sandbox={0}: {1} replaces {2}", sandboxId, helper, old);
    }

    /** Stops the helper and unmounts the share with every image on it; idempotent. */
    @Override
    public void close() {
        helper.close();
        unmount(share);
        LOG.log(Level.DEBUG, "read-only layer sandbox={0}: released", sandboxId);
    }

    /**
     * Detaches whatever is mounted at {@code mountpoint}, with everything mounted below it,
     * and removes the directory; for release and for cleaning up after a crashed daemon
     * (the share of a sandbox directory is {@code <dir>/shared}). Nothing mounted is fine.
     */
    public static void unmount(Path mountpoint) {
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
