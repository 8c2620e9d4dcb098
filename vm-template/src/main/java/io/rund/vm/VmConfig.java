package io.rund.vm;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * What a VM is made of, independent of the hypervisor that runs it.
 *
 * @param sandboxId names the VM in logs and errors
 * @param dir per-sandbox directory (mode 0700) for the VM's sockets and console log
 * @param kernel an uncompressed vmlinux with a PVH entry point
 * @param initramfs the agent's initramfs
 * @param vcpus 1..64
 * @param memoryMiB 64..65536
 * @param kernelArgs appended to the hypervisor's own kernel command line; may be empty
 * @param disks virtio-blk disks, found in the guest by serial
 * @param sharedDirs virtio-fs devices, each served by a vhost-user backend on a socket
 * @param ram where guest RAM lives: anonymous and shareable (the default), a template's
 *     file being built, or a template's file mapped privately by a clone
 * @param tap null for no network device; else the name of the tap device the hypervisor
 *     creates in the host's network namespace for the VM's virtio-net device (gone when
 *     the VM ends). A template and its clones must agree on having one.
 * @param uid the uid a jailed VM runs as, reserved by the caller ({@link VmJail#acquire}) because
 *     the VM's helper runs as it too, and given back by it; 0 for a VM that is not jailed
 */
public record VmConfig(String sandboxId, Path dir, Path kernel, Path initramfs, int vcpus, int memoryMiB,
        String kernelArgs, List<Disk> disks, List<SharedDir> sharedDirs, Ram ram, String tap, int uid) {

    /** The guest agent finds a sandbox's image share by this virtio-fs tag. */
    public static final String LOWER_TAG = "lower";
    /** ... the share of host directories its containers bind by this one. */
    public static final String HOST_DIRS_TAG = "hostdirs";
    /** ... and its writable disk by this virtio-blk serial. */
    public static final String UPPER_SERIAL = "upper0";

    /**
     * A sandbox's VM, the one device shape every sandbox, spare and template has, in this
     * order (a clone must find its template's devices): the writable {@code disk}, the image
     * share served on {@code fsSocket}, the host-directory share on {@code hostSocket}, a
     * network device on {@code tap} (null: none).
     */
    public static VmConfig sandbox(String id, Path dir, Path kernel, Path initramfs, int vcpus, int memoryMiB, Path disk,
            Path fsSocket, Path hostSocket, Ram ram, String tap, int uid) {
        return new VmConfig(id, dir, kernel, initramfs, vcpus, memoryMiB, "", List.of(new Disk(UPPER_SERIAL, disk, false)),
                List.of(new SharedDir(LOWER_TAG, fsSocket), new SharedDir(HOST_DIRS_TAG, hostSocket)),
                ram, tap, uid);
    }

    /** A VM that is not jailed (uid 0). */
    public VmConfig(String sandboxId, Path dir, Path kernel, Path initramfs, int vcpus, int memoryMiB,
            String kernelArgs, List<Disk> disks, List<SharedDir> sharedDirs, Ram ram, String tap) {
        this(sandboxId, dir, kernel, initramfs, vcpus, memoryMiB, kernelArgs, disks, sharedDirs, ram, tap, 0);
    }

    /** A VM that boots, its RAM an anonymous shareable memfd, without a network device. */
    public VmConfig(String sandboxId, Path dir, Path kernel, Path initramfs, int vcpus, int memoryMiB,
            String kernelArgs, List<Disk> disks, List<SharedDir> sharedDirs) {
        this(sandboxId, dir, kernel, initramfs, vcpus, memoryMiB, kernelArgs, disks, sharedDirs, Ram.ANONYMOUS, null);
    }

    /** A VM without a network device. */
    public VmConfig(String sandboxId, Path dir, Path kernel, Path initramfs, int vcpus, int memoryMiB,
            String kernelArgs, List<Disk> disks, List<SharedDir> sharedDirs, Ram ram) {
        this(sandboxId, dir, kernel, initramfs, vcpus, memoryMiB, kernelArgs, disks, sharedDirs, ram, null);
    }

    private static final java.util.regex.Pattern TAP = java.util.regex.Pattern.compile("[A-Za-z0-9_.-]{1,15}");
    private static final java.security.SecureRandom RANDOM = new java.security.SecureRandom();

    /** A fresh tap device name, "rt" and 12 random hex digits: unique among the host's interfaces in practice. */
    public static String newTapName() {
        return "rt" + java.util.HexFormat.of().toHexDigits(RANDOM.nextLong()).substring(0, 12);
    }

    /**
     * Guest RAM. {@code file} null: an anonymous memfd. Otherwise a file (on tmpfs) mapped
     * shared (a template being built: what the guest writes lands in the file) or
     * privately (a clone: it reads the template's pages and copies only those it writes),
     * in which case {@code incomingState} holds the template's device state, loaded before
     * the clone runs.
     */
    public record Ram(Path file, boolean shared, Path incomingState) {
        public static final Ram ANONYMOUS = new Ram(null, true, null);

        public Ram {
            if (incomingState != null && (file == null || shared)) {
                throw new IllegalArgumentException("a clone maps its template's RAM file privately");
            }
        }

        /** A template being built: its RAM in {@code file}, which every clone will map. */
        public static Ram template(Path file) {
            return new Ram(file, true, null);
        }

        /** A clone of the template whose RAM is {@code file} and device state {@code state}. */
        public static Ram cloneOf(Path file, Path state) {
            return new Ram(file, false, state);
        }

        public boolean isClone() {
            return incomingState != null;
        }
    }

    /** A virtio-blk disk: a file (or /proc/self/fd/N path of an open, unlinked file). */
    public record Disk(String serial, Path file, boolean readOnly) {
        public Disk {
            Objects.requireNonNull(serial, "serial");
            Objects.requireNonNull(file, "file");
        }
    }

    /**
     * A virtio-fs device with guest tag {@code tag}, backed by vhost-user on {@code socket}
     * by a process that reaches the VM's memory (a jailed VM lets it, for hosts where Yama
     * lets only ancestors do that).
     */
    public record SharedDir(String tag, Path socket) {
        public SharedDir {
            Objects.requireNonNull(tag, "tag");
            Objects.requireNonNull(socket, "socket");
        }
    }

    public VmConfig {
        Objects.requireNonNull(sandboxId, "sandboxId");
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(kernel, "kernel");
        Objects.requireNonNull(initramfs, "initramfs");
        if (vcpus < 1 || vcpus > 64) {
            throw new IllegalArgumentException("vcpus " + vcpus + " is outside 1..64");
        }
        if (memoryMiB < 64 || memoryMiB > 65536) {
            throw new IllegalArgumentException("memoryMiB " + memoryMiB + " is outside 64..65536");
        }
        kernelArgs = kernelArgs == null ? "" : kernelArgs;
        disks = List.copyOf(disks);
        sharedDirs = List.copyOf(sharedDirs);
        ram = ram == null ? Ram.ANONYMOUS : ram;
        if (tap != null && !TAP.matcher(tap).matches()) {
            throw new IllegalArgumentException("tap name " + tap + " is not 1-15 characters of [A-Za-z0-9_.-]");
        }
    }

    public Path qmpSocket() {
        return dir.resolve("qmp.sock");
    }

    public Path agentSocket() {
        return dir.resolve("agent.sock");
    }

    public Path consoleLog() {
        return dir.resolve("console.log");
    }
}
