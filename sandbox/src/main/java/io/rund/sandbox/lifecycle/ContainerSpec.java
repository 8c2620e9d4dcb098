package io.rund.sandbox.lifecycle;

import io.rund.rootfs.RootfsMount;
import java.util.List;
import java.util.Objects;

/**
 * One container of a sandbox: its image (containerd's rootfs mounts), its init process and
 * its resources. A sandbox starts with its first container, whose id it takes (in a pod,
 * the pause container's id is the pod's); later ones join through
 * {@link Sandbox#addContainer}. The shim fills it from an OCI bundle.
 *
 * @param memoryLimitBytes the container's memory limit; 0 for none
 * @param cpuQuotaMicros per 100 ms period; 0 for none
 * @param process the container's process in full (from an OCI spec); when null, one is
 *     made from args, env, cwd and terminal with a default capability set
 * @param volumes the pod's volumes this container mounts, kept in the VM
 * @param files small host files the container sees at a path (CRI's /etc/hosts,
 *     /etc/resolv.conf, /etc/hostname): copied into the VM when the container is created
 * @param netns the network namespace whose interface the VM takes (a pod's, made by the
 *     CNI plugin); null for none. Only the first container's counts: it makes the VM.
 */
public record ContainerSpec(String id, List<RootfsMount> rootfs, List<String> args, List<String> env, String cwd,
        String hostname, boolean terminal, long memoryLimitBytes, long cpuQuotaMicros,
        io.rund.agent.v1.Process process, List<Volume> volumes, List<FileMount> files, java.nio.file.Path netns) {

    /** A file of {@code data} bound onto {@code destination} in the container. */
    public record FileMount(String destination, byte[] data, boolean readOnly) {
        public FileMount {
            Objects.requireNonNull(destination, "destination");
            data = data.clone();
        }

        @Override
        public byte[] data() {
            return data.clone();
        }
    }

    /**
     * A pod volume (Kubernetes' emptyDir): a directory of the pod's disk in the VM, named
     * {@code name}, shared by every container of the pod that mounts it, and gone with the pod.
     */
    public record Volume(String name, String destination, boolean readOnly) {}

    public ContainerSpec(String id, List<RootfsMount> rootfs, List<String> args, List<String> env, String cwd,
            String hostname, boolean terminal, long memoryLimitBytes, long cpuQuotaMicros) {
        this(id, rootfs, args, env, cwd, hostname, terminal, memoryLimitBytes, cpuQuotaMicros, null, List.of(), List.of(),
                null);
    }

    public ContainerSpec {
        Objects.requireNonNull(id, "id");
        rootfs = List.copyOf(rootfs);
        args = List.copyOf(args);
        env = List.copyOf(env);
        cwd = cwd == null || cwd.isEmpty() ? "/" : cwd;
        hostname = hostname == null ? "" : hostname;
        volumes = volumes == null ? List.of() : List.copyOf(volumes);
        files = files == null ? List.of() : List.copyOf(files);
    }
}
