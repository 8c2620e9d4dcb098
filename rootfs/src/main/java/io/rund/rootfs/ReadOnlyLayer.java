package io.rund.rootfs;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A sandbox's read-only layer: the image's layers, joined read-only on the host and served
 * to the guest over virtio-fs by virtiofsd.
 *
 * <p>From containerd's rootfs mount only the lower directories are used: an overlay's
 * {@code lowerdir=} (its upperdir and workdir, the host-side writable snapshot, are not:
 * writes go to the sandbox's writable layer), or a bind mount's source. Several lowers are
 * joined by an overlay without an upper directory, which the kernel makes read-only; one
 * lower is bind-mounted and remounted read-only. Either way the mount lies at
 * {@code <sandbox dir>/lower}, and virtiofsd serves it with cache=always, as an image
 * layer never changes under a running sandbox.
 */
public final class ReadOnlyLayer implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(ReadOnlyLayer.class.getName());

    private final String sandboxId;
    private final Path mountpoint;
    private final Path socket;
    private final Process virtiofsd;

    private ReadOnlyLayer(String sandboxId, Path mountpoint, Path socket, Process virtiofsd) {
        this.sandboxId = sandboxId;
        this.mountpoint = mountpoint;
        this.socket = socket;
        this.virtiofsd = virtiofsd;
    }

    /** The image's lower directories, top first, from containerd's rootfs mounts. */
    public static List<Path> lowerDirs(String sandboxId, List<RootfsMount> mounts) throws StoreException {
        String what = "read-only layer sandbox=" + sandboxId + ": ";
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

    /** Mounts the lowers read-only at {@code dir/lower} and starts virtiofsd on {@code dir/virtiofsd.sock}. */
    public static ReadOnlyLayer prepare(String sandboxId, List<RootfsMount> mounts, Path dir, Path virtiofsdBinary)
            throws StoreException {
        List<Path> lowers = lowerDirs(sandboxId, mounts);
        Path mountpoint = dir.resolve("lower");
        Path socket = dir.resolve("virtiofsd.sock");
        String what = "read-only layer sandbox=" + sandboxId + ": ";
        try {
            Files.createDirectories(mountpoint);
            if (lowers.size() == 1) {
                Syscalls.mount(lowers.getFirst().toString(), mountpoint, null, Syscalls.MS_BIND, null);
                Syscalls.mount(null, mountpoint, null,
                        Syscalls.MS_BIND | Syscalls.MS_REMOUNT | Syscalls.MS_RDONLY | Syscalls.MS_NOSUID | Syscalls.MS_NODEV, null);
            } else {
                StringBuilder lower = new StringBuilder("lowerdir=");
                for (int i = 0; i < lowers.size(); i++) {
                    lower.append(i == 0 ? "" : ":").append(lowers.get(i));
                }
                Syscalls.mount("overlay", mountpoint, "overlay", Syscalls.MS_RDONLY | Syscalls.MS_NOSUID | Syscalls.MS_NODEV,
                        lower.toString());
            }
        } catch (IOException | Syscalls.SyscallException e) {
            unmount(mountpoint);
            throw new StoreException(what + "mount " + lowers + " at " + mountpoint + ": " + e.getMessage(), e);
        }
        Process virtiofsd;
        try {
            virtiofsd = new ProcessBuilder(virtiofsdBinary.toString(), "--socket-path=" + socket,
                    "-o", "source=" + mountpoint, "-o", "cache=always", "-o", "sandbox=namespace", "-o", "no_xattr")
                    .redirectErrorStream(true).redirectOutput(dir.resolve("virtiofsd.log").toFile()).start();
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (!Files.exists(socket)) {
                if (!virtiofsd.isAlive() || System.nanoTime() > end) {
                    virtiofsd.destroyForcibly().waitFor();
                    throw new StoreException(what + "virtiofsd did not start: "
                            + Files.readString(dir.resolve("virtiofsd.log")).strip());
                }
                Thread.sleep(5);
            }
        } catch (IOException | InterruptedException | StoreException e) {
            unmount(mountpoint);
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            throw e instanceof StoreException se ? se : new StoreException(what + "start virtiofsd: " + e.getMessage(), e);
        }
        LOG.log(Level.INFO, "read-only layer sandbox={0}: {1} lower(s) at {2}, virtiofsd pid {3}", sandboxId,
                lowers.size(), mountpoint, virtiofsd.pid());
        return new ReadOnlyLayer(sandboxId, mountpoint, socket, virtiofsd);
    }

    public Path socket() {
        return socket;
    }

    public long virtiofsdPid() {
        return virtiofsd.pid();
    }

    /** Stops virtiofsd and unmounts; idempotent. */
    @Override
    public void close() {
        virtiofsd.destroy();
        try {
            if (!virtiofsd.waitFor(5, TimeUnit.SECONDS)) {
                virtiofsd.destroyForcibly().waitFor();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        unmount(mountpoint);
        LOG.log(Level.DEBUG, "read-only layer sandbox={0}: released", sandboxId);
    }

    /**
     * Detaches whatever is mounted at {@code mountpoint} and removes the directory; for
     * release and for cleaning up after a crashed daemon. Nothing mounted is fine.
     */
    public static void unmount(Path mountpoint) {
        try {
            Syscalls.umount2(mountpoint, Syscalls.MNT_DETACH);
        } catch (Syscalls.SyscallException e) {
            if (e.errno() != Syscalls.EINVAL && e.errno() != Syscalls.ENOENT) {
                LOG.log(Level.WARNING, "unmount {0}: {1}", mountpoint, e.getMessage());
            }
        }
        try {
            Files.deleteIfExists(mountpoint);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "remove {0}: {1}", mountpoint, e.getMessage());
        }
    }
}
