package io.rund.sandbox.hypervisor.qemu;

import io.rund.sandbox.hypervisor.Accelerator;
import io.rund.sandbox.hypervisor.VmConfig;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * QEMU's argv, built from one typed record per group of arguments. Nothing here starts
 * QEMU: tests compare the produced strings.
 */
public final class QemuCommandLine {

    /** One group of QEMU arguments. */
    sealed interface Group permits Base, Machine, Accel, Memory, Smp, Boot, Console, Qmp, AgentPort, SharedDir, Disk,
            Nic, Incoming, Sandbox {
        List<String> args();
    }

    /** Nothing implicit: no default devices, no user config, no display, no reboot loop. */
    record Base() implements Group {
        public List<String> args() {
            return List.of("-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                    // vhost-user devices on microvm need modern virtio-mmio.
                    "-global", "virtio-mmio.force-legacy=false");
        }
    }

    /**
     * The microvm machine with qboot, which jumps straight to the kernel QEMU loaded (QEMU
     * 10 as Debian packages it would otherwise start SeaBIOS, which tries the disks first).
     * rtc=on: without an RTC the guest kernel polls the absent CMOS clock for a full
     * second. Guest RAM is the backend "mem".
     */
    record Machine() implements Group {
        public List<String> args() {
            return List.of("-bios", "qboot.rom", "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on,memory-backend=mem");
        }
    }

    /** KVM with the host's CPU model, or TCG with a bounded translation cache. */
    record Accel(Accelerator.Kind kind, int tbSizeMiB) implements Group {
        public List<String> args() {
            return kind == Accelerator.Kind.KVM
                    ? List.of("-accel", "kvm", "-cpu", "host")
                    : List.of("-accel", "tcg,tb-size=" + tbSizeMiB, "-cpu", "max");
        }
    }

    /** Guest RAM "mem": a shared memfd, or a template's file mapped shared (building) or privately (a clone). */
    record Memory(int mib, VmConfig.Ram ram) implements Group {
        public List<String> args() {
            if (ram.file() == null) {
                return List.of("-m", mib + "M", "-object", "memory-backend-memfd,id=mem,size=" + mib + "M,share=on");
            }
            return List.of("-m", mib + "M", "-object", "memory-backend-file,id=mem,size=" + mib + "M,mem-path="
                    + opt(ram.file()) + ",share=" + (ram.shared() ? "on" : "off"));
        }
    }

    /** A clone waits for its template's device state, given over QMP (migrate-incoming). */
    record Incoming() implements Group {
        public List<String> args() {
            return List.of("-incoming", "defer");
        }
    }

    record Smp(int vcpus) implements Group {
        public List<String> args() {
            return List.of("-smp", Integer.toString(vcpus));
        }
    }

    record Boot(Path kernel, Path initramfs, String cmdline) implements Group {
        public List<String> args() {
            return List.of("-kernel", kernel.toString(), "-initrd", initramfs.toString(), "-append", cmdline);
        }
    }

    /**
     * The guest's serial console on QEMU's stdout, which the daemon copies into a capped log
     * (a guest that prints forever must not fill the host's tmpfs).
     */
    record Console() implements Group {
        public List<String> args() {
            return List.of("-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console");
        }
    }

