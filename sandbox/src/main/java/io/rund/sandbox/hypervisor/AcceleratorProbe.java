package io.rund.sandbox.hypervisor;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
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
    private static final int O_RDWR = 2;
    private static final int O_CLOEXEC = 0x80000;

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
        } catch (Throwable e) {
            return new Accelerator(Accelerator.Kind.TCG, "cannot use " + kvm + ": " + e.getMessage());
        }
        return new Accelerator(Accelerator.Kind.KVM, kvm + " answers KVM API version " + KVM_API_VERSION);
    }

    private static int apiVersion(Path device) throws Throwable {
        Linker linker = Linker.nativeLinker();
        StructLayout state = Linker.Option.captureStateLayout();
        VarHandle errnoHandle = state.varHandle(java.lang.foreign.MemoryLayout.PathElement.groupElement("errno"));
        Linker.Option errno = Linker.Option.captureCallState("errno");
        MethodHandle open = linker.downcallHandle(linker.defaultLookup().find("open").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), errno);
        MethodHandle ioctl = linker.downcallHandle(linker.defaultLookup().find("ioctl").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG), errno,
                Linker.Option.firstVariadicArg(2));
        MethodHandle close = linker.downcallHandle(linker.defaultLookup().find("close").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment callState = arena.allocate(state);
            // SAFETY: open(2) reads the NUL-terminated path, which lives in this arena.
            int fd = (int) open.invokeExact(callState, arena.allocateFrom(device.toString()), O_RDWR | O_CLOEXEC);
            if (fd < 0) {
                throw new IllegalStateException("open failed with errno " + (int) errnoHandle.get(callState, 0L));
            }
            try {
                // SAFETY: KVM_GET_API_VERSION takes no argument and touches no memory of ours.
                int version = (int) ioctl.invokeExact(callState, fd, KVM_GET_API_VERSION);
                if (version < 0) {
                    throw new IllegalStateException("KVM_GET_API_VERSION failed with errno "
                            + (int) errnoHandle.get(callState, 0L));
                }
                return version;
            } finally {
                // SAFETY: fd was opened above and is closed once.
                int ignored = (int) close.invokeExact(fd);
            }
        }
    }
}
