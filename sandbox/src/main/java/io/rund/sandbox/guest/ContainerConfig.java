package io.rund.sandbox.guest;

import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * How the guest makes a container, in guest terms: its mounts in order (sources name the
 * VM, never the host), hidden and read-only paths, a read-only root, namespaced sysctls,
 * its namespaces, the propagation of its mounts, its limits and its seccomp profile. The
 * OCI translation fills it from the spec.
 *
 * @param rootfsPropagation "" for rprivate, else private, slave, rslave, shared or rshared
 * @param seccomp null: no filter
 */
public record ContainerConfig(List<GuestMount> mounts, List<String> maskedPaths, List<String> readonlyPaths,
        boolean readonlyRoot, Map<String, String> sysctls, Namespaces namespaces, String rootfsPropagation,
        ResourceLimits resources, SeccompProfile seccomp) {

    /**
     * Which namespaces a container shares. In a pod, a container may join the pod's PID
     * namespace (CRI's shared process namespace) and its IPC and UTS namespaces (always
     * together); its network namespace is the VM's (which holds the pod's interface) or one
     * of its own with only a loopback interface.
     */
    public record Namespaces(boolean podPid, boolean podIpcAndUts, boolean ownNetwork, boolean ownCgroup) {

        /** New PID, IPC and UTS namespaces, the VM's network, no cgroup namespace. */
        public static final Namespaces DEFAULT = new Namespaces(false, false, false, false);
    }

    public ContainerConfig {
        mounts = List.copyOf(mounts);
        maskedPaths = List.copyOf(maskedPaths);
        readonlyPaths = List.copyOf(readonlyPaths);
        sysctls = Map.copyOf(sysctls);
        Objects.requireNonNull(namespaces, "namespaces");
        rootfsPropagation = rootfsPropagation == null ? "" : rootfsPropagation;
        Objects.requireNonNull(resources, "resources");
    }

    /** {@code mounts}, hidden and read-only paths, and nothing else set. */
    public static ContainerConfig of(List<GuestMount> mounts, List<String> maskedPaths, List<String> readonlyPaths) {
        return new ContainerConfig(mounts, maskedPaths, readonlyPaths, false, Map.of(), Namespaces.DEFAULT, "",
                ResourceLimits.NONE, null);
    }

    /** This config with {@code more} mounts after its own. */
    public ContainerConfig withMounts(List<GuestMount> more) {
        List<GuestMount> all = new java.util.ArrayList<>(mounts);
        all.addAll(more);
        return new ContainerConfig(all, maskedPaths, readonlyPaths, readonlyRoot, sysctls, namespaces, rootfsPropagation,
                resources, seccomp);
    }
}
