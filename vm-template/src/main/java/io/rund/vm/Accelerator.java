package io.rund.vm;

import java.util.Objects;

/**
 * How guests run: hardware virtualisation (KVM) or QEMU's software emulation (TCG), and
 * why that one was chosen. The reason goes into the log and into diagnostics.
 */
public record Accelerator(Kind kind, String reason) {

    public enum Kind {
        KVM,
        TCG
    }

    public Accelerator {
        Objects.requireNonNull(kind, "kind");
        Objects.requireNonNull(reason, "reason");
    }

    @Override
    public String toString() {
        return kind.name().toLowerCase(java.util.Locale.ROOT) + " (" + reason + ")";
    }
}
