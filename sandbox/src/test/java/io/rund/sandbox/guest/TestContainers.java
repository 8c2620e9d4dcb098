package io.rund.sandbox.guest;

import java.util.List;

/**
 * The containers this module's tests run: runc's default capabilities and the mounts a
 * shell needs (proc, /dev with its pseudo-terminals, sysfs). The shim's OCI translation
 * builds the real ones from each container's spec.
 */
public final class TestContainers {

    public static final List<String> CAPS = List.of("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
            "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE");

    public static final List<GuestMount> MOUNTS = List.of(
            new GuestMount("/proc", "proc", "proc", List.of()),
            new GuestMount("/dev", "tmpfs", "tmpfs", List.of("nosuid", "strictatime", "mode=755", "size=65536k")),
            new GuestMount("/dev/pts", "devpts", "devpts", List.of("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
            new GuestMount("/dev/shm", "tmpfs", "shm", List.of("nosuid", "nodev", "noexec", "mode=1777", "size=65536k")),
            new GuestMount("/sys", "sysfs", "sysfs", List.of("nosuid", "noexec", "nodev", "ro")));

    private TestContainers() {}

    /** The tests' mounts, /proc/kcore hidden, /proc/sys read-only; new namespaces but the VM's network. */
    public static ContainerConfig config() {
        return ContainerConfig.of(MOUNTS, List.of("/proc/kcore"), List.of("/proc/sys"));
    }

    /** {@code args} as root in / with PATH and HOME set and runc's default capabilities. */
    public static ProcessSpec process(boolean terminal, String... args) {
        ProcessSpec.Capabilities caps = new ProcessSpec.Capabilities(CAPS, CAPS, CAPS, List.of(), List.of());
        return ProcessSpec.of(List.of(args), List.of("PATH=/bin", "HOME=/"), "/").withCapabilities(caps)
                .withTerminal(terminal);
    }
}
