package io.rund.sandbox.lifecycle;

import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.StoreException;
import java.util.ArrayList;
import java.util.List;

/**
 * A container's host directories on its sandbox's host-directory share: attached before the
 * guest creates the container, detached after it is removed.
 */
final class HostDirs {

    private HostDirs() {}

    /**
     * Binds each of {@code spec}'s host directories into {@code share}, read-only or
     * writable as the spec binds it.
     *
     * @return their directories in the share, in order; none is left when one fails
     */
    static List<String> attach(HostDirShare share, ContainerSpec spec) throws StoreException {
        List<String> names = new ArrayList<>();
        try {
            for (ContainerSpec.HostDir d : spec.dirs()) {
                names.add(share.addDirectory(spec.id(), d.source(), d.options().contains("rbind"), d.readOnly()));
            }
        } catch (StoreException e) {
            detach(share, names);
            throw e;
        }
        return names;
    }

    static void detach(HostDirShare share, List<String> names) {
        for (String name : names) {
            share.remove(name);
        }
    }
}
