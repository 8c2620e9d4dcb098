package io.rund.sandbox.guest;

import java.util.Objects;

/**
 * A container to create in the guest: an overlay of {@code lowerDir} of the sandbox's
 * image share and {@code upperDir} of its disk, then what {@code config} says, and its
 * init process (created, not started).
 *
 * @param upperDir "" for the disk's root: the sandbox's first container, whose writes live
 *     as long as the sandbox
 * @param podId the pod's first container, whose namespaces this one joins as
 *     {@code config.namespaces()} says; "" for the first itself
 */
public record GuestContainer(String id, String lowerDir, String upperDir, String hostname, ContainerConfig config,
        ProcessSpec process, String podId) {

    public GuestContainer {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(process, "process");
        Objects.requireNonNull(config, "config");
        hostname = hostname == null ? "" : hostname;
        podId = podId == null ? "" : podId;
    }
}
