package io.rund.vm;

import io.rund.testing.NativeTools;
import io.rund.rootfs.SandboxHelper;
import io.rund.rootfs.StoreException;
import io.rund.vm.qemu.QemuHypervisor;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

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

    /** A VM and its helpers, sharing a uid; closing ends them and gives the uid back. */
    public record Served(Vm vm, SandboxHelper helper, SandboxHelper hostHelper, int uid, VmJail jail)
            implements AutoCloseable {
        @Override
        public void close() {
            vm.close();
            helper.close();
            hostHelper.close();
            jail.release(uid);
        }
    }

    /** A sandbox's VM made of its two helpers (image share, host-directory share) and its uid. */
    @FunctionalInterface
    public interface Config {
        VmConfig of(SandboxHelper images, SandboxHelper hostDirs, int uid);
    }

    /**
     * Starts a helper serving {@code share} from {@code dir} and a host-directory helper
     * serving {@code dir/hostdirs} (made empty), then the VM {@code config} makes of them and
     * the uid; paused: a clone left loaded and stopped.
     */
    public static Served launch(QemuHypervisor hypervisor, String name, Path dir, Path share, Config config,
            boolean paused) throws HypervisorException, StoreException {
        Path hostDirs;
        try {
            hostDirs = Files.createDirectories(dir.resolve("hostdirs"));
        } catch (IOException e) {
            throw new StoreException("make " + dir.resolve("hostdirs") + ": " + e.getMessage(), e);
        }
        VmJail jail = hypervisor.jail();
        int uid = jail.acquire();
        SandboxHelper helper = null;
        SandboxHelper hostHelper = null;
        try {
            helper = SandboxHelper.start(name, dir, share, jail.helperJail(uid), SandboxHelper.Limits.DEFAULT);
            hostHelper = SandboxHelper.start(name, dir, hostDirs, jail.helperJail(uid), SandboxHelper.Limits.DEFAULT,
                    SandboxHelper.Kind.HOST_DIRS);
            VmConfig c = config.of(helper, hostHelper, uid);
            return new Served(paused ? hypervisor.launchPaused(c) : hypervisor.launch(c), helper, hostHelper, uid, jail);
        } catch (HypervisorException | StoreException | RuntimeException e) {
            if (helper != null) {
                helper.close();
            }
            if (hostHelper != null) {
                hostHelper.close();
            }
            jail.release(uid);
            throw e;
        }
    }
}
