package io.rund.vm.qemu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.vm.Accelerator;
import io.rund.vm.VmConfig;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** QEMU's argv as strings, without starting QEMU. */
@Tag("unit")
class QemuCommandLineTest {

    private static final Accelerator TCG = new Accelerator(Accelerator.Kind.TCG, "test");
    private static final Accelerator KVM = new Accelerator(Accelerator.Kind.KVM, "test");

    private static VmConfig config(List<VmConfig.Disk> disks, List<VmConfig.SharedDir> dirs) {
        return new VmConfig("sb1", Path.of("/run/rund/sandboxes/sb1"), Path.of("/g/vmlinux"), Path.of("/g/init.cpio"),
                2, 512, "quiet", disks, dirs);
    }

    @Test
    void aTcgVmWithADiskAndASharedDirectory() {
        List<String> argv = QemuCommandLine.argv(Path.of("/usr/bin/qemu-system-x86_64"),
                config(List.of(new VmConfig.Disk("upper0", Path.of("/proc/self/fd/7"), false)),
                        List.of(new VmConfig.SharedDir("lower", Path.of("/run/rund/sandboxes/sb1/virtiofs.sock")))),
                TCG, "console=ttyS0");
        assertEquals(String.join(" ", List.of("/usr/bin/qemu-system-x86_64", "-name", "rund-sb1",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-global", "virtio-mmio.force-legacy=false",
                "-bios", "qboot.rom", "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on,pit=off,memory-backend=mem",
                "-accel", "tcg,tb-size=16", "-cpu", "max",
                "-m", "512M", "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
                "-smp", "2",
                "-kernel", "/g/vmlinux", "-initrd", "/g/init.cpio", "-append", "console=ttyS0 quiet",
                "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
                "-qmp", "unix:/run/rund/sandboxes/sb1/qmp.sock,server=on,wait=off",
                "-device", "virtio-serial-device",
                "-chardev", "socket,id=agent,path=/run/rund/sandboxes/sb1/agent.sock,server=on,wait=off",
                "-device", "virtserialport,chardev=agent,name=rund.agent",
                "-chardev", "socket,id=fs0,path=/run/rund/sandboxes/sb1/virtiofs.sock",
                "-device", "vhost-user-fs-device,chardev=fs0,tag=lower",
                "-drive", "file=/proc/self/fd/7,if=none,id=disk0,format=raw,cache.direct=on,discard=unmap,werror=report,rerror=report",
                "-device", "virtio-blk-device,drive=disk0,serial=upper0",
                "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")),
                String.join(" ", argv));
    }

