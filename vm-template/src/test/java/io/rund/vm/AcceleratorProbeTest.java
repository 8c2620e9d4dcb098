package io.rund.vm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The KVM/TCG decision, against real files and real system calls. */
class AcceleratorProbeTest {

    @Test
    void noDeviceMeansTcg(@TempDir Path dir) {
        Accelerator a = new AcceleratorProbe(dir.resolve("kvm"), dir).detect();
        assertEquals(Accelerator.Kind.TCG, a.kind());
        assertTrue(a.reason().contains("does not exist"), a.reason());
    }

    @Test
    void aDeviceFromKvmPvmMeansTcg(@TempDir Path dir) throws Exception {
        Files.createFile(dir.resolve("kvm"));
        Files.createDirectories(dir.resolve("module/kvm_pvm"));
        Accelerator a = new AcceleratorProbe(dir.resolve("kvm"), dir.resolve("module")).detect();
        assertEquals(Accelerator.Kind.TCG, a.kind());
        assertTrue(a.reason().contains("kvm_pvm"), a.reason());
    }

    @Test
    void aFileThatMerelyExistsIsNotKvm(@TempDir Path dir) throws Exception {
        // The ioctl really runs, on a regular file, and fails: existence alone never says KVM.
        Files.createFile(dir.resolve("kvm"));
        Accelerator a = new AcceleratorProbe(dir.resolve("kvm"), dir.resolve("module")).detect();
        assertEquals(Accelerator.Kind.TCG, a.kind());
        assertTrue(a.reason().contains("ioctl") && a.reason().contains("Inappropriate ioctl"), a.reason());
    }

    @Test
    void thisHostsChoiceFollowsItsKvm() {
        Accelerator a = new AcceleratorProbe().detect();
        if (Files.isDirectory(Path.of("/sys/module/kvm_pvm"))) {
            assertEquals(Accelerator.Kind.TCG, a.kind(), "PVM's /dev/kvm cannot run the guest: " + a);
        } else if (!Files.exists(Path.of("/dev/kvm"))) {
            assertEquals(Accelerator.Kind.TCG, a.kind(), a.toString());
        } else {
            assertTrue(a.reason().contains("/dev/kvm"), a.toString());
        }
    }

    @Test
    void configurationCanForceEitherAndNothingElse(@TempDir Path dir) {
        AcceleratorProbe probe = new AcceleratorProbe(dir.resolve("kvm"), dir);
        assertEquals(Accelerator.Kind.TCG, probe.choose("tcg").kind());
        Accelerator kvm = probe.choose("kvm");
        assertEquals(Accelerator.Kind.KVM, kvm.kind());
        assertTrue(kvm.reason().contains("forced"), kvm.reason());
        assertEquals(Accelerator.Kind.TCG, probe.choose(null).kind());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> probe.choose("xen"));
        assertTrue(bad.getMessage().contains("xen"));
    }
}
