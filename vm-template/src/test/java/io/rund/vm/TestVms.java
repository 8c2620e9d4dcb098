package io.rund.vm;

import io.rund.testing.NativeTools;
import io.rund.rootfs.SandboxHelper;
import io.rund.rootfs.StoreException;
import io.rund.vm.qemu.QemuHypervisor;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.function.BiFunction;

/**
 * VMs for tests, confined as the daemon confines them: QEMU started by rund-jail as a uid of
 * its own (from {@link NativeTools#TEST_GID}, never the daemon's range), and a VM's
 * virtio-fs served by its helper, the same uid, pivoted into the share.
 */
public final class TestVms {

    private TestVms() {}

    /** QEMU with the accelerator the probe picks, each VM jailed. */
    public static QemuHypervisor jailed() {
        try {
            return new QemuHypervisor(Path.of("/usr/bin/qemu-system-x86_64"), new AcceleratorProbe().detect(),
                    new VmJail(NativeTools.jailer(), NativeTools.TEST_GID));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A VM and its helper, sharing a uid; closing ends both and gives the uid back. */
    public record Served(Vm vm, SandboxHelper helper, int uid, VmJail jail) implements AutoCloseable {
        @Override
        public void close() {
            vm.close();
            helper.close();
            jail.release(uid);
        }
    }

    /**
     * Starts a helper serving {@code share} from {@code dir}, then the VM {@code config}
     * makes of it and the uid (its shared directory is the helper's socket); paused: a
     * clone left loaded and stopped.
     */
    public static Served launch(QemuHypervisor hypervisor, String name, Path dir, Path share,
            BiFunction<SandboxHelper, Integer, VmConfig> config, boolean paused) throws HypervisorException, StoreException {
        VmJail jail = hypervisor.jail();
        int uid = jail.acquire();
        SandboxHelper helper;
        try {
            helper = SandboxHelper.start(name, dir, share, jail.helperJail(uid), SandboxHelper.Limits.DEFAULT);
        } catch (StoreException e) {
            jail.release(uid);
            throw e;
        }
        try {
            VmConfig c = config.apply(helper, uid);
            return new Served(paused ? hypervisor.launchPaused(c) : hypervisor.launch(c), helper, uid, jail);
        } catch (HypervisorException | RuntimeException e) {
            helper.close();
            jail.release(uid);
            throw e;
        }
    }
}
