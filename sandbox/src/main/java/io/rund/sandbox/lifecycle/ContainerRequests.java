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

    private ContainerRequests() {}

    /**
     * The guest's container for {@code spec}, whose image is at {@code lowerDir} of the share
     * and whose writes go to {@code upperDir} of the disk ("" for the disk's root: the
     * sandbox's first container, whose writes live as long as the sandbox). A container that
     * joins a pod names the pod's first in {@code podId} ("" for the first itself).
     */
    static GuestContainer of(ContainerSpec spec, String lowerDir, String upperDir, String podId) {
        List<GuestMount> mounts = new ArrayList<>();
        for (ContainerSpec.Volume v : spec.volumes()) {
            mounts.add(new GuestMount(v.destination(), "bind", VOLUMES + v.name(),
                    List.of("rbind", v.readOnly() ? "ro" : "rw", "nosuid", "nodev")));
        }
        for (ContainerSpec.FileMount f : spec.files()) {
            mounts.add(new GuestMount(f.destination(), "file", "",
                    List.of(f.readOnly() ? "ro" : "rw", "nosuid", "nodev", "noexec"), f.data()));
        }
        return new GuestContainer(spec.id(), lowerDir, upperDir, spec.hostname(), spec.config().withMounts(mounts),
                spec.process(), podId);
    }
}
