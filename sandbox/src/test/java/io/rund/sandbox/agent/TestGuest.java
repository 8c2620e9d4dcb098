package io.rund.sandbox.agent;

import io.rund.rootfs.StoreException;
import io.rund.testing.Trees;
import io.rund.vm.HypervisorException;
import io.rund.vm.TestVms;
import io.rund.vm.Vm;
import io.rund.vm.VmConfig;
import io.rund.vm.qemu.QemuHypervisor;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real guest for tests: QEMU (microvm, TCG) booting the kernel and initramfs that
 * hack/build-guest installed, with the agent's virtio-serial port on a unix socket, a
 * busybox tree served over virtio-fs by rund's in-daemon back-end as the read-only layer (tag
 * "lower"), and an ext4 image on virtio-blk (serial "upper0") as the writable layer.
 *
 * <p>The VM is launched by rund's own QEMU driver with the accelerator its probe picks.
 */
public final class TestGuest implements AutoCloseable {

    static final String LOWER_TAG = VmConfig.LOWER_TAG;
    static final String UPPER_SERIAL = VmConfig.UPPER_SERIAL;

    final Path dir;
    final Path agentSocket;
    final Path console;
    /** The accelerator the probe picks on this host: TCG here, KVM where it can run the guest. */
    static final QemuHypervisor HYPERVISOR = TestVms.jailed();

    private final TestVms.Served served;
    final Vm vm;

    private TestGuest(Path dir, TestVms.Served served) {
        this.dir = dir;
        this.agentSocket = dir.resolve("agent.sock");
        this.console = dir.resolve("console.log");
        this.served = served;
        this.vm = served.vm();
    }

    static Path guestDir() {
        Path d = Path.of(System.getProperty("rund.guest.dir", "/var/lib/rund/guest"));
        if (!Files.isRegularFile(d.resolve("vmlinux")) || !Files.isRegularFile(d.resolve("initramfs.cpio"))) {
            throw new AssertionError("no guest kernel and initramfs in " + d + ": run hack/build-guest");
        }
        return d;
    }

    static TestGuest boot(String name) throws IOException, InterruptedException {
        Path guest = guestDir();
        Path dir = Files.createTempDirectory("rund-guest-" + name + "-");
        Path lower = dir.resolve("lower");
        makeBusyboxTree(lower);
        Path upper = dir.resolve("upper.img");
        try (RandomAccessFile f = new RandomAccessFile(upper.toFile(), "rw")) {
            f.setLength(64L << 20);
        }
        run(List.of("mkfs.ext4", "-q", "-F", upper.toString()));

        TestVms.Served served;
        try {
            served = TestVms.launch(HYPERVISOR, name, dir, lower, (helper, host, uid) -> VmConfig.sandbox(name, dir,
                    guest.resolve("vmlinux"), guest.resolve("initramfs.cpio"), 1, 256, upper, helper.socket(),
                    host.socket(), VmConfig.Ram.ANONYMOUS, null, uid), false);
        } catch (HypervisorException | StoreException e) {
            throw new AssertionError(e.getMessage(), e);
        }
        return new TestGuest(dir, served);
    }

    private static void makeBusyboxTree(Path root) throws IOException, InterruptedException {
        installBusybox(root);
        Files.createDirectories(root.resolve("etc"));
        Files.writeString(root.resolve("etc/image-file"), "from the image\n");
    }

    /** Debian's busybox-static as {@code root/bin/busybox}, with a link for each of its applets. */
    public static void installBusybox(Path root) throws IOException, InterruptedException {
        Path bin = root.resolve("bin");
        Files.createDirectories(bin);
        Files.copy(Path.of("/bin/busybox"), bin.resolve("busybox"));
        String list = run(List.of("/bin/busybox", "--list"));
        for (String applet : list.split("\n")) {
            if (!applet.isBlank() && !applet.equals("busybox")) {
                Files.createSymbolicLink(bin.resolve(applet.trim()), Path.of("busybox"));
            }
        }
    }

    private static String run(List<String> argv) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new AssertionError(argv + " failed: " + out);
        }
        return out;
    }

    AgentClient connect() throws AgentException, InterruptedException {
        return AgentClient.connect(agentSocket, Duration.ofSeconds(60), Duration.ofSeconds(30));
    }

    /** The serial console and QEMU's own output, for failure reports. */
    String diagnostics() {
        StringBuilder b = new StringBuilder();
        for (String name : List.of("console.log", "qemu.log")) {
            b.append("--- ").append(name).append('\n');
            try {
                b.append(Files.readString(dir.resolve(name)));
            } catch (IOException e) {
                b.append("<").append(e).append(">\n");
            }
        }
        return b.toString();
    }

    @Override
    public void close() throws IOException, InterruptedException {
        vm.stop(Duration.ofSeconds(5));
        served.close();
        Trees.delete(dir);
    }
}
