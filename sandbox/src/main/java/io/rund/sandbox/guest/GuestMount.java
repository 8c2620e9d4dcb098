package io.rund.sandbox.guest;

import java.util.List;
import java.util.Objects;

/**
 * A mount in a container, in guest terms: {@code source} names something in the VM (a
 * file system type's source, a directory of the pod's disk), never a host path.
 *
 * @param options mount(8)-style: ro, nosuid, nodev, noexec, rbind, mode=755, size=...
 * @param data for type "file": the file's contents, which the agent writes to a file of
 *     its own and binds onto destination; empty otherwise
 */
public record GuestMount(String destination, String type, String source, List<String> options, byte[] data) {

    public GuestMount {
        Objects.requireNonNull(destination, "destination");
        Objects.requireNonNull(type, "type");
        source = source == null ? "" : source;
        options = List.copyOf(options);
        data = data == null ? new byte[0] : data.clone();
    }

    public GuestMount(String destination, String type, String source, List<String> options) {
        this(destination, type, source, options, null);
    }

    @Override
    public byte[] data() {
        return data.clone();
    }
}
