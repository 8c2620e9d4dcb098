package io.rund.vm.qemu;

import io.rund.vm.Accelerator;
import io.rund.vm.VmConfig;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * QEMU's argv, built from one typed record per group of arguments. Nothing here starts
 * QEMU: tests compare the produced strings.
 */
public final class QemuCommandLine {

    /** One group of QEMU arguments. */
    sealed interface Group permits Base, Machine, Accel, Memory, Smp, Boot, Console, Qmp, AgentPort, SharedDir, Ptracer, Disk,
            Nic, Incoming, Sandbox {
        List<String> args();

        /** What rund-jail prepares for this group before QEMU starts (jailed VMs only). */
        default List<String> jail() {
            return List.of();
        }
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
     * second. pit=off: the guest's clock events come from its local APIC, and a PIT left
     * counting by the firmware makes QEMU's main loop wake 36 times a second in every VM
     * for nothing (measured: an idle VM's QEMU CPU drops ~6-fold). Guest RAM is the
     * backend "mem".
     */
    record Machine() implements Group {
        public List<String> args() {
            return List.of("-bios", "qboot.rom", "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on,pit=off,memory-backend=mem");
        }
    }

    /** KVM with the host's CPU model, or TCG with a bounded translation cache. */
    record Accel(Accelerator.Kind kind, int tbSizeMiB) implements Group {
        public List<String> args() {
            return kind == Accelerator.Kind.KVM
                    ? List.of("-accel", "kvm", "-cpu", "host")
                    : List.of("-accel", "tcg,tb-size=" + tbSizeMiB, "-cpu", "max");
        }

        public List<String> jail() {
            return kind == Accelerator.Kind.KVM ? List.of("--bind", "/dev/kvm") : List.of();
        }
    }

    /**
     * Guest RAM "mem": a shared memfd, or a template's file mapped shared (building) or
     * privately (a clone, which opens the file read-only: it writes only its own copies of
     * the pages, and no VM may write a template every clone reads).
     */
    record Memory(int mib, VmConfig.Ram ram) implements Group {
        public List<String> args() {
            if (ram.file() == null) {
                return List.of("-m", mib + "M", "-object", "memory-backend-memfd,id=mem,size=" + mib + "M,share=on");
            }
            return List.of("-m", mib + "M", "-object", "memory-backend-file,id=mem,size=" + mib + "M,mem-path="
                    + opt(ram.file()) + (ram.shared() ? ",share=on" : ",share=off,readonly=on,rom=off"));
        }

        /** A build writes its RAM file and, later, its state file beside it: that directory, writable. */
        public List<String> jail() {
            if (ram.file() == null) {
                return List.of();
            }
            return ram.shared() ? List.of("--bind-rw", ram.file().getParent().toString())
                    : List.of("--bind", ram.file().toString());
        }
    }

    /** A clone waits for its template's device state {@code state}, given over QMP (migrate-incoming). */
    record Incoming(Path state) implements Group {
        public List<String> args() {
            return List.of("-incoming", "defer");
        }

        public List<String> jail() {
            return List.of("--bind", state.toString());
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

        public List<String> jail() {
            return List.of("--bind", kernel.toString(), "--bind", initramfs.toString());
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

    /**
     * QMP on a unix socket: QEMU binds it, or (jailed, {@code fd} >= 0) the jailer does and
     * QEMU gets the listening descriptor.
     */
    record Qmp(Path socket, int fd) implements Group {
        public List<String> args() {
            return fd < 0 ? List.of("-qmp", "unix:" + opt(socket) + ",server=on,wait=off")
                    : List.of("-chardev", "socket,id=qmp,fd=" + fd + ",server=on,wait=off", "-mon", "chardev=qmp,mode=control");
        }

        public List<String> jail() {
            return fd < 0 ? List.of() : List.of("--listen", fd + "=" + socket);
        }
    }

    /** The agent's channel: a virtio-serial port named rund.agent on a unix socket QEMU serves. */
    record AgentPort(Path socket, int fd) implements Group {
        public List<String> args() {
            return List.of("-device", "virtio-serial-device",
                    "-chardev", "socket,id=agent," + (fd < 0 ? "path=" + opt(socket) : "fd=" + fd) + ",server=on,wait=off",
                    "-device", "virtserialport,chardev=agent,name=rund.agent");
        }

        public List<String> jail() {
            return fd < 0 ? List.of() : List.of("--listen", fd + "=" + socket);
        }
    }

    /** A virtio-fs device whose vhost-user back-end listens on {@code socket} (jailed: connected by the jailer). */
    record SharedDir(int index, String tag, Path socket, int fd) implements Group {
        public List<String> args() {
            return List.of("-chardev", "socket,id=fs" + index + "," + (fd < 0 ? "path=" + opt(socket) : "fd=" + fd),
                    "-device", "vhost-user-fs-device,chardev=fs" + index + ",tag=" + tag);
        }

        public List<String> jail() {
            return fd < 0 ? List.of() : List.of("--connect", fd + "=" + socket);
        }
    }

    /**
     * Who besides its ancestors may reach the VM's memory under Yama's ptrace_scope 1: every
     * virtio-fs back-end must (process_vm_readv). QEMU runs in a PID namespace of its own,
     * where no back-end has a pid it could name, so it declares "any", which lets any process
     * that passes the kernel's other checks (the VM's own uid, which only its back-ends share,
     * or CAP_SYS_PTRACE) do what a declared one could.
     */
    record Ptracer(int backEnds) implements Group {
        public List<String> args() {
            return List.of();
        }

        public List<String> jail() {
            return backEnds == 0 ? List.of() : List.of("--ptracer", "any");
        }
    }

    /**
     * A virtio-blk disk. Jailed, the jailer opens the file and QEMU takes it from an fd set
     * {@code fd}: descriptor {@code fd} read-write (unless the disk is read-only) and
     * {@code fd + 1} read-only, since QEMU's block layer opens read-only first and the set
     * answers only an open whose access mode matches one of its descriptors.
     */
    record Disk(int index, String serial, Path file, boolean readOnly, int fd) implements Group {
        public List<String> args() {
            List<String> a = new ArrayList<>();
            String file = opt(this.file);
            if (fd >= 0) {
                if (!readOnly) {
                    a.addAll(List.of("-add-fd", "fd=" + fd + ",set=" + fd));
                }
                a.addAll(List.of("-add-fd", "fd=" + (fd + 1) + ",set=" + fd));
                file = "/dev/fdset/" + fd;
            }
            // The set's two descriptors are two open files of one inode, and QEMU's image locks (OFD
            // locks) on one conflict with those on the other; the disk is this VM's alone, so no lock.
            // An error (ENOSPC of a full store above all) goes to the guest, whose writer gets it as
            // under runc: QEMU's default for ENOSPC pauses the whole VM, which then never answers.
            // A writable disk bypasses the host's page cache (cache.direct=on, O_DIRECT): the guest
            // caches what it reads and writes itself, and a host cache of it would be a second copy
            // charged to the sandbox's memory cgroup, where dirty pages of a container's big write
            // got QEMU OOM-killed (the RunD paper's own point). Writes still complete in QEMU's
            // order as the guest flushes them (cache=none keeps writeback semantics to the guest).
            // What the guest discards, QEMU punches out of the file (discard=unmap): the blocks go
            // back to the store, and the layer owes it less.
            a.addAll(List.of("-drive", "file=" + file + ",if=none,id=disk" + index + ",format=raw"
                            + (readOnly ? ",readonly=on" : ",cache.direct=on,discard=unmap") + (fd >= 0 ? ",file.locking=off" : "")
                            + ",werror=report,rerror=report",
                    "-device", "virtio-blk-device,drive=disk" + index + ",serial=" + serial));
            return a;
        }

        public List<String> jail() {
            if (fd < 0) {
                return List.of();
            }
            // QEMU takes from a set only a descriptor whose O_DIRECT matches the open it makes.
            List<String> j = new ArrayList<>();
            if (!readOnly) {
                j.addAll(List.of("--open", fd + "=rwd:" + this.file));
            }
            j.addAll(List.of("--open", (fd + 1) + (readOnly ? "=r:" : "=rd:") + this.file));
            return j;
        }
    }

    /**
     * The VM's network device: virtio-net on a tap device with this name, which QEMU (or,
     * jailed, the jailer) creates and which goes when QEMU exits. No scripts run; the daemon
     * moves the tap into the pod's network namespace and connects it there. Every VM has
     * the same MAC until its agent takes the pod's.
     */
    record Nic(String tap, int fd) implements Group {
        static final String MAC = "02:72:75:6e:64:00";

        public List<String> args() {
            return List.of("-netdev", fd < 0 ? "tap,id=net0,ifname=" + tap + ",script=no,downscript=no" : "tap,id=net0,fd=" + fd,
                    "-device", "virtio-net-device,netdev=net0,mac=" + MAC);
        }

        public List<String> jail() {
            return fd < 0 ? List.of() : List.of("--tap", fd + "=" + tap);
        }
    }

    /** The descriptors a jailed QEMU gets, by what they carry. */
    static final int FD_QMP = 3, FD_AGENT = 4, FD_SHARED = 5, FD_DISK = 10, FD_NIC = 20;
    private static final int MAX_SHARED = FD_DISK - FD_SHARED, MAX_DISKS = (FD_NIC - FD_DISK) / 2;

    /** A path inside a QEMU option string: commas separate options, so they are refused. */
    static String opt(Path p) {
        String s = p.toString();
        if (s.indexOf(',') >= 0) {
            throw new IllegalArgumentException("path " + s + " has a comma, which QEMU options cannot carry");
        }
        return s;
    }

    private QemuCommandLine() {}

    /**
     * The groups for a VM, in the order QEMU gets them. {@code jailed}: QEMU cannot open its
     * sockets, disk and tap itself and gets them as descriptors from rund-jail.
     */
    static List<Group> groups(VmConfig c, Accelerator accel, String baseCmdline, boolean jailed) {
        if (jailed && (c.sharedDirs().size() > MAX_SHARED || c.disks().size() > MAX_DISKS)) {
            throw new IllegalArgumentException("a jailed VM has at most " + MAX_SHARED + " shared directories and "
                    + MAX_DISKS + " disks");
        }
        List<Group> g = new ArrayList<>(List.of(new Base(), new Machine(), new Accel(accel.kind(), 16),
                new Memory(c.memoryMiB(), c.ram()), new Smp(c.vcpus()),
                new Boot(c.kernel(), c.initramfs(),
                        c.kernelArgs().isEmpty() ? baseCmdline : baseCmdline + " " + c.kernelArgs()),
                new Console(), new Qmp(c.qmpSocket(), jailed ? FD_QMP : -1),
                new AgentPort(c.agentSocket(), jailed ? FD_AGENT : -1)));
        for (int i = 0; i < c.sharedDirs().size(); i++) {
            VmConfig.SharedDir d = c.sharedDirs().get(i);
            g.add(new SharedDir(i, checkName("virtio-fs tag", d.tag()), d.socket(), jailed ? FD_SHARED + i : -1));
        }
        if (jailed) {
            g.add(new Ptracer(c.sharedDirs().size()));
        }
        for (int i = 0; i < c.disks().size(); i++) {
            VmConfig.Disk d = c.disks().get(i);
            g.add(new Disk(i, checkName("disk serial", d.serial()), d.file(), d.readOnly(), jailed ? FD_DISK + 2 * i : -1));
        }
        if (c.tap() != null) {
            g.add(new Nic(c.tap(), jailed ? FD_NIC : -1));
        }
        if (c.ram().isClone()) {
            g.add(new Incoming(c.ram().incomingState()));
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

    /** Where the jailer writes a jailed QEMU's pid: in its VM's directory. */
    public static Path pidFile(Path vmDir) {
        return vmDir.resolve("qemu.pid");
    }

    /** QEMU's argv, for a QEMU that opens its own sockets, disk and tap (not jailed). */
    public static List<String> argv(Path qemu, VmConfig c, Accelerator accel, String baseCmdline) {
        return argv(qemu, groups(c, accel, baseCmdline, false), c);
    }

    /**
     * The argv of rund-jail starting QEMU as {@code uid}, in namespaces of its own whose root
     * holds only /usr, a few devices and the files the groups name ({@link Group#jail}); the
     * jailer writes QEMU's pid, as the host sees it, to {@link #pidFile}. Then "--", then
     * QEMU's argv with descriptors in place of paths.
     */
    public static List<String> jailedArgv(Path jailer, int uid, int gid, List<Integer> groups, Path qemu, VmConfig c,
            Accelerator accel, String baseCmdline) {
        List<Group> g = groups(c, accel, baseCmdline, true);
        List<String> argv = new ArrayList<>(List.of(jailer.toString(), "--uid", Integer.toString(uid), "--gid",
                Integer.toString(gid)));
        for (int group : groups) {
            argv.addAll(List.of("--group", Integer.toString(group)));
        }
        argv.addAll(List.of("--isolate", pidFile(c.dir()).toString()));
        if (!qemu.startsWith("/usr/")) {
            argv.addAll(List.of("--bind", qemu.toString()));
        }
        for (Group group : g) {
            argv.addAll(group.jail());
        }
        argv.add("--");
        argv.addAll(argv(qemu, g, c));
        return argv;
    }

    private static List<String> argv(Path qemu, List<Group> groups, VmConfig c) {
        List<String> argv = new ArrayList<>(List.of(qemu.toString(), "-name", "rund-" + c.sandboxId()));
        for (Group g : groups) {
            argv.addAll(g.args());
        }
        return argv;
    }
}
