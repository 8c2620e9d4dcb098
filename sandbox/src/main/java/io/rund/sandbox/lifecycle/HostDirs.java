package io.rund.sandbox.lifecycle;

import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.StoreException;
import java.util.ArrayList;
import java.util.List;

/**
 * A sandbox's two shares as its containers' host directories use them: one bound read-only
 * joins the image share, one bound read-write the host-directory share. Attached before
 * the guest creates the container, detached after it is removed.
 */
record HostDirs(ReadOnlyLayer readOnly, HostDirShare writable) {

    /** A host directory on one of the shares: the directory {@code name} of the writable one or of the image one. */
    record Attached(boolean writable, String name) {}

    /**
     * Binds each of {@code spec}'s host directories into its share: the image share when
     * read-only, the host-directory share when read-write.
     *
     * @return where they are, in order; none is left when one fails
     */
    List<Attached> attach(ContainerSpec spec) throws StoreException {
        List<Attached> attached = new ArrayList<>();
        try {
            for (ContainerSpec.HostDir d : spec.dirs()) {
                boolean recursive = d.options().contains("rbind");
                attached.add(d.readOnly() ? new Attached(false, readOnly.addDirectory(spec.id(), d.source(), recursive))
                        : new Attached(true, writable.addDirectory(spec.id(), d.source(), recursive)));
            }
        } catch (StoreException e) {
            detach(attached);
            throw e;
        }
        return attached;
    }

    void detach(List<Attached> attached) {
        for (Attached a : attached) {
            if (a.writable()) {
                writable.remove(a.name());
            } else {
                readOnly.remove(a.name());
            }
        }
    }
}
