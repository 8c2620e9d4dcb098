package io.rund.sandbox.lifecycle;

import io.rund.rootfs.RootfsMount;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * A stand-in daemon for {@link CrashRecoveryTest}: starts one sandbox and then waits to be
 * killed. Arguments: state root, pool name, claims dir, store dir, top layer, bottom layer,
 * sandbox id.
 */
public final class CrashStartMain {

    private CrashStartMain() {}

    public static void main(String[] a) throws Exception {
        Path guest = Path.of(System.getProperty("rund.guest.dir", "/var/lib/rund/guest"));
        CgroupPool pool = CgroupPool.open(CgroupLayout.detect(a[1]), Path.of(a[2]), Fixture.POOL_SIZE);
        WritableLayerStore store = WritableLayerStore.open(Path.of(a[3]), 128);
        SandboxManager manager = new SandboxManager(new SandboxManager.Config(Path.of(a[0]), guest.resolve("vmlinux"),
                guest.resolve("initramfs.cpio"), 1, 128, 64, Duration.ofSeconds(60), 0),
                io.rund.vm.TestVms.jailed(), pool, store);
        manager.start(Fixture.container(a[6], List.of(new RootfsMount("overlay", "overlay",
                List.of("lowerdir=" + a[4] + ":" + a[5]))), "", "sleep", "1000"));
        System.out.println("started");
        Thread.sleep(Long.MAX_VALUE);
    }
}
