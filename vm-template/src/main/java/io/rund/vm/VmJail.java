package io.rund.vm;

import io.rund.rootfs.SandboxHelper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.BitSet;
import java.util.List;

/**
 * How VMs are confined on the host: each hypervisor process is started by {@code rund-jail}
 * (a small static C program) as a uid of its own, from {@code base + 1 ..  base + count},
 * in group {@code base}, with no capabilities and no_new_privs; what it needs and may not
 * open itself (its disk, its tap, its sockets) it gets as descriptors. Two live VMs never
 * share a uid, so a hypervisor a guest took over cannot reach another VM's process. Files
 * every VM reads (a template's RAM and state) are owned by root, group {@code base}, mode
 * 0640; a file one VM writes (a template being built) is handed to its uid for the build.
 * A sandbox's helper (its virtio-fs back-end) runs as its VM's uid, started by the same
 * jailer: the kernel then lets it reach that VM's memory and no other's.
 *
 * <p>Threads: any; the uid set is guarded by this object.
 */
public final class VmJail {

    /** How many VMs may run at once under one jail. */
    public static final int UIDS = 1024;

    private final Path jailer;
    private final int base;
    private final BitSet inUse = new BitSet(UIDS);

    public VmJail(Path jailer, int base) {
        if (base < 1000 || (long) base + UIDS > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("vm_uid_base " + base + " is outside 1000.." + (Integer.MAX_VALUE - UIDS));
        }
        this.jailer = jailer;
        this.base = base;
    }

    public Path jailer() {
        return jailer;
    }

    /** The group every VM runs in, which may read the files VMs share. */
    public int gid() {
        return base;
    }

    /** A uid no live VM has; give it back with {@link #release}. */
    public synchronized int acquire() throws HypervisorException {
        int i = inUse.nextClearBit(0);
        if (i >= UIDS) {
            throw new HypervisorException("no free VM uid: all " + UIDS + " of " + (base + 1) + ".." + (base + UIDS)
                    + " belong to running VMs", null);
        }
        inUse.set(i);
        return base + 1 + i;
    }

    /**
     * Marks {@code uid} as taken: a running VM's, adopted from a previous daemon. False when
     * it is not one of this jail's uids.
     */
    public synchronized boolean reserve(int uid) {
        int i = uid - base - 1;
        if (i < 0 || i >= UIDS) {
            return false;
        }
        inUse.set(i);
        return true;
    }

    /** Gives {@code uid} back once its VM's process is gone. */
    public synchronized void release(int uid) {
        int i = uid - base - 1;
        if (i >= 0 && i < UIDS) {
            inUse.clear(i);
        }
    }

    /**
     * Gives {@code uid} back once every one of {@code processes} has exited: a sandbox's VM
     * and its helpers share a uid, which no other sandbox may get while any of them lives.
     */
    public void releaseWhenGone(int uid, List<ProcessHandle> processes) {
        java.util.concurrent.CompletableFuture.allOf(processes.stream().map(ProcessHandle::onExit)
                .toArray(java.util.concurrent.CompletableFuture[]::new)).thenRun(() -> release(uid));
    }

    /** How a sandbox's helper (rund-helper, installed beside the jailer) runs: as {@code uid}, this jail's group. */
    public SandboxHelper.Jail helperJail(int uid) {
        return new SandboxHelper.Jail(jailer, helper(), uid, base);
    }

    /** The helper binary: rund-helper beside rund-jail. */
    public Path helper() {
        return jailer.resolveSibling("rund-helper");
    }

    public synchronized int inUse() {
        return inUse.cardinality();
    }

    /**
     * Lets every VM read {@code p}: owner root, group {@link #gid}, mode 0750 (directory) or
     * 0640. For a directory, every directory above it must let the VMs pass too: its parent,
     * when root's, closed to others and holding nothing else (as earlier daemons made
     * /dev/shm/rund), is opened for passing through (o+x, nothing listed or read); any other
     * closed ancestor is an error naming it.
     */
    public void grantRead(Path p) throws IOException {
        setOwner(p, 0, base);
        boolean dir = Files.isDirectory(p, LinkOption.NOFOLLOW_LINKS);
        Files.setPosixFilePermissions(p, PosixFilePermissions.fromString(dir ? "rwxr-x---" : "rw-r-----"));
        if (!dir) {
            return;
        }
        Path parent = p.toAbsolutePath().getParent();
        for (Path a = parent; a != null; a = a.getParent()) {
            java.util.Set<java.nio.file.attribute.PosixFilePermission> perms = Files.getPosixFilePermissions(a);
            if (perms.contains(java.nio.file.attribute.PosixFilePermission.OTHERS_EXECUTE)
                    || (perms.contains(java.nio.file.attribute.PosixFilePermission.GROUP_EXECUTE)
                    && ((Integer) Files.getAttribute(a, "unix:gid")) == base)) {
                continue; // the VMs' group passes
            }
            if (a.equals(parent) && ((Integer) Files.getAttribute(a, "unix:uid")) == 0 && holdsOnly(a, p)) {
                perms.add(java.nio.file.attribute.PosixFilePermission.OTHERS_EXECUTE);
                perms.add(java.nio.file.attribute.PosixFilePermission.GROUP_EXECUTE);
                Files.setPosixFilePermissions(a, perms);
                continue;
            }
            throw new IOException("VMs (uids of group " + base + ") cannot pass through " + a + " to reach " + p
                    + ": it is mode " + PosixFilePermissions.toString(perms) + " (chmod o+x " + a + ")");
        }
    }

    /** Whether {@code dir} holds nothing but {@code entry}: a directory that exists for it alone, never /root. */
    private static boolean holdsOnly(Path dir, Path entry) throws IOException {
        try (java.util.stream.Stream<Path> s = Files.list(dir)) {
            return s.map(Path::getFileName).toList().equals(java.util.List.of(entry.getFileName()));
        }
    }

    /** Hands {@code p} to the VM of {@code uid} (a file it writes), group {@link #gid}. */
    public void giveTo(Path p, int uid) throws IOException {
        setOwner(p, uid, base);
    }

    private static void setOwner(Path p, int uid, int gid) throws IOException {
        Files.setAttribute(p, "unix:uid", uid, LinkOption.NOFOLLOW_LINKS);
        Files.setAttribute(p, "unix:gid", gid, LinkOption.NOFOLLOW_LINKS);
    }

    @Override
    public String toString() {
        return "uids " + (base + 1) + ".." + (base + UIDS) + ", group " + base + ", by " + jailer;
    }
}
