package io.rund.sandbox.lifecycle;

import io.rund.sandbox.guest.GuestContainer;
import io.rund.sandbox.guest.GuestMount;
import io.rund.vm.VmConfig;
import java.util.ArrayList;
import java.util.List;

/**
 * A container as the guest creates it: the spec's mounts, then the pod's volumes (as
 * directories of the sandbox's disk) and the host files copied in, on an overlay of its
 * image on the sandbox's share and its writes on the disk.
 */
final class ContainerRequests {

    /** Where the pod's volumes live in the guest: a directory of its disk, made by the agent when first mounted. */
    static final String VOLUMES = "/run/rund/disks/" + VmConfig.UPPER_SERIAL + "/volumes/";
    /** Where the pod's memory volumes live in the guest: a tmpfs each, mounted by the agent when first bound. */
    static final String MEMORY_VOLUMES = "/run/rund/pod-memory/";
    /** Where the guest mounts the sandbox's host-directory share, when a container first binds from it. */
    static final String HOST_DIRS_SHARE = "/run/rund/shares/" + VmConfig.HOST_DIRS_TAG;

    private ContainerRequests() {}

    /**
     * The guest's container for {@code spec}, whose image is at {@code lowerDir} of the share
     * and whose writes go to {@code upperDir} of the disk ("" for the disk's root: the
     * sandbox's first container, whose writes live as long as the sandbox). A container that
     * joins a pod names the pod's first in {@code podId} ("" for the first itself). {@code dirs}
     * are where the host-directory share holds the spec's host directories, in their order.
     */
    static GuestContainer of(ContainerSpec spec, String lowerDir, String upperDir, String podId, List<String> dirs) {
        List<GuestMount> mounts = new ArrayList<>();
        for (int i = 0; i < dirs.size(); i++) {
            ContainerSpec.HostDir d = spec.dirs().get(i);
            List<String> options = new ArrayList<>(d.options());
            options.removeAll(List.of("rw", "ro", "bind", "rbind"));
            // On the share, its mounts below it are there already.
            options.addAll(List.of("rbind", d.readOnly() ? "ro" : "rw"));
            mounts.add(new GuestMount(d.destination(), "bind", HOST_DIRS_SHARE + dirs.get(i), options));
        }
        for (ContainerSpec.Volume v : spec.volumes()) {
            List<String> options = new ArrayList<>(List.of("rbind", v.readOnly() ? "ro" : "rw", "nosuid", "nodev"));
            if (v.memory() && v.sizeBytes() > 0) {
                options.add("size=" + v.sizeBytes()); // the tmpfs's, when the agent mounts it; a bind ignores it
            }
            String root = (v.memory() ? MEMORY_VOLUMES : VOLUMES) + v.name();
            mounts.add(new GuestMount(v.destination(), "bind", v.subPath().isEmpty() ? root : root + "/" + v.subPath(),
                    options));
        }
        for (ContainerSpec.FileMount f : spec.files()) {
            mounts.add(new GuestMount(f.destination(), "file", "",
                    List.of(f.readOnly() ? "ro" : "rw", "nosuid", "nodev", "noexec"), f.data()));
        }
        return new GuestContainer(spec.id(), lowerDir, upperDir, spec.hostname(), spec.config().withMounts(mounts),
                spec.process(), podId);
    }
}
