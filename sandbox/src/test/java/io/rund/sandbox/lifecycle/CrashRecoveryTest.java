package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.cgroup.CgroupPool;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * kill -9 of the daemon in the middle of a start (a child JVM, stopped once the VM is
 * launched and before the container exists), then a new daemon's recovery: nothing may
 * be left, and the writable layer's blocks must be free again.
 */
@Timeout(300)
class CrashRecoveryTest {

    @Test
    void aDaemonKilledMidStartLeavesNothingAfterRecovery() throws Exception {
        try (Fixture fx = new Fixture("crash")) {
            fx.pool.close(); // the child is the daemon now; this JVM is the next one
            long usedBefore = fx.xfs.usedKiB();
            String id = "crash-1";
            List<String> argv = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                    "@" + System.getProperty("rund.jvm.argfile"),
                    "-Drund.guest.dir=" + Fixture.GUEST,
                    "-cp", System.getProperty("java.class.path"), CrashStartMain.class.getName(),
                    fx.stateRoot.toString(), fx.poolName, fx.base.resolve("claims").toString(), fx.storeDir.toString(),
                    fx.layerEtc.toString(), fx.layerBin.toString(), id));
            Process daemon = new ProcessBuilder(argv).redirectErrorStream(true)
                    .redirectOutput(fx.base.resolve("daemon.log").toFile()).start();
            Path state = fx.stateRoot.resolve(id).resolve("state.json");
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            String seen = "";
            // Mid-start: the VM is launched (its pid is recorded) but the sandbox is not running yet.
            while (System.nanoTime() < end) {
                try {
                    seen = Files.readString(state);
                } catch (java.io.IOException e) {
                    seen = "";
                }
                if (seen.contains("\"vmPid\":") && !seen.contains("\"vmPid\":0") && seen.contains("\"phase\":\"starting\"")) {
                    break;
                }
                if (!daemon.isAlive()) {
                    throw new AssertionError("the child daemon died: " + Files.readString(fx.base.resolve("daemon.log")));
                }
                Thread.sleep(2);
            }
            daemon.destroyForcibly().waitFor(); // SIGKILL
            assertTrue(seen.contains("\"phase\":\"starting\""), "not caught mid-start: " + seen);
            long vmPid = Long.parseLong(seen.replaceAll(".*\"vmPid\":(\\d+).*", "$1"));
            assertTrue(ProcessHandle.of(vmPid).map(ProcessHandle::isAlive).orElse(false),
                    "QEMU must outlive the killed daemon, or this test proves nothing");

            // A process that merely names a sandbox directory is not rund's VM, and recovery must not kill it.
            Process bystander = new ProcessBuilder("sh", "-c", "sleep 300; : " + fx.stateRoot.resolve(id) + "/qmp.sock").start();
            fx.pool = CgroupPool.open(fx.layout, fx.base.resolve("claims"), Fixture.POOL_SIZE);
            assertEquals(List.of(id), List.copyOf(fx.pool.claimed().keySet()), "the new daemon finds the claimed cgroup");
            List<String> cleaned = fx.manager().recover();
            assertEquals(List.of(id), cleaned);
            assertTrue(exited(vmPid), "QEMU must be gone");
            assertTrue(bystander.isAlive(), "recovery killed a process that only mentions the state root");
            bystander.descendants().forEach(ProcessHandle::destroyForcibly);
            bystander.destroyForcibly().waitFor();
            fx.assertNothingLeft();
            // The unlinked writable layer's blocks are free once QEMU, its last holder, is gone.
            long usedAfter = fx.xfs.usedKiB();
            assertTrue(usedAfter <= usedBefore + 1024, "store used " + usedBefore + " KiB before, " + usedAfter + " after");
        }
    }

    /**
     * Whether {@code pid} has exited: gone, or a zombie waiting for its reaper (here init,
     * which on this machine reaps orphans about once a second).
     */
    private static boolean exited(long pid) throws Exception {
        try {
            String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
            return stat.substring(stat.lastIndexOf(')') + 2).startsWith("Z");
        } catch (java.nio.file.NoSuchFileException e) {
            return true;
        }
    }
}
