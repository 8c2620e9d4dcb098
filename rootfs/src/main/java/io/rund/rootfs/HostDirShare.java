package io.rund.rootfs;

import java.lang.System.Logger.Level;
import java.nio.file.Path;

/**
 * The host directories a sandbox's containers bind: each bound (read-only, or writable,
 * nosuid and nodev either way) in its own directory of the sandbox's second {@link Share}
 * ({@code <sandbox dir>/hostdirs}), served to the guest by a helper of its own ({@link
 * SandboxHelper.Kind#HOST_DIRS}) on a virtio-fs device of its own. The image share never
 * holds anything writable; this one holds nothing but these directories, so the helper
 * that writes, the one with capabilities to write as the guest's root, can reach nothing
 * else, and a directory bound read-only is read-only to it by its mount. What the container
 * writes is on the host at once; what the host writes the guest sees within a second (its
 * cache's lifetime on this share): a kubelet's configMap or secret update, which swaps a
 * {@code ..data} symlink, included.
 */
public final class HostDirShare implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(HostDirShare.class.getName());

    private final Share share;

    private HostDirShare(Share share) {
        this.share = share;
    }

    /** Mounts the share at {@code dir/hostdirs}, read-only and shared, for a helper to serve. */
    public static Path mountShare(Path dir) throws StoreException {
        return Share.mount(dir, SandboxHelper.Kind.HOST_DIRS);
    }

    /** Mounts the share at {@code dir/hostdirs} and starts its helper, as {@code jail} says. */
    public static HostDirShare start(String sandboxId, Path dir, SandboxHelper.Jail jail) throws StoreException {
        try {
            return new HostDirShare(Share.start(sandboxId, dir, SandboxHelper.Kind.HOST_DIRS, jail));
        } catch (StoreException e) {
            throw new StoreException("host-directory share sandbox=" + sandboxId + ": " + e.getMessage(), e);
        }
    }

    /** The share already mounted at {@code dir/hostdirs} and served by {@code helper} (a spare VM's); it owns both from here. */
    public static HostDirShare adopt(String sandboxId, Path dir, SandboxHelper helper) throws StoreException {
        return new HostDirShare(Share.adopt(sandboxId, dir, SandboxHelper.Kind.HOST_DIRS, helper));
    }

    /**
     * Lets the guest give files in the writable directories to a process's {@code uid} and
     * {@code gids} (its group first), or with {@code any} to every id, beside those allowed
     * before (see {@link SandboxHelper#allowOwners}).
     */
    public void allowOwners(boolean any, int uid, java.util.List<Integer> gids) throws StoreException {
        if (gids.isEmpty()) {
            throw new IllegalArgumentException("a process has a group");
        }
        try {
            share.helper().allowOwners(any, uid, gids);
        } catch (java.io.IOException e) {
            throw new StoreException("host-directory share: allow owners " + (any ? "any" : uid + " " + gids) + ": "
                    + e.getMessage(), e);
        }
    }

    /**
     * Binds host directory {@code source} in a new directory of the share, with the mounts
     * below it when {@code recursive}: read-only (each of them too), or writable as each is
     * on the host; with {@code followsHost} a slave of the host's mounts there (what the host
     * mounts below it later appears in it), else private; never their peer.
     *
     * @return the directory's path within the share, as the guest sees it ("/name")
     */
    public String addDirectory(String containerId, Path source, boolean recursive, boolean readOnly, boolean followsHost)
            throws StoreException {
        String name = share.attach(containerId, "host directory " + source, mountpoint -> {
            if (readOnly) {
                Syscalls.bindDirectoryReadOnly(source, mountpoint, recursive, followsHost);
            } else {
                Syscalls.bindDirectoryWritable(source, mountpoint, recursive, followsHost);
            }
        });
        LOG.log(Level.DEBUG, "host-directory share: {0} at {1}{2}", source, name, readOnly ? ", read-only" : "");
        return name;
    }

    /** Unmounts a directory {@link #addDirectory} returned and removes it; idempotent. */
    public void remove(String name) {
        share.remove(name);
    }

    /** The helper serving the share. */
    public SandboxHelper helper() {
        return share.helper();
    }

    /** Ends the helper and starts another on the same share (a VM whose launch failed took it). */
    public void restartHelper(SandboxHelper.Jail jail) throws StoreException {
        share.restartHelper(jail);
    }

    /** Stops the helper and unmounts the share with every directory on it; idempotent. */
    @Override
    public void close() {
        share.close();
    }

    /** Detaches {@code dir}'s share with everything on it, after a crashed daemon; nothing mounted is fine. */
    public static void unmountIn(Path dir) {
        Share.unmount(SandboxHelper.Kind.HOST_DIRS.share(dir));
    }
}
