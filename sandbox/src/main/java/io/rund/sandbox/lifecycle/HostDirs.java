package io.rund.sandbox.lifecycle;

import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.StoreException;
import java.util.ArrayList;
import java.util.List;

/** A container's host directories on its sandbox's share: attached before the guest creates it, detached after. */
final class HostDirs {

    private HostDirs() {}

    /**
     * Binds each of {@code spec}'s host directories read-only into the share.
     *
     * @return their directories in the share, in order; none is left when one fails
     */
    static List<String> attach(ReadOnlyLayer share, ContainerSpec spec) throws StoreException {
        List<String> names = new ArrayList<>();
        try {
            for (ContainerSpec.HostDir d : spec.dirs()) {
                names.add(share.addDirectory(spec.id(), d.source(), d.options().contains("rbind")));
            }
        } catch (StoreException e) {
            detach(share, names);
            throw e;
        }
        return names;
    }

    static void detach(ReadOnlyLayer share, List<String> names) {
        for (String name : names) {
            share.remove(name);
        }
    }
}
