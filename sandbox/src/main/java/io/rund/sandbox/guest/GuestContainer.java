package io.rund.sandbox.guest;

import java.util.List;
import java.util.Objects;

/**
 * A container to create in the guest: an overlay of {@code lowerDir} of the sandbox's
 * image share and {@code upperDir} of its disk, then its mounts, masked and read-only
 * paths, and its init process (created, not started).
 *
 * @param upperDir "" for the disk's root: the sandbox's first container, whose writes live
 *     as long as the sandbox
 * @param podNamespacesOf the container (the pod's first) whose UTS and IPC namespaces this
 *     one joins; "" for new ones of its own, with {@code hostname} set
 */
public record GuestContainer(String id, String lowerDir, String upperDir, String hostname, List<GuestMount> mounts,
        List<String> maskedPaths, List<String> readonlyPaths, ProcessSpec process, String podNamespacesOf) {

    public GuestContainer {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(process, "process");
        hostname = hostname == null ? "" : hostname;
        mounts = List.copyOf(mounts);
        maskedPaths = List.copyOf(maskedPaths);
        readonlyPaths = List.copyOf(readonlyPaths);
        podNamespacesOf = podNamespacesOf == null ? "" : podNamespacesOf;
    }
}