    /**
     * QEMU's own seccomp filter: no obsolete system calls, no privilege changes, no new
     * processes (so migration never uses exec:), no scheduler or resource changes.
     */
    record Sandbox() implements Group {
        public List<String> args() {
            return List.of("-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        }
    }

    record Qmp(Path socket) implements Group {
        private static final String PREFIX = "unix:";
        private static final String SUFFIX = ",server=on,wait=off";

        public List<String> args() {
            return List.of("-qmp", PREFIX + opt(socket) + SUFFIX);
        }

        /** The QMP socket an argv built here names, or null when it names none (or another shape). */
        static Path of(List<String> argv) {
            int i = argv.indexOf("-qmp");
            if (i < 0 || i + 1 >= argv.size()) {
                return null;
            }
            String v = argv.get(i + 1);
            if (!v.startsWith(PREFIX) || !v.endsWith(SUFFIX) || v.length() <= PREFIX.length() + SUFFIX.length()) {
                return null;
            }
            String path = v.substring(PREFIX.length(), v.length() - SUFFIX.length());
            return path.indexOf(',') >= 0 || !path.startsWith("/") ? null : Path.of(path);
        }
    }

    /** The agent's channel: a virtio-serial port named rund.agent on a unix socket QEMU serves. */
    record AgentPort(Path socket) implements Group {
        public List<String> args() {
            return List.of("-device", "virtio-serial-device",
                    "-chardev", "socket,id=agent,path=" + opt(socket) + ",server=on,wait=off",
                    "-device", "virtserialport,chardev=agent,name=rund.agent");
        }
    }

    record SharedDir(int index, String tag, Path socket) implements Group {
        public List<String> args() {
            return List.of("-chardev", "socket,id=fs" + index + ",path=" + opt(socket),
                    "-device", "vhost-user-fs-device,chardev=fs" + index + ",tag=" + tag);
        }
    }

    record Disk(int index, String serial, Path file, boolean readOnly) implements Group {
        public List<String> args() {
            return List.of("-drive", "file=" + opt(file) + ",if=none,id=disk" + index + ",format=raw"
                            + (readOnly ? ",readonly=on" : ""),
                    "-device", "virtio-blk-device,drive=disk" + index + ",serial=" + serial);
        }
    }

    /**
     * The VM's network device: virtio-net on a tap device QEMU creates with this name (and
     * removes when it exits). No scripts run; the daemon moves the tap into the pod's
     * network namespace and connects it there. Every VM has the same MAC until its agent
     * takes the pod's.
     */
    record Nic(String tap) implements Group {
        static final String MAC = "02:72:75:6e:64:00";

        public List<String> args() {
            return List.of("-netdev", "tap,id=net0,ifname=" + tap + ",script=no,downscript=no",
                    "-device", "virtio-net-device,netdev=net0,mac=" + MAC);
        }
    }

    /** A path inside a QEMU option string: commas separate options, so they are refused. */
    static String opt(Path p) {
        String s = p.toString();
        if (s.indexOf(',') >= 0) {
            throw new IllegalArgumentException("path " + s + " has a comma, which QEMU options cannot carry");
        }
        return s;
    }

    private QemuCommandLine() {}

    /** The groups for a VM, in the order QEMU gets them. */
    static List<Group> groups(VmConfig c, Accelerator accel, String baseCmdline) {
        List<Group> g = new ArrayList<>(List.of(new Base(), new Machine(), new Accel(accel.kind(), 16),
                new Memory(c.memoryMiB(), c.ram()), new Smp(c.vcpus()),
                new Boot(c.kernel(), c.initramfs(),
                        c.kernelArgs().isEmpty() ? baseCmdline : baseCmdline + " " + c.kernelArgs()),
                new Console(), new Qmp(c.qmpSocket()), new AgentPort(c.agentSocket())));
        for (int i = 0; i < c.sharedDirs().size(); i++) {
            VmConfig.SharedDir d = c.sharedDirs().get(i);
            g.add(new SharedDir(i, checkName("virtio-fs tag", d.tag()), d.socket()));
        }
        for (int i = 0; i < c.disks().size(); i++) {
            VmConfig.Disk d = c.disks().get(i);
            g.add(new Disk(i, checkName("disk serial", d.serial()), d.file(), d.readOnly()));
        }
        if (c.tap() != null) {
            g.add(new Nic(c.tap()));
        }
        if (c.ram().isClone()) {
            g.add(new Incoming());
        }
        g.add(new Sandbox());
        return g;
    }

    /** Tags and serials go into option strings and the guest looks them up: keep them plain. */
    private static String checkName(String what, String name) {
        if (!name.matches("[A-Za-z0-9_.-]{1,20}")) {
            throw new IllegalArgumentException(what + " " + name + " is not 1-20 characters of [A-Za-z0-9_.-]");
        }
        return name;
    }

    public static List<String> argv(Path qemu, VmConfig c, Accelerator accel, String baseCmdline) {
        List<String> argv = new ArrayList<>(List.of(qemu.toString(), "-name", "rund-" + c.sandboxId()));
        for (Group g : groups(c, accel, baseCmdline)) {
            argv.addAll(g.args());
        }
        return argv;
    }
}
