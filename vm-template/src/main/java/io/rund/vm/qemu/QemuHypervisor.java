package io.rund.vm.qemu;

import io.rund.vm.Accelerator;
import io.rund.vm.Hypervisor;
import io.rund.vm.HypervisorException;
import io.rund.vm.Vm;
import io.rund.vm.VmConfig;
import io.rund.vm.VmJail;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/** Runs VMs with qemu-system-x86_64 on the microvm machine, controlled over QMP. */
public final class QemuHypervisor implements Hypervisor {

    private static final System.Logger LOG = System.getLogger(QemuHypervisor.class.getName());
    private static final Duration QMP_DEADLINE = Duration.ofSeconds(10);

    /** This hypervisor's name, part of every template key. */
    public static final String NAME = "qemu";

    private final Path qemu;
    private final Accelerator accelerator;
    private final String baseCmdline;
    /** Null: QEMU runs as the daemon's user, opening its own files (tests of the VM alone). */
    private final VmJail jail;
    /** A jailed VM's supplementary groups: /dev/kvm's under KVM, so that it can open the device. */
    private final List<Integer> vmGroups;

    /** QEMU as the daemon's user; for tests of the VM alone. The daemon jails its VMs. */
    public QemuHypervisor(Path qemu, Accelerator accelerator) {
        this(qemu, accelerator, null);
    }

    /** Every QEMU started by {@code jail}'s rund-jail as a uid of its own, or as the daemon's user for null. */
    public QemuHypervisor(Path qemu, Accelerator accelerator, VmJail jail) {
        this.qemu = qemu;
        this.accelerator = accelerator;
        this.baseCmdline = baseCmdline(accelerator);
        this.jail = jail;
        this.vmGroups = jail == null || accelerator.kind() != Accelerator.Kind.KVM ? List.of() : kvmGroup();
    }

    @Override
    public String toString() {
        return "qemu " + qemu + ", accelerator " + accelerator + ", "
                + (jail == null ? "as the daemon's user" : "each VM confined: " + jail);
    }

    private static List<Integer> kvmGroup() {
        try {
            return List.of((Integer) Files.getAttribute(Path.of("/dev/kvm"), "unix:gid"));
        } catch (IOException e) {
            LOG.log(Level.WARNING, "hypervisor qemu: /dev/kvm''s group: {0}", e.getMessage());
            return List.of();
        }
    }

    /**
     * The guest kernel command line. Under TCG the TSC frequency is pinned to the host's:
     * microvm guests sometimes hang in early TSC calibration otherwise (DESIGN.md's quirks).
     * Kernel messages below "notice" stay off the console; the agent logs at notice. The
     * kernel's log and its pointers are for CAP_SYSLOG only (dmesg_restrict, kptr_restrict:
     * a hardened host's settings, set before init runs), so a container reads neither, as
     * under runc on such a host.
     */
    static String baseCmdline(Accelerator accelerator) {
        String common = "console=ttyS0 loglevel=6 panic=-1 sysctl.kernel.dmesg_restrict=1 sysctl.kernel.kptr_restrict=1";
        return accelerator.kind() == Accelerator.Kind.KVM ? common
                : common + " tsc=reliable tsc_early_khz=" + hostTscKhz();
    }

