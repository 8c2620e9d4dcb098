package io.rund.sandbox.lifecycle;

import io.rund.rootfs.RootfsMount;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * One container of a sandbox, as the OCI translation hands it over: its image
 * (containerd's rootfs mounts), its init process, its mounts and resources. A sandbox
 * starts with its first container, whose id it takes (in a pod, the pause container's id
 * is the pod's); later ones join through {@link Sandbox#addContainer}.
 *
 * @param config how the guest makes it: its mounts that name nothing on the host (proc,
 *     tmpfs, ...), in order, hidden and read-only paths, namespaces, limits (the first
 *     container's cpu quota also bounds the sandbox's cgroup), seccomp
 * @param volumes the pod's volumes this container mounts, kept in the VM
 * @param files small host files the container sees at a path (CRI's /etc/hosts,
 *     /etc/resolv.conf, /etc/hostname): copied into the VM when the container is created
 * @param dirs host directories the container binds, through one of the sandbox's shares
 * @param netns the network namespace whose interface the VM takes (a pod's, made by the
 *     CNI plugin); null for none. Only the first container's counts: it makes the VM.
 * @param vmResources what the VM must hold ({@link VmSize}): a plain container's own limits,
 *     a pod's from CRI's sandbox annotations; only the first container's counts
 * @param writableLayerMiB the size of the sandbox's writable layer (its disk), from the
 *     annotation io.rund.writable-layer-mib (rounded up to a power of two, {@link VmSize});
 *     0 for the store's default; only the first container's counts
 */
public record ContainerSpec(String id, List<RootfsMount> rootfs, String hostname, ProcessSpec process,
        ContainerConfig config, List<Volume> volumes, List<FileMount> files, List<HostDir> dirs, Path netns,
        ResourceLimits vmResources, int writableLayerMiB) {

    /**
     * A host directory bound at {@code destination}: it joins the sandbox's host-directory
     * share (served by a confined helper of its own, read-only or writable as bound); the
     * guest binds it from there.
     *
     * @param options the spec's mount options ("rbind" takes the mounts below it too, "ro"
     *     makes it read-only)
     */
    public record HostDir(Path source, String destination, List<String> options) {
        public HostDir {
            Objects.requireNonNull(source, "source");
            Objects.requireNonNull(destination, "destination");
            options = List.copyOf(options);
        }

        public boolean readOnly() {
            return options.contains("ro");
        }

        /**
         * Whether mounts the host makes below {@code source} later are to appear in the
         * container, as runc decides it: by the mount's own propagation option, else by the
         * container's root's ({@code rootfsPropagation}), which runc makes rslave when the spec
         * says nothing. A shared bind follows the host too; what the guest mounts cannot reach
         * the host across the VM (docs/oci.md).
         */
        public boolean followsHost(String rootfsPropagation) {
            for (String o : options) {
                switch (o) {
                    case "private", "rprivate", "unbindable", "runbindable" -> {
                        return false;
                    }
                    case "slave", "rslave", "shared", "rshared" -> {
                        return true;
                    }
                    default -> {
                        // not a propagation option
                    }
                }
            }
            return !rootfsPropagation.equals("private") && !rootfsPropagation.equals("rprivate");
        }
    }

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
     * A pod volume (Kubernetes' emptyDir) named {@code name}, shared by every container of
     * the pod that mounts it and gone with the pod: a directory of the pod's disk in the VM,
     * or for {@code medium: Memory} ({@code memory}) a tmpfs of the guest's of
     * {@code sizeBytes} (0: tmpfs's default, half the VM's RAM). {@code subPath} ("" for the
     * whole volume) is the directory below the volume's root that the container mounts.
     */
    public record Volume(String name, String destination, boolean readOnly, boolean memory, long sizeBytes,
            String subPath) {
        public Volume {
            Objects.requireNonNull(name, "name");
            Objects.requireNonNull(destination, "destination");
            subPath = subPath == null ? "" : subPath;
        }

        /** A whole volume on the pod's disk. */
        public Volume(String name, String destination, boolean readOnly) {
            this(name, destination, readOnly, false, 0, "");
        }
    }

    public ContainerSpec {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(process, "process");
        Objects.requireNonNull(config, "config");
        rootfs = List.copyOf(rootfs);
        hostname = hostname == null ? "" : hostname;
        volumes = volumes == null ? List.of() : List.copyOf(volumes);
        files = files == null ? List.of() : List.copyOf(files);
        dirs = dirs == null ? List.of() : List.copyOf(dirs);
        vmResources = vmResources == null ? ResourceLimits.NONE : vmResources;
    }

    /** This spec with {@code more} files bound in after its own. */
    public ContainerSpec withFiles(List<FileMount> more) {
        List<FileMount> all = new java.util.ArrayList<>(files);
        all.addAll(more);
        return new ContainerSpec(id, rootfs, hostname, process, config, volumes, all, dirs, netns, vmResources, writableLayerMiB);
    }

    /** The container's limits. */
    public ResourceLimits resources() {
        return config.resources();
    }
}
