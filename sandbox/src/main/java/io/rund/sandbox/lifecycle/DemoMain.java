package io.rund.sandbox.lifecycle;

import io.rund.agent.v1.Process;
import io.rund.rootfs.RootfsMount;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.sandbox.hypervisor.AcceleratorProbe;
import io.rund.sandbox.hypervisor.qemu.QemuHypervisor;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * hack/demo: one sandbox from an image directory, running {@code uname -r} in its
 * container, printed next to the host's; then everything is released. Arguments: image
 * directory, state root, store directory, guest directory.
 */
public final class DemoMain {

    private DemoMain() {}

    public static void main(String[] args) throws Exception {
        Path image = Path.of(args[0]);
        Path stateRoot = Path.of(args[1]);
        Path storeDir = Path.of(args[2]);
        Path guest = Path.of(args[3]);
        CgroupPool pool = CgroupPool.open(CgroupLayout.detect("rund-demo"), Path.of("/var/lib/rund/cgroup-claims"), 2);
        WritableLayerStore store = WritableLayerStore.open(storeDir, 256);
        QemuHypervisor qemu = new QemuHypervisor(Path.of("/usr/bin/qemu-system-x86_64"), new AcceleratorProbe().detect());
        SandboxManager manager = new SandboxManager(new SandboxManager.Config(stateRoot, guest.resolve("vmlinux"),
                guest.resolve("initramfs.cpio"), Path.of("/usr/lib/qemu/virtiofsd"), 1, 256, Duration.ofSeconds(60)),
                qemu, pool, store);
        manager.recover();
        String id = "demo-" + ProcessHandle.current().pid();
        long start = System.nanoTime();
        try (Sandbox sb = manager.start(new SandboxSpec(id, List.of(new RootfsMount("bind", image.toString(), List.of())),
                List.of("uname", "-r"), List.of("PATH=/bin"), "/", "demo", false, 0, 0))) {
            long ready = System.nanoTime();
            AgentClient agent = sb.agent();
            agent.startProcess(id, "");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            AgentClient.Chunk c;
            do {
                c = agent.readStdout(id, "", 65536, Duration.ofSeconds(30));
                out.writeBytes(c.data());
            } while (!c.eof());
            int status = agent.waitProcess(id, "", Duration.ofSeconds(30)).status();
            System.out.printf("host  kernel: %s%n", Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip());
            System.out.printf("guest kernel: %s (container exit %d; sandbox ready in %d ms, %s)%n",
                    out.toString(StandardCharsets.UTF_8).strip(), status, (ready - start) / 1_000_000,
                    qemu.accelerator());
        } finally {
            pool.close();
        }
    }
}
