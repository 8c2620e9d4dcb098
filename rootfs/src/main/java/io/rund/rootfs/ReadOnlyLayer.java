package io.rund.rootfs;

import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A sandbox's read-only layers: each container's image, joined read-only on the host in
 * its own directory of the sandbox's image {@link Share} ({@code <sandbox dir>/shared}),
 * served to the guest over virtio-fs by the sandbox's helper process ({@link
 * SandboxHelper}), whose root is the share. (Host directories go on the other share, {@link
 * HostDirShare}: they change under a running sandbox, images never do.)
 *
 * <p>From containerd's rootfs mount only the lower directories are used: an overlay's
 * {@code lowerdir=} (its upperdir and workdir, the host-side writable snapshot, are not:
 * writes go to the sandbox's writable layer), or a bind mount's source. Several lowers are
 * joined by an overlay without an upper directory, which the kernel makes read-only; one
 * lower is bind-mounted read-only. Every image is read-only before it is attached (the
 * helper's copy never was writable), nosuid and nodev. The guest caches with cache=always:
 * an image never changes under a running sandbox.
 */
public final class ReadOnlyLayer implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(ReadOnlyLayer.class.getName());

    private final String sandboxId;
    private final Share share;

    private ReadOnlyLayer(String sandboxId, Share share) {
        this.sandboxId = sandboxId;
        this.share = share;
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
     * Mounts the share at {@code dir/shared}, read-only and shared (see {@link Share}), for a
     * helper to serve; a spare VM's helper serves it before the share holds anything.
     */
    public static Path mountShare(Path dir) throws StoreException {
        return Share.mount(dir, SandboxHelper.Kind.IMAGES);
    }

    /** Mounts the share at {@code dir/shared} and starts the sandbox's helper serving it, as {@code jail} says. */
    public static ReadOnlyLayer start(String sandboxId, Path dir, SandboxHelper.Jail jail) throws StoreException {
        try {
            return log(new ReadOnlyLayer(sandboxId, Share.start(sandboxId, dir, SandboxHelper.Kind.IMAGES, jail)));
        } catch (StoreException e) {
            throw new StoreException("read-only layer sandbox=" + sandboxId + ": " + e.getMessage(), e);
        }
    }

    /**
     * The layer of a share already mounted at {@code dir/shared} ({@link #mountShare}) and
     * served by {@code helper} (a spare VM's, whose directory became the sandbox's, or a
     * running sandbox's after a daemon restart, its images mounted). The layer owns both
     * from here.
     */
    public static ReadOnlyLayer adopt(String sandboxId, Path dir, SandboxHelper helper) throws StoreException {
        return log(new ReadOnlyLayer(sandboxId, Share.adopt(sandboxId, dir, SandboxHelper.Kind.IMAGES, helper)));
    }

    private static ReadOnlyLayer log(ReadOnlyLayer layer) {
        LOG.log(Level.INFO, "read-only layer sandbox={0}: served by {1} on {2}", layer.sandboxId, layer.helper(),
                layer.socket());
        return layer;
    }

    /**
     * Mounts a container's image, its lower directories as {@link #lowerDirs} checked them,
     * read-only in a new directory of the share.
     *
     * @return the directory's path within the share, as the guest sees it ("/name")
     */
    public String add(String containerId, List<Path> lowers) throws StoreException {
        String name = share.attach(containerId, "image " + lowers, mountpoint -> {
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
        });
        LOG.log(Level.DEBUG, "read-only layer sandbox={0}: {1} lower(s) at {2}", sandboxId, lowers.size(), name);
        return name;
    }

    /** Unmounts an image {@link #add} returned and removes its directory; idempotent. */
    public void remove(String name) {
        share.remove(name);
    }

    public Path socket() {
        return helper().socket();
    }

    /** The helper serving the share. */
    public SandboxHelper helper() {
        return share.helper();
    }

    /**
     * Ends the helper and starts another on the same share, images included: a helper serves
     * one VM in its life, and a VM whose launch failed took it.
     */
    public void restartHelper(SandboxHelper.Jail jail) throws StoreException {
        share.restartHelper(jail);
    }

    /** Stops the helper and unmounts the share with every image on it; idempotent. */
    @Override
    public void close() {
        share.close();
        LOG.log(Level.DEBUG, "read-only layer sandbox={0}: released", sandboxId);
    }

    /**
     * Detaches sandbox directory {@code dir}'s image share with every image on it and removes
     * it; for release and for cleaning up after a crashed daemon. Nothing mounted is fine.
     */
    public static void unmountIn(Path dir) {
        Share.unmount(SandboxHelper.Kind.IMAGES.share(dir));
    }
}
