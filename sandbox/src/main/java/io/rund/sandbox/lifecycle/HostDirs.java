package io.rund.sandbox.lifecycle;

import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.StoreException;
import io.rund.sandbox.guest.ProcessSpec;
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
        if (!spec.dirs().isEmpty()) {
            allowOwners(share, spec.process());
        }
        try {
            for (ContainerSpec.HostDir d : spec.dirs()) {
                names.add(share.addDirectory(spec.id(), d.source(), d.options().contains("rbind"), d.readOnly(),
                        d.followsHost(spec.config().rootfsPropagation())));
            }
        } catch (StoreException e) {
            detach(share, names);
            throw e;
        }
        return names;
    }

    /**
     * What a process of a container that binds host directories may have its guest do there:
     * give files to its own user and groups, or, holding CAP_CHOWN, to anyone, as runc would
     * let it; the helper refuses the rest, whatever the guest's kernel claims. (Read-only
     * directories refuse every change by their mounts.)
     */
    static void allowOwners(HostDirShare share, ProcessSpec p) throws StoreException {
        List<Integer> gids = new ArrayList<>();
        gids.add(p.gid());
        gids.addAll(p.additionalGids());
        share.allowOwners(p.capabilities().effective().contains("CAP_CHOWN"), p.uid(), gids);
    }

    static void detach(HostDirShare share, List<String> names) {
        for (String name : names) {
            share.remove(name);
        }
    }
}
