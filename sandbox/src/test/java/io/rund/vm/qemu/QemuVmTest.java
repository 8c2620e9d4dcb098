package io.rund.vm.qemu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.agent.AgentClient;
import io.rund.vm.AcceleratorProbe;
import io.rund.vm.HypervisorException;
import io.rund.vm.VmConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** rund's QEMU driver against real QEMU and the real guest. */
@Timeout(120)
class QemuVmTest {

    private static final Path GUEST = Path.of(System.getProperty("rund.guest.dir", "/var/lib/rund/guest"));
    private static final QemuHypervisor QEMU =
            new QemuHypervisor(Path.of("/usr/bin/qemu-system-x86_64"), new AcceleratorProbe().detect());

    private static VmConfig config(Path dir, Path kernel) {
        return new VmConfig("vmtest", dir, kernel, GUEST.resolve("initramfs.cpio"), 1, 128, "", List.of(), List.of());
    }

    @Test
    void aVmBootsPausesResumesAndStops(@TempDir Path dir) throws Exception {
        QemuVm vm = (QemuVm) QEMU.launch(config(dir, GUEST.resolve("vmlinux")));
        try (AgentClient agent = AgentClient.connect(dir.resolve("agent.sock"), Duration.ofSeconds(60),
                Duration.ofSeconds(10))) {
            assertEquals("running", vm.status());
            vm.pause();
            assertEquals("paused", vm.status());
            vm.resume();
            assertEquals("running", vm.status());
            assertEquals("rund-agent 0.1.0", agent.health().version());
        } finally {
            vm.stop(Duration.ofSeconds(5));
        }
        assertEquals(0, vm.exited().get(10, TimeUnit.SECONDS), "quit over QMP is a clean exit");
        assertFalse(ProcessHandle.of(vm.pid()).map(ProcessHandle::isAlive).orElse(false));
        String console = Files.readString(dir.resolve("console.log"));
        assertTrue(console.contains("Linux version"), "the console log must hold the guest kernel's output: " + console);
    }

    @Test
    void aVmThatCannotStartLeavesNothingAndSaysWhy(@TempDir Path dir) {
        HypervisorException e = assertThrows(HypervisorException.class,
                () -> QEMU.launch(config(dir, dir.resolve("no-such-kernel"))));
        assertTrue(e.getMessage().contains("sandbox=vmtest"), e.getMessage());
        assertTrue(e.getMessage().contains("no-such-kernel"), e.getMessage());
        assertTrue(ProcessHandle.allProcesses().noneMatch(p -> p.info().commandLine().orElse("").contains(dir.toString())),
                "no QEMU of this test may be left running");
    }
}
