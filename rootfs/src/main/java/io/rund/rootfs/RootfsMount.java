package io.rund.rootfs;

import java.util.List;
import java.util.Objects;

/** One of the mounts containerd gives for a task's rootfs (containerd.types.Mount). */
public record RootfsMount(String type, String source, List<String> options) {
    public RootfsMount {
        Objects.requireNonNull(type, "type");
        Objects.requireNonNull(source, "source");
        options = List.copyOf(options);
    }
}
