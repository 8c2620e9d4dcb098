package io.rund.sandbox.hypervisor;

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
 */
public record VmConfig(String sandboxId, Path dir, Path kernel, Path initramfs, int vcpus, int memoryMiB,
        String kernelArgs, List<Disk> disks, List<SharedDir> sharedDirs) {

    /** A virtio-blk disk: a file (or /proc/self/fd/N path of an open, unlinked file). */
    public record Disk(String serial, Path file, boolean readOnly) {
        public Disk {
            Objects.requireNonNull(serial, "serial");
            Objects.requireNonNull(file, "file");
        }
    }

    /** A virtio-fs device with guest tag {@code tag}, backed by vhost-user on {@code socket}. */
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
