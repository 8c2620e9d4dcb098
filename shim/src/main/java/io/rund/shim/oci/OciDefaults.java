package io.rund.shim.oci;

import io.rund.sandbox.guest.GuestMount;
import java.util.List;

/**
 * The mounts and hidden paths every container gets today, whatever its spec says: those of
 * runc's default spec. (Issue "OCI fidelity" replaces them with the spec's own.)
 */
final class OciDefaults {

    static final List<GuestMount> MOUNTS = List.of(
            new GuestMount("/proc", "proc", "proc", List.of("nosuid", "noexec", "nodev")),
            new GuestMount("/dev", "tmpfs", "tmpfs", List.of("nosuid", "strictatime", "mode=755", "size=65536k")),
            new GuestMount("/dev/pts", "devpts", "devpts", List.of("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
            new GuestMount("/dev/shm", "tmpfs", "shm", List.of("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
            new GuestMount("/dev/mqueue", "mqueue", "mqueue", List.of("nosuid", "noexec", "nodev")),
            new GuestMount("/sys", "sysfs", "sysfs", List.of("nosuid", "noexec", "nodev", "ro")));

    static final List<String> MASKED_PATHS = List.of("/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware");

    static final List<String> READONLY_PATHS = List.of("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
            "/proc/sysrq-trigger");

    private OciDefaults() {}
}
