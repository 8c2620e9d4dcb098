package io.rund.sandbox.lifecycle;

import io.rund.agent.v1.CreateContainerRequest;
import io.rund.agent.v1.Mount;
import io.rund.agent.v1.Process;
import io.rund.agent.v1.Rootfs;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.StoreException;
import io.rund.rootfs.WritableLayer;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.cgroup.CgroupException;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.sandbox.hypervisor.Hypervisor;
import io.rund.sandbox.hypervisor.HypervisorException;
import io.rund.sandbox.hypervisor.Vm;
import io.rund.sandbox.hypervisor.VmConfig;
import io.rund.sandbox.template.TemplateException;
import io.rund.sandbox.template.TemplateStore;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.List;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Starts and stops sandboxes, and cleans up after a daemon that died.
 *
 * <p>A start is one linear script, each step named, each undone in reverse order if a
 * later one fails: state directory → cgroup from the pool → read-only layer (share and
 * its vhost-user-fs back-end, then the first container's image on it) → writable layer →
 * VM, cloned from a template or booted cold → agent
 * (deadline) → first container. The state file is rewritten after each step, so that
 * {@link #recover()} finds what a crash left.
 */
public final class SandboxManager {

    private static final System.Logger LOG = System.getLogger(SandboxManager.class.getName());
    private static final Pattern ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");

    /** The one rule for sandbox (and task) ids on the host: it names directories and cgroups. */
    public static boolean isValidId(String id) {
        return ID.matcher(id).matches();
    }
    /** Host memory a VM costs beyond its guest RAM: QEMU itself and TCG's code cache. */
    static final long VM_OVERHEAD_BYTES = 160L << 20;
    public static final String LOWER_TAG = "lower";
    public static final String UPPER_SERIAL = "upper0";
    private static final List<String> DEFAULT_CAPS = List.of("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID",
            "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE");

    /** Where things are and how large a VM is. */
    public record Config(Path stateRoot, Path kernel, Path initramfs, int vcpus, int vmMemoryMiB,
            Duration agentDeadline) {}

    private final Config config;
    private final Hypervisor hypervisor;
    private final CgroupPool pool;
    private final WritableLayerStore store;
    private final TemplateStore templates;
    private final SecureRandom random = new SecureRandom();

    /** A manager that cold-boots every VM. */
    public SandboxManager(Config config, Hypervisor hypervisor, CgroupPool pool, WritableLayerStore store)
            throws IOException {
        this(config, hypervisor, pool, store, null);
    }

    /**
     * A manager that clones VMs from {@code templates} (built on first need), and
     * cold-boots when there is no template store (null) or a clone fails.
     */
    public SandboxManager(Config config, Hypervisor hypervisor, CgroupPool pool, WritableLayerStore store,
            TemplateStore templates) throws IOException {
        this.config = config;
        this.hypervisor = hypervisor;
        this.pool = pool;
        this.store = store;
        this.templates = templates;
        Files.createDirectories(config.stateRoot());
    }

    /** What a template for this manager's VMs is made of: the same kernel, size and disk as a cold boot. */
    public TemplateStore.Spec templateSpec() throws IOException {
        return new TemplateStore.Spec(config.kernel(), config.initramfs(), config.vcpus(), config.vmMemoryMiB(),
                Files.size(store.template()));
    }

    /** An undo step of a start. */
    private interface Undo {
        void run() throws Exception;
    }

    /** Starts a sandbox with its first container, whose id becomes the sandbox's. */
    public Sandbox start(ContainerSpec spec) throws SandboxException {
        String id = spec.id();
        if (!isValidId(id)) {
            throw new SandboxException(SandboxException.Kind.INVALID_ARGUMENT, "sandbox id " + id
                    + " must be 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit", null);
        }
        Path dir = config.stateRoot().resolve(id);
        Deque<Undo> undo = new ArrayDeque<>();
        String step = "create its state directory";
        long started = System.nanoTime();
        try {
            Files.createDirectory(dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
            undo.push(() -> deleteTree(dir));
            SandboxState state = new SandboxState(id, "starting", "", 0, hypervisor.accelerator().kind().name(), "");
            state.write(dir);

            step = "claim a cgroup";
            Cgroup cgroup = pool.claim(id);
            undo.push(() -> killAndRelease(cgroup));
            cgroup.setLimits(new Cgroup.Limits(((long) config.vmMemoryMiB() << 20) + VM_OVERHEAD_BYTES,
                    spec.cpuQuotaMicros(), 100_000, 512));
            state = new SandboxState(id, "starting", cgroup.slot(), 0, state.accelerator(), "");
            state.write(dir);

            step = "prepare the read-only layer";
            ReadOnlyLayer readOnly = ReadOnlyLayer.start(id, dir);
            undo.push(readOnly::close);
            String image = readOnly.add(id, spec.rootfs());

            step = "create the writable layer";
            Launched launched;
            try (WritableLayer writable = store.create(id)) {
                step = "launch the VM";
                launched = launch(id, dir, List.of(new VmConfig.Disk(UPPER_SERIAL, writable.procPath(), false)),
                        List.of(new VmConfig.SharedDir(LOWER_TAG, readOnly.socket())));
                // QEMU has opened the layer by the time QMP answered; ours closes here.
            }
            Vm vm = launched.vm();
            undo.push(vm::close);
            cgroup.bind(vm.pid());
            state = new SandboxState(id, "starting", cgroup.slot(), vm.pid(), state.accelerator(), launched.boot());
            state.write(dir);

            step = "wait for the agent";
            AgentClient agent = AgentClient.connect(dir.resolve("agent.sock"), config.agentDeadline(), Duration.ofSeconds(30));
            undo.push(agent::close);
            byte[] seed = new byte[64];
            random.nextBytes(seed);
            agent.setTime(Instant.now());
            agent.reseedRandom(seed);

            step = "create the container";
            agent.createContainer(containerRequest(spec, image, ""));
            state.with("running").write(dir);
            LOG.log(Level.INFO, "sandbox={0}: started in {1} ms ({2}, {3})", id, (System.nanoTime() - started) / 1_000_000,
                    hypervisor.accelerator().kind(), launched.boot());
            return new Sandbox(this, id, dir, cgroup, readOnly, vm, agent, image, launched.boot());
        } catch (FileAlreadyExistsException e) {
            throw new SandboxException(SandboxException.Kind.ALREADY_EXISTS, "start sandbox=" + id + ": it exists", e);
        } catch (Exception e) {
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            rollback(id, undo);
            SandboxException.Kind kind = e instanceof StoreException && step.contains("read-only")
                    ? SandboxException.Kind.INVALID_ARGUMENT : SandboxException.Kind.FAILED;
            throw new SandboxException(kind, "start sandbox=" + id + ": " + step + ": " + e.getMessage(), e);
        }
    }

    /** A launched VM and how it started: "cold" or "clone <template key>". */
    private record Launched(Vm vm, String boot) {}

    /**
     * Clones the VM from its template when there is a template store, and boots it cold
     * when there is none or the clone fails (the failure is logged). Template and cold
     * boot have the same devices in the same order, so the guest finds the same disk and
     * file system either way.
     */
    private Launched launch(String id, Path dir, List<VmConfig.Disk> disks, List<VmConfig.SharedDir> shared)
            throws HypervisorException {
        if (templates != null) {
            TemplateStore.Template t = null;
            try {
                t = templates.get(templateSpec());
                Vm vm = hypervisor.launch(new VmConfig(id, dir, config.kernel(), config.initramfs(), config.vcpus(),
                        config.vmMemoryMiB(), "", disks, shared, t.cloneRam()));
                return new Launched(vm, "clone " + t.key());
            } catch (TemplateException | HypervisorException | IOException e) {
                // A template's own failures name its key; a failed launch names it here.
                LOG.log(Level.WARNING, "sandbox={0}: clone {1}failed, booting cold: {2}", id,
                        t == null ? "" : "of template " + t.key() + " ", e.getMessage());
            }
        }
        return new Launched(hypervisor.launch(new VmConfig(id, dir, config.kernel(), config.initramfs(), config.vcpus(),
                config.vmMemoryMiB(), "", disks, shared)), "cold");
    }

    private static void rollback(String id, Deque<Undo> undo) {
        while (!undo.isEmpty()) {
            try {
                undo.pop().run();
            } catch (Exception e) {
                LOG.log(Level.WARNING, "sandbox={0}: undo failed: {1}", id, e.getMessage());
            }
        }
    }

    /**
     * The agent's request for a container whose image is at {@code lowerDir} of the share
     * and whose writes go to {@code upperDir} of the disk ("" for the disk's root: the
     * sandbox's first container, whose writes live as long as the sandbox).
     */
    static CreateContainerRequest containerRequest(ContainerSpec spec, String lowerDir, String upperDir) {
        Process process = spec.process() != null ? spec.process()
                : Process.newBuilder().addAllArgs(spec.args()).addAllEnv(spec.env()).setCwd(spec.cwd())
                        .addAllBounding(DEFAULT_CAPS).addAllEffective(DEFAULT_CAPS).addAllPermitted(DEFAULT_CAPS)
                        .setTerminal(spec.terminal()).build();
        return CreateContainerRequest.newBuilder()
                .setContainerId(spec.id())
                .setRootfs(Rootfs.newBuilder().setLowerTag(LOWER_TAG).setLowerDir(lowerDir)
                        .setUpperDiskSerial(UPPER_SERIAL).setUpperDir(upperDir))
                .setHostname(spec.hostname())
                .addMounts(mount("/proc", "proc", "proc", List.of("nosuid", "noexec", "nodev")))
                .addMounts(mount("/dev", "tmpfs", "tmpfs", List.of("nosuid", "strictatime", "mode=755", "size=65536k")))
                .addMounts(mount("/dev/pts", "devpts", "devpts",
                        List.of("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")))
                .addMounts(mount("/dev/shm", "tmpfs", "shm", List.of("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")))
                .addMounts(mount("/dev/mqueue", "mqueue", "mqueue", List.of("nosuid", "noexec", "nodev")))
                .addMounts(mount("/sys", "sysfs", "sysfs", List.of("nosuid", "noexec", "nodev", "ro")))
                .addAllMaskedPaths(List.of("/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"))
                .addAllReadonlyPaths(List.of("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"))
                .setProcess(process)
                .build();
    }

    private static Mount mount(String destination, String type, String source, List<String> options) {
        return Mount.newBuilder().setDestination(destination).setType(type).setSource(source).addAllOptions(options)
                .build();
    }

    /** The last steps of a stop, shared with recovery: cgroup back to the pool, state removed. */
    void release(String id, Path dir, Cgroup cgroup) {
        try {
            killAndRelease(cgroup);
        } catch (CgroupException e) {
            LOG.log(Level.WARNING, "sandbox={0}: release cgroup: {1}", id, e.getMessage());
        }
        try {
            deleteTree(dir);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "sandbox={0}: remove {1}: {2}", id, dir, e.getMessage());
        }
        LOG.log(Level.INFO, "sandbox={0}: stopped", id);
    }

    /** Kills whatever is left in the cgroup (bounded wait) and gives it back to the pool. */
    private void killAndRelease(Cgroup cgroup) throws CgroupException {
        long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        List<Long> left;
        while (!(left = cgroup.pids()).isEmpty()) {
            for (long pid : left) {
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
            }
            if (System.nanoTime() > end) {
                throw new CgroupException(cgroup + " still holds " + left + " after SIGKILL");
            }
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new CgroupException("interrupted while emptying " + cgroup);
            }
        }
        pool.release(cgroup);
    }

    /**
     * Cleans everything a previous daemon left: for each state directory, its processes
     * (found through its cgroup, and through the state file for those not yet bound), its
     * image mount, its cgroup and the directory; then cgroups claimed with no directory.
     * Re-adopting running sandboxes instead is left to the shim (issue 5), which knows
     * whether containerd still wants them.
     *
     * @return the ids cleaned
     */
    public List<String> recover() throws IOException {
        List<String> cleaned = new java.util.ArrayList<>();
        try (Stream<Path> dirs = Files.list(config.stateRoot())) {
            for (Path dir : dirs.filter(Files::isDirectory).toList()) {
                String id = dir.getFileName().toString();
                if (!isValidId(id)) {
                    continue; // not a sandbox's: no sandbox id has this form
                }
                cleanup(id);
                cleaned.add(id);
                LOG.log(Level.INFO, "sandbox={0}: cleaned up after a previous daemon", id);
            }
        }
        for (Cgroup orphan : pool.claimed().values()) {
            try {
                killAndRelease(orphan);
                cleaned.add(orphan.sandboxId());
            } catch (CgroupException e) {
                LOG.log(Level.WARNING, "{0}: {1}", orphan, e.getMessage());
            }
        }
        return cleaned;
    }

    /**
     * Cleans one sandbox from what is on disk: its processes (through its cgroup, and
     * through the state file for those not yet bound), its image mount, its cgroup and its
     * directory. For a sandbox whose daemon-side object is gone (a crash, or containerd's
     * last-resort delete). Cleaning a sandbox that does not exist is a no-op.
     */
    public void cleanup(String id) throws IOException {
        if (!isValidId(id)) {
            throw new IllegalArgumentException("sandbox id " + id + " is not valid");
        }
        Path dir = config.stateRoot().resolve(id);
        if (Files.isDirectory(dir)) {
            try {
                SandboxState state = SandboxState.read(dir);
                killIfOurs(state.vmPid(), dir);
            } catch (IOException e) {
                LOG.log(Level.INFO, "sandbox={0}: no readable state ({1}); cleaning what is there", id, e.getMessage());
            }
        }
        Cgroup cgroup = pool.claimed().get(id);
        if (cgroup != null) {
            try {
                killAndRelease(cgroup);
            } catch (CgroupException e) {
                LOG.log(Level.WARNING, "sandbox={0}: {1}", id, e.getMessage());
            }
        }
        ReadOnlyLayer.unmount(dir.resolve("shared"));
        deleteTree(dir);
    }

    /** Kills {@code pid} only if its command line names the sandbox directory: pids get reused. */
    private static void killIfOurs(long pid, Path dir) {
        if (pid <= 0) {
            return;
        }
        ProcessHandle.of(pid).ifPresent(p -> {
            if (p.info().commandLine().orElse("").contains(dir.toString())) {
                p.destroyForcibly();
                p.onExit().join();
            }
        });
    }

    /**
     * Removes a sandbox directory: its files, and its empty subdirectories (the image's
     * mountpoint). It never descends: were an image still mounted below, walking into it
     * would delete the image.
     */
    public static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.toList()) {
                Files.deleteIfExists(p);
            }
        }
        Files.deleteIfExists(dir);
    }
}