    private static long hostTscKhz() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("cpu MHz")) {
                    return Math.round(Double.parseDouble(line.substring(line.indexOf(':') + 1).trim()) * 1000);
                }
            }
        } catch (IOException | NumberFormatException e) {
            throw new IllegalStateException("read the host's CPU frequency from /proc/cpuinfo: " + e, e);
        }
        throw new IllegalStateException("/proc/cpuinfo has no cpu MHz line");
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public Accelerator accelerator() {
        return accelerator;
    }

    /**
     * A VM of this hypervisor is a process of its binary (a binary replaced by a package
     * upgrade reads "<path> (deleted)"; a jailed QEMU sees /usr at its own path), started in
     * its VM's directory, which stays its working directory.
     */
    @Override
    public java.util.Optional<Object> vmDirKey(ProcessHandle process) {
        String exe = process.info().command().orElse("");
        if (!exe.equals(qemu.toString()) && !exe.equals(qemu + " (deleted)")) {
            return java.util.Optional.empty();
        }
        // /proc/PID/cwd followed (not read as a link): the directory itself, in whatever namespace.
        return Hypervisor.dirKey(Path.of("/proc", Long.toString(process.pid()), "cwd"));
    }

    @Override
    public VmJail jail() {
        return jail;
    }

    @Override
    public void grantVmRead(Path p) throws IOException {
        if (jail != null) {
            jail.grantRead(p);
        }
    }

    @Override
    public String machine(VmConfig c) {
        Path vm = Path.of("/vm");
        List<VmConfig.Disk> disks = new java.util.ArrayList<>();
        for (int i = 0; i < c.disks().size(); i++) {
            VmConfig.Disk d = c.disks().get(i);
            disks.add(new VmConfig.Disk(d.serial(), vm.resolve("disk" + i), d.readOnly()));
        }
        List<VmConfig.SharedDir> shared = new java.util.ArrayList<>();
        for (int i = 0; i < c.sharedDirs().size(); i++) {
            shared.add(new VmConfig.SharedDir(c.sharedDirs().get(i).tag(), vm.resolve("fs" + i)));
        }
        VmConfig.Ram ram = c.ram().file() == null ? VmConfig.Ram.ANONYMOUS : VmConfig.Ram.template(vm.resolve("ram"));
        VmConfig normal = new VmConfig("vm", vm, c.kernel(), c.initramfs(), c.vcpus(), c.memoryMiB(), c.kernelArgs(), disks,
                shared, ram, c.tap() == null ? null : "tap", 0);
        return String.join(" ", QemuCommandLine.argv(qemu, normal, accelerator, baseCmdline));
    }

    /** QEMU's argv; jailed, rund-jail's argv for the VM's {@code uid}. */
    List<String> argv(VmConfig config, int uid) {
        if (jail == null) {
            return QemuCommandLine.argv(qemu, config, accelerator, baseCmdline);
        }
        return QemuCommandLine.jailedArgv(jail.jailer(), uid, jail.gid(), vmGroups, qemu, config, accelerator, baseCmdline);
    }

    @Override
    public Vm launch(VmConfig config) throws HypervisorException {
        return start(config, true);
    }

    @Override
    public Vm launchPaused(VmConfig config) throws HypervisorException {
        if (!config.ram().isClone()) {
            throw new IllegalArgumentException("vm sandbox=" + config.sandboxId() + ": only a clone can wait paused");
        }
        return start(config, false);
    }

    private Vm start(VmConfig config, boolean run) throws HypervisorException {
        String id = config.sandboxId();
        Path log = config.dir().resolve("qemu.log");
        long t0 = System.nanoTime();
        Process process;
        Thread messages;
        // The uid is the caller's: reserved before the VM's helper, which runs as it too, and given back by it.
        if (jail != null && config.uid() <= 0) {
            throw new IllegalArgumentException("vm sandbox=" + id + ": a jailed VM needs the uid its caller reserved, not "
                    + config.uid());
        }
        int uid = jail == null ? -1 : config.uid();
        try {
            if (uid >= 0 && config.ram().file() != null && config.ram().shared()) {
                // A template being built: its VM writes the RAM file every clone will read.
                if (!Files.exists(config.ram().file())) {
                    Files.createFile(config.ram().file());
                }
                jail.giveTo(config.ram().file(), uid);
            }
            // The VM's directory is its working directory: recovery tells rund's VMs by it.
            Files.deleteIfExists(QemuCommandLine.pidFile(config.dir()));
            process = new ProcessBuilder(argv(config, uid)).directory(config.dir().toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        } catch (IOException e) {
            throw new HypervisorException("launch vm sandbox=" + id + ": start " + qemu + ": " + e.getMessage(), e);
        }
        try {
            // stdout is the guest's console, stderr QEMU's own messages: each into a capped log.
            CappedLog.pump(process.getInputStream(), config.consoleLog(), CappedLog.CAP, "console-" + id);
            messages = CappedLog.pump(process.getErrorStream(), log, CappedLog.CAP, "qemu-log-" + id);
        } catch (IOException e) {
            process.destroyForcibly();
            throw new HypervisorException("launch vm sandbox=" + id + ": open its logs in " + config.dir() + ": "
                    + e.getMessage(), e);
        }
        try {
            QmpClient qmp = QmpClient.connect(config.qmpSocket(), id, QMP_DEADLINE, process.toHandle());
            long t1 = System.nanoTime();
            long t2 = t1;
            if (config.ram().isClone()) {
                // The template's device state; its RAM is the file QEMU already mapped.
                qmp.execute(new QmpCommand.IgnoreShared(), QMP_DEADLINE);
                qmp.execute(new QmpCommand.MigrateIncoming(migrationFile(config.ram().incomingState())), QMP_DEADLINE);
                awaitMigration(qmp, id, QMP_DEADLINE);
                t2 = System.nanoTime();
                if (run) {
                    qmp.execute(new QmpCommand.Cont(), QMP_DEADLINE);
                }
            }
            // Jailed, the process is the jailer, which waits for QEMU in its own PID namespace.
            ProcessHandle vmProcess = uid < 0 ? process.toHandle() : jailedQemu(config, process);
            LOG.log(Level.INFO, "vm sandbox={0}: launched{6}, pid {1}{7}, {2}{3} (QMP up {4} ms{5})", id, vmProcess.pid(),
                    accelerator.kind(), config.ram().isClone() ? ", cloned from " + config.ram().file().getParent() : "",
                    (t1 - t0) / 1_000_000, config.ram().isClone() ? ", state loaded " + (t2 - t1) / 1_000_000 + " ms" : "", run ? "" : " paused",
                    uid < 0 ? "" : " uid " + uid);
            return new QemuVm(id, process, vmProcess, qmp, jail, uid);
        } catch (HypervisorException | InterruptedException | RuntimeException e) {
            process.descendants().forEach(ProcessHandle::destroyForcibly);
            process.destroyForcibly();
            try {
                process.waitFor();
                messages.join(2000); // what QEMU said last is in the pipe until the pump has it
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
            }
            throw new HypervisorException("launch vm sandbox=" + id + ": " + e.getMessage() + "; qemu said: "
                    + CappedLog.tail(log, 2000), e);
        }
    }

    /**
     * The QEMU the jailer started: its pid, which the jailer wrote before QEMU ran (QMP's
     * greeting came, so it runs), checked to be the jailer's child.
     */
    private static ProcessHandle jailedQemu(VmConfig config, Process jailer) throws HypervisorException {
        Path file = QemuCommandLine.pidFile(config.dir());
        try {
            long pid = Long.parseLong(Files.readString(file).strip());
            return ProcessHandle.of(pid).filter(p -> p.parent().map(jailer.toHandle()::equals).orElse(false))
                    .orElseThrow(() -> new HypervisorException("vm sandbox=" + config.sandboxId() + ": pid " + pid + " in "
                            + file + " is not the jailer's QEMU", null));
        } catch (IOException | NumberFormatException e) {
            throw new HypervisorException("vm sandbox=" + config.sandboxId() + ": read QEMU's pid from " + file + ": "
                    + e.getMessage(), e);
        }
    }

    @Override
    public Vm adopt(String id, Path dir, ProcessHandle process, int uid) throws HypervisorException {
        if (!isVmOf(process, dir)) {
            throw new HypervisorException("adopt vm sandbox=" + id + ": pid " + process.pid() + " is not a VM of " + dir, null);
        }
        try {
            QmpClient qmp = QmpClient.connect(dir.resolve("qmp.sock"), id, QMP_DEADLINE, process);
            LOG.log(Level.INFO, "vm sandbox={0}: adopted, pid {1}{2}", id, process.pid(), uid < 0 ? "" : " uid " + uid);
            return new QemuVm(id, process, qmp, jail, uid);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new HypervisorException("adopt vm sandbox=" + id + ": interrupted", e);
        }
    }

    /**
     * The migration URI of a state file. QEMU reads and writes it itself: its seccomp filter
     * forbids the process an exec: URI would start.
     */
    static String migrationFile(Path p) {
        if (!p.isAbsolute()) {
            throw new IllegalArgumentException("migration file " + p + " is not an absolute path");
        }
        return "file:" + QemuCommandLine.opt(p);
    }

    /** Waits until a migration, outgoing or incoming, has completed; fails naming its status otherwise. */
    static void awaitMigration(QmpClient qmp, String id, Duration deadline) throws HypervisorException {
        long end = System.nanoTime() + deadline.toNanos();
        while (true) {
            String status = qmp.execute(new QmpCommand.QueryMigrate(), deadline).path("status").asText("");
            if (status.equals("completed")) {
                return;
            }
            if (status.equals("failed") || status.equals("cancelled") || System.nanoTime() > end) {
                throw new HypervisorException("vm sandbox=" + id + ": migration " + (status.isEmpty() ? "did not start" : status)
                        + " (" + qmp.execute(new QmpCommand.QueryMigrate(), deadline) + ")", null);
            }
            try {
                Thread.sleep(2);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new HypervisorException("vm sandbox=" + id + ": interrupted waiting for migration", e);
            }
        }
    }
}
