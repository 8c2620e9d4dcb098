package io.rund.vm;

import io.rund.rootfs.Syscalls;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Decides whether this host's KVM can run rund's guest kernel. /dev/kvm existing is not
 * enough: on hosts where it is provided by kvm_pvm (PVM), it runs only PVM guest kernels
 * and a standard kernel crashes. The checks, in order: the device exists; it is not PVM's;
 * it opens read-write; and it answers KVM_GET_API_VERSION with the stable API (12).
 */
public final class AcceleratorProbe {

    /** The stable KVM API version every KVM since Linux 2.6.22 reports. */
    static final int KVM_API_VERSION = 12;
    /** _IO(KVMIO, 0x00) */
    static final long KVM_GET_API_VERSION = 0xAE00;

    private final Path kvm;
    private final Path sysModule;

    public AcceleratorProbe() {
        this(Path.of("/dev/kvm"), Path.of("/sys/module"));
    }

    AcceleratorProbe(Path kvm, Path sysModule) {
        this.kvm = kvm;
        this.sysModule = sysModule;
    }

    /** The accelerator to use; {@code forced} ("kvm", "tcg" or null for automatic) wins. */
    public Accelerator choose(String forced) {
        if ("tcg".equals(forced)) {
            return new Accelerator(Accelerator.Kind.TCG, "forced by configuration");
        }
        Accelerator detected = detect();
        if ("kvm".equals(forced)) {
            return new Accelerator(Accelerator.Kind.KVM, "forced by configuration; the probe said: " + detected.reason());
        }
        if (forced != null) {
            throw new IllegalArgumentException("accelerator " + forced + " is not kvm, tcg or automatic");
        }
        return detected;
    }

    public Accelerator detect() {
        if (!Files.exists(kvm)) {
            return new Accelerator(Accelerator.Kind.TCG, kvm + " does not exist");
        }
        if (Files.isDirectory(sysModule.resolve("kvm_pvm"))) {
            return new Accelerator(Accelerator.Kind.TCG, kvm + " is provided by kvm_pvm, which runs only PVM guest "
                    + "kernels; rund's guest kernel is a standard one");
        }
        try {
            int version = apiVersion(kvm);
            if (version != KVM_API_VERSION) {
                return new Accelerator(Accelerator.Kind.TCG,
                        kvm + " reports KVM API version " + version + ", not " + KVM_API_VERSION);
            }
        } catch (Syscalls.SyscallException e) {
            return new Accelerator(Accelerator.Kind.TCG, "cannot use " + kvm + ": " + e.getMessage());
        }
        return new Accelerator(Accelerator.Kind.KVM, kvm + " answers KVM API version " + KVM_API_VERSION);
    }

    private static int apiVersion(Path device) throws Syscalls.SyscallException {
        int fd = Syscalls.open(device, Syscalls.O_RDWR | Syscalls.O_CLOEXEC, 0);
        try {
            return Syscalls.ioctl(fd, KVM_GET_API_VERSION, 0);
        } finally {
            Syscalls.close(fd);
        }
    }
}
