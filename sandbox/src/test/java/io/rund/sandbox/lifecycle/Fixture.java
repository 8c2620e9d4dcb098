package io.rund.sandbox.lifecycle;

import io.rund.rootfs.RootfsMount;
import io.rund.rootfs.WritableLayerStore;
import io.rund.testing.XfsLoop;
import io.rund.sandbox.agent.TestGuest;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.TestContainers;
import io.rund.testing.Trees;
import io.rund.vm.qemu.QemuHypervisor;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;

/**
 * Everything a sandbox needs, real and private to one test class: an image of two layers
 * (busybox, then /etc), a writable-layer store on a loop-mounted XFS, a cgroup pool under a
 * root of its own, a state root, and rund's QEMU driver with the probed accelerator.
 */
final class Fixture implements AutoCloseable {

    static final Path GUEST = Path.of(System.getProperty("rund.guest.dir", "/var/lib/rund/guest"));
    static final int POOL_SIZE = 4;

    final Path base;
    final Path layerBin;
    final Path layerEtc;
    final Path stateRoot;
    final XfsLoop xfs;
    final Path storeDir;
    final CgroupLayout layout;
    final String poolName;
    CgroupPool pool;
    final WritableLayerStore store;
    final QemuHypervisor hypervisor;
    /** Where a test class keeps its VM templates (on tmpfs, as the daemon does); removed by {@link #close}. */
    final Path templateRoot;

    Fixture(String name) throws Exception {
        base = Files.createTempDirectory("rund-sandbox-" + name + "-");
        layerBin = base.resolve("layers/1");
        layerEtc = base.resolve("layers/2");
        TestGuest.installBusybox(layerBin);
        Files.createDirectories(layerEtc.resolve("etc"));
        Files.writeString(layerEtc.resolve("etc/image-file"), "from the top layer\n");
        stateRoot = Files.createTempDirectory(Path.of("/run"), "rund-test-sandboxes-");
        xfs = new XfsLoop(4096); // sparse: the store promises each held layer its 128 MiB
        storeDir = xfs.mount.resolve("scratch");
        store = WritableLayerStore.open(storeDir, 128);
        poolName = "rund-test-" + name + "-" + ProcessHandle.current().pid();
        layout = CgroupLayout.detect(poolName);
        pool = CgroupPool.open(layout, base.resolve("claims"), POOL_SIZE);
        hypervisor = io.rund.vm.TestVms.jailed();
        templateRoot = Path.of("/dev/shm/rund-test-" + name + "-templates-" + ProcessHandle.current().pid());
    }

    SandboxManager.Config config() {
        return config(0);
    }

    /** With {@code startsAtOnce} starts running at once (0: all). */
    SandboxManager.Config config(int startsAtOnce) {
        return new SandboxManager.Config(stateRoot, GUEST.resolve("vmlinux"), GUEST.resolve("initramfs.cpio"),
                1, 128, 64, Duration.ofSeconds(60), startsAtOnce);
    }

    SandboxManager manager() throws IOException {
        return new SandboxManager(config(), hypervisor, pool, store);
    }

    /** containerd's rootfs mount for the image: an overlay whose lowerdirs are the layers, top first. */
    List<RootfsMount> image() {
        return List.of(new RootfsMount("overlay", "overlay", List.of(
                "workdir=/nonexistent/work", "upperdir=/nonexistent/upper", "lowerdir=" + layerEtc + ":" + layerBin)));
    }

    ContainerSpec spec(String id, String... args) {
        return container(id, image(), id + "-host", args);
    }

    /** Container {@code id} of {@code image} running {@code args}, with the tests' mounts and capabilities. */
    static ContainerSpec container(String id, List<RootfsMount> image, String hostname, String... args) {
        return container(id, image, hostname, List.of(), null, args);
    }

    /** A container that joins a pod: it shares the pod's IPC and UTS namespaces, as CRI's do. */
    static ContainerSpec member(String id, List<RootfsMount> image, String hostname, String... args) {
        ContainerSpec c = container(id, image, hostname, args);
        ContainerConfig k = c.config();
        return new ContainerSpec(id, image, hostname, c.process(), new ContainerConfig(k.mounts(), k.maskedPaths(),
                k.readonlyPaths(), false, java.util.Map.of(), new ContainerConfig.Namespaces(false, true, false, false), "",
                k.resources(), null), List.of(), List.of(), List.of(), null, null, 0);
    }

    static ContainerSpec container(String id, List<RootfsMount> image, String hostname,
            List<ContainerSpec.FileMount> files, Path netns, String... args) {
        ProcessSpec p = TestContainers.process(false, args);
        return new ContainerSpec(id, image, hostname, ProcessSpec.of(p.args(), List.of("PATH=/bin"), "/")
                .withCapabilities(p.capabilities()), TestContainers.config(), List.of(), files, List.of(), netns, null, 0);
    }

    /** Nothing of any sandbox is left: no state, no mount, no store file, no VM, the pool whole. */
    void assertNothingLeft() throws Exception {
        try (Stream<Path> s = Files.list(stateRoot)) {
            List<Path> left = s.toList();
            if (!left.isEmpty()) {
                throw new AssertionError("state directories left: " + left);
            }
        }
        String mounts = Files.readString(Path.of("/proc/self/mountinfo"));
        if (mounts.contains(stateRoot.toString())) {
            throw new AssertionError("mounts left under " + stateRoot + ":\n" + mounts);
        }
        try (Stream<Path> s = Files.list(storeDir)) {
            // The image, and the disks of the templates there are (each named by its template's link).
            List<String> files = s.filter(p -> !io.rund.vm.template.TemplateStore.holdsDisk(templateRoot, p)).map(p -> p.getFileName().toString()).toList();
            if (!files.equals(List.of("ext4-128M.img"))) {
                throw new AssertionError("store holds " + files);
            }
        }
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (pool.freeCount() != POOL_SIZE && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        if (!pool.claimed().isEmpty() || pool.freeCount() != POOL_SIZE) {
            throw new AssertionError("pool not whole: claimed " + pool.claimed().keySet() + ", free " + pool.freeCount());
        }
        for (Path root : layout.roots().values()) {
            try (Stream<Path> s = Files.list(root)) {
                List<String> names = s.filter(Files::isDirectory).map(p -> p.getFileName().toString()).toList();
                if (names.size() != POOL_SIZE || !names.stream().allMatch(n -> n.startsWith("free-"))) {
                    throw new AssertionError("cgroups under " + root + ": " + names);
                }
            }
        }
        List<String> ours = ProcessHandle.allProcesses()
                .map(p -> p.info().commandLine().orElse(""))
                .filter(c -> c.contains(stateRoot.toString()))
                .toList();
        if (!ours.isEmpty()) {
            throw new AssertionError("processes left: " + ours);
        }
    }

    @Override
    public void close() throws Exception {
        pool.destroy();
        xfs.close();
        Files.deleteIfExists(stateRoot);
        Trees.delete(base);
        Trees.delete(templateRoot);
    }
}