    @Test
    void aNetworkDeviceIsATapQemuCreatesAndComesBeforeTheIncomingState() {
        VmConfig c = new VmConfig("sb1", Path.of("/s/sb1"), Path.of("/g/vmlinux"), Path.of("/g/init.cpio"), 1, 256, "",
                List.of(), List.of(), VmConfig.Ram.cloneOf(Path.of("/t/ram"), Path.of("/t/state")), "rt0123456789ab");
        String s = String.join(" ", QemuCommandLine.argv(Path.of("qemu"), c, TCG, "console=ttyS0"));
        assertTrue(s.endsWith("-netdev tap,id=net0,ifname=rt0123456789ab,script=no,downscript=no"
                + " -device virtio-net-device,netdev=net0,mac=02:72:75:6e:64:00 -incoming defer -sandbox on,"
                + "obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"), s);
        assertTrue(VmConfig.newTapName().matches("rt[0-9a-f]{12}"));
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> new VmConfig("sb1",
                Path.of("/s"), Path.of("/k"), Path.of("/i"), 1, 256, "", List.of(), List.of(), null, "a,b"));
        assertTrue(bad.getMessage().contains("tap name a,b"), bad.getMessage());
        IllegalArgumentException tooLong = assertThrows(IllegalArgumentException.class, () -> new VmConfig("sb1",
                Path.of("/s"), Path.of("/k"), Path.of("/i"), 1, 256, "", List.of(), List.of(), null, "rt0123456789abcd"));
        assertTrue(tooLong.getMessage().contains("rt0123456789abcd"), tooLong.getMessage());
    }

    @Test
    void kvmUsesTheHostCpuAndReadOnlyDisksSaySo() {
        List<String> argv = QemuCommandLine.argv(Path.of("qemu"),
                config(List.of(new VmConfig.Disk("ro0", Path.of("/img"), true)), List.of()), KVM, "console=ttyS0");
        String s = String.join(" ", argv);
        assertTrue(s.contains("-accel kvm -cpu host"), s);
        assertTrue(s.contains("-drive file=/img,if=none,id=disk0,format=raw,readonly=on,werror=report,rerror=report"), s);
    }

    @Test
    void commasAndOddNamesAreRefusedBeforeQemuSeesThem() {
        IllegalArgumentException comma = assertThrows(IllegalArgumentException.class, () -> QemuCommandLine.argv(
                Path.of("qemu"), config(List.of(new VmConfig.Disk("d", Path.of("/a,b"), false)), List.of()), TCG, ""));
        assertTrue(comma.getMessage().contains("/a,b"), comma.getMessage());
        IllegalArgumentException serial = assertThrows(IllegalArgumentException.class, () -> QemuCommandLine.argv(
                Path.of("qemu"), config(List.of(new VmConfig.Disk("bad serial", Path.of("/a"), false)), List.of()), TCG,
                ""));
        assertTrue(serial.getMessage().contains("bad serial"), serial.getMessage());
        IllegalArgumentException tooLong = assertThrows(IllegalArgumentException.class, () -> QemuCommandLine.argv(
                Path.of("qemu"), config(List.of(new VmConfig.Disk("x".repeat(21), Path.of("/a"), false)), List.of()),
                TCG, ""));
        assertTrue(tooLong.getMessage().contains("1-20"), tooLong.getMessage());
    }

    /**
     * Under Yama's ptrace_scope 1 each back-end reads the VM's memory only if the VM declared
     * it; from its own PID namespace QEMU can name none, so it declares any.
     */
    @Test
    void everyVirtioFsBackEndIsDeclaredTheVmsPtracer() {
        java.util.function.Function<List<VmConfig.SharedDir>, String> jail = dirs -> {
            VmConfig c = new VmConfig("sb1", Path.of("/s/sb1"), Path.of("/g/vmlinux"), Path.of("/g/init.cpio"), 1, 256, "",
                    List.of(), dirs);
            List<String> argv = QemuCommandLine.jailedArgv(Path.of("/lib/rund-jail"), 2000007, 2000000, List.of(),
                    Path.of("/usr/bin/qemu-system-x86_64"), c, TCG, "console=ttyS0");
            return String.join(" ", argv.subList(0, argv.indexOf("--")));
        };
        VmConfig.SharedDir lower = new VmConfig.SharedDir("lower", Path.of("/s/sb1/virtiofs.sock"));
        VmConfig.SharedDir hostdirs = new VmConfig.SharedDir("hostdirs", Path.of("/s/sb1/hostfs.sock"));
        assertTrue(jail.apply(List.of(lower)).endsWith(" --ptracer any"), jail.apply(List.of(lower)));
        assertTrue(jail.apply(List.of(lower, hostdirs)).endsWith(" --ptracer any"), jail.apply(List.of(lower, hostdirs)));
        assertFalse(jail.apply(List.of()).contains("--ptracer"), "no back-end, nobody declared");
    }

    @Test
    void aJailedVmGetsItsSocketsDiskAndTapAsDescriptorsFromTheJailer() {
        VmConfig c = new VmConfig("sb1", Path.of("/s/sb1"), Path.of("/g/vmlinux"), Path.of("/g/init.cpio"), 1, 256, "",
                List.of(new VmConfig.Disk("upper0", Path.of("/proc/42/fd/7"), false)),
                List.of(new VmConfig.SharedDir("lower", Path.of("/s/sb1/virtiofs.sock"))),
                VmConfig.Ram.cloneOf(Path.of("/t/ram"), Path.of("/t/state")), "rt0123456789ab");
        String s = String.join(" ", QemuCommandLine.jailedArgv(Path.of("/lib/rund-jail"), 2000007, 2000000, List.of(993),
                Path.of("/usr/bin/qemu-system-x86_64"), c, TCG, "console=ttyS0"));
        assertTrue(s.startsWith("/lib/rund-jail --uid 2000007 --gid 2000000 --group 993 --isolate /s/sb1/qemu.pid"
                + " --bind /t/ram --bind /g/vmlinux --bind /g/init.cpio --listen 3=/s/sb1/qmp.sock"
                + " --listen 4=/s/sb1/agent.sock --connect 5=/s/sb1/virtiofs.sock --ptracer any --open 10=rwd:/proc/42/fd/7"
                + " --open 11=rd:/proc/42/fd/7 --tap 20=rt0123456789ab --bind /t/state --"
                + " /usr/bin/qemu-system-x86_64 -name rund-sb1 "), s);
        for (String arg : List.of("-chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control",
                "-chardev socket,id=agent,fd=4,server=on,wait=off", "-chardev socket,id=fs0,fd=5 ",
                "-add-fd fd=10,set=10 -add-fd fd=11,set=10 -drive file=/dev/fdset/10,if=none,id=disk0,format=raw,cache.direct=on,discard=unmap,file.locking=off,werror=report,rerror=report ",
                "-netdev tap,id=net0,fd=20 ",
                "memory-backend-file,id=mem,size=256M,mem-path=/t/ram,share=off,readonly=on,rom=off")) {
            assertTrue(s.contains(arg), arg + " in " + s);
        }
        // Nothing after "--" names a path QEMU would have to open in the sandbox's directory.
        assertTrue(!s.substring(s.indexOf(" -- ")).contains("/s/sb1"), s);
    }

    @Test
    void aVmIsKnownByItsBinaryAndItsWorkingDirectory(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        QemuHypervisor sleep = new QemuHypervisor(Path.of("/usr/bin/sleep"), TCG);
        Path dir = java.nio.file.Files.createDirectory(tmp.resolve("spare-1"));
        Process p = new ProcessBuilder("/usr/bin/sleep", "60").directory(dir.toFile()).start();
        Process other = new ProcessBuilder("/bin/sh", "-c", "sleep 60; : " + dir).directory(dir.toFile()).start();
        try {
            assertTrue(sleep.isVmOf(p.toHandle(), dir));
            assertFalse(sleep.isVmOf(p.toHandle(), tmp), "another directory");
            assertFalse(sleep.isVmOf(other.toHandle(), dir), "another binary in the directory");
            assertFalse(new QemuHypervisor(Path.of("/usr/bin/qemu-system-x86_64"), TCG).isVmOf(p.toHandle(), dir),
                    "not this hypervisor's binary");
            // A spare taken by a sandbox: its directory renamed under the running VM.
            Path renamed = java.nio.file.Files.move(dir, tmp.resolve("sandbox-1"));
            assertTrue(sleep.isVmOf(p.toHandle(), renamed), "the directory, renamed");
            assertEquals(java.util.Optional.of(renamed), sleep.vmDirOf(p.toHandle(),
                    io.rund.vm.Hypervisor.dirsByKey(List.of(tmp, renamed))));
        } finally {
            other.descendants().forEach(ProcessHandle::destroyForcibly);
            other.destroyForcibly().waitFor();
            p.destroyForcibly().waitFor();
        }
    }
}
