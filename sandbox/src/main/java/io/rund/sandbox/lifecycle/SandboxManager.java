package io.rund.sandbox.lifecycle;

import io.rund.rootfs.Dirs;
import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.SandboxHelper;
import io.rund.rootfs.StoreException;
import io.rund.rootfs.Syscalls;
import io.rund.rootfs.WritableLayer;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.cgroup.CgroupException;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.sandbox.id.Ids;
import io.rund.sandbox.network.NetworkException;
import io.rund.sandbox.network.PodNetwork;
import io.rund.vm.Hypervisor;
import io.rund.vm.HypervisorException;
import io.rund.vm.Vm;
import io.rund.vm.VmConfig;
import io.rund.vm.VmJail;
import io.rund.vm.template.SparePool;
import io.rund.vm.template.TemplateException;
import io.rund.vm.template.TemplateStore;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

/**
 * Starts and stops sandboxes, keeps spare VMs and templates, and cleans up after a daemon
 * that died.
 *
 * <p>A start acquires each {@link Resource} in its declared order, each pushing its release
 * on the start's {@link Teardown}, run in reverse if a later step fails and kept by the
 * sandbox for its stop: state directory → cgroup from the pool → the two shares, each with
 * its helper (a vhost-user-fs back-end), and the first container's image and host
 * directories → writable layer and VM, cloned
 * from a template or booted cold → the VM's tap joined to the pod network (when the spec
 * names a network namespace, read first) → agent (deadline; then the guest's network); then
 * the first container. The state file is rewritten after each step, so that
 * {@link #recover()} finds what a crash left and releases it by the same resources. With
 * spare VMs ({@link #startSpares}), a start that finds one ready begins with it instead:
 * the spare's directory becomes the sandbox's, it already has its disk and its helpers
 * serving its shares, and "launch the VM" is a resume.
 *
 * <p>Reason for its size (~450 lines): it is the one place that knows templates, spares
 * and starts together; each of those is short, and the resources, recovery, the agent's
 * container request and the releases live in units of their own ({@link Resource},
 * {@link Recovery}, {@link ContainerRequests}, {@link Teardown}).
 */
public final class SandboxManager implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(SandboxManager.class.getName());

    /** Host memory a VM costs beyond its guest RAM: QEMU itself and TCG's code cache. */
    static final long VM_OVERHEAD_BYTES = 160L << 20;

    /** Where things are and how large a VM is. */
    /**
     * Where things are and how large a VM is: {@code vcpus} and {@code vmMemoryMiB} by
     * default; a sized one holds its containers' limits and {@code guestMemoryMiB} more.
     */
    public record Config(Path stateRoot, Path kernel, Path initramfs, int vcpus, int vmMemoryMiB, int guestMemoryMiB,
            Duration agentDeadline, int startsAtOnce) {
        /** {@code startsAtOnce}: how many sandbox starts run at once, the rest waiting their turn in order; 0, all. */
        public Config {
            if (startsAtOnce < 0) {
                throw new IllegalArgumentException("starts at once: " + startsAtOnce + " is negative");
            }
        }
    }

    private final Config config;
    private final Hypervisor hypervisor;
    private final CgroupPool pool;
    private final WritableLayerStore store;
    private final TemplateStore templates;
    private final Recovery recovery;
    private final SecureRandom random = new SecureRandom();
    private volatile SparePool spares;
    /** The key of the template last cloned, per VM size. */
    private final java.util.Map<VmSize, String> lastKeys = new java.util.concurrent.ConcurrentHashMap<>();
    /** The most RAM one VM gets: the host's. */
    private final int maxMemoryMiB = hostMemoryMiB();
    /** Sandbox starts under way; spare VMs are launched only when there are none. */
    private final java.util.concurrent.atomic.AtomicInteger starting = new java.util.concurrent.atomic.AtomicInteger();
    /** The latest starts' traces, kept after their sandboxes are gone (`rund trace`). */
    private final StartTrace.Kept traces = new StartTrace.Kept();
    /**
     * Turns of the starts that may run at once, handed out in arrival order; null for no
     * bound. A start is mostly CPU (its guest's under TCG, QEMU's and the daemon's), so
     * beyond the cores more at once only share them: each finishes as late as the last.
     */
    private final java.util.concurrent.Semaphore turns;

    Config config() {
        return config;
    }

    Hypervisor hypervisor() {
        return hypervisor;
    }

    CgroupPool pool() {
        return pool;
    }

    public WritableLayerStore store() {
        return store;
    }

    /** Fresh entropy for a guest's pool. */
    byte[] seed() {
        byte[] seed = new byte[64];
        random.nextBytes(seed);
        return seed;
    }

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
        if (hypervisor.jail() == null) {
            throw new IllegalArgumentException("sandboxes need confined VMs: " + hypervisor.name()
                    + " has no jail, and each sandbox's helper runs as its VM's uid");
        }
        this.config = config;
        this.hypervisor = hypervisor;
        this.pool = pool;
        this.store = store;
        this.templates = templates;
        this.recovery = new Recovery(config.stateRoot(), pool, hypervisor);
        this.turns = config.startsAtOnce() == 0 ? null : new java.util.concurrent.Semaphore(config.startsAtOnce(), true);
        Files.createDirectories(config.stateRoot());
    }

    /** What a template for this manager's default VMs is made of: the same kernel, size and disk as a cold boot. */
    public TemplateStore.Spec templateSpec() throws IOException {
        return templateSpec(defaultSize());
    }

    /** A template for VMs of {@code size}. */
    TemplateStore.Spec templateSpec(VmSize size) throws IOException {
        try {
            return new TemplateStore.Spec(config.kernel(), config.initramfs(), size.vcpus(), size.memoryMiB(),
                    (long) size.diskMiB() << 20, store.image(size.diskMiB()));
        } catch (StoreException e) {
            throw new IOException(e.getMessage(), e);
        }
    }

    /** The size of a VM whose containers ask for nothing: the configured one. */
    VmSize defaultSize() {
        return new VmSize(config.vcpus(), config.vmMemoryMiB(), store.defaultMiB());
    }

    /**
     * The size for a sandbox whose containers are allowed {@code wanted}, with a writable
     * layer of {@code layerMiB} (0: the store's default).
     */
    VmSize sizeFor(io.rund.sandbox.guest.ResourceLimits wanted, int layerMiB) throws SandboxException {
        return VmSize.fit(wanted, defaultSize(), config.guestMemoryMiB(), maxMemoryMiB, Runtime.getRuntime().availableProcessors())
                .withDisk(layerMiB);
    }

    /**
     * Keeps {@code count} paused clones of the current template ready for sandbox starts
     * (nothing without a template store, or for 0). Call after {@link #recover}, which
     * removes the spares a previous daemon left.
     */
    public void startSpares(int count) {
        if (templates == null || count == 0 || spares != null) {
            return;
        }
        spares = new SparePool(count, this::makeSpare, () -> starting.get() > 0);
        LOG.log(Level.INFO, "spare VMs: keeping {0} paused clone(s) ready", count);
    }

    /**
     * The template for this manager's VMs, built if need be. When its key differs from the
     * one used before (the guest was rebuilt), the old template is removed: nothing here
     * will clone it again, and its RAM would hold tmpfs memory for good.
     */
    private TemplateStore.Template template(VmSize size) throws TemplateException, IOException {
        TemplateStore.Template t = templates.get(templateSpec(size));
        String before = lastKeys.put(size, t.key());
        if (before != null && !before.equals(t.key())) {
            try {
                templates.remove(before);
                LOG.log(Level.INFO, "template {0}: replaced by {1}, removed", before, t.key());
            } catch (IOException e) {
                LOG.log(Level.WARNING, "template {0}: remove after {1} replaced it: {2}", before, t.key(), e.getMessage());
            }
        }
        return t;
    }

    /** The template store, or null when every VM boots cold. */
    public TemplateStore templates() {
        return templates;
    }

    /** The key of the template for this manager's VMs (built or not); null without a store. */
    public String templateKey() throws IOException {
        return templates == null ? null : templates.key(templateSpec());
    }

    /** What {@link #buildTemplate} did. */
    public record Built(TemplateStore.Template template, boolean built, long millis, List<String> removed) {}

    /**
     * Builds the template for this manager's VMs unless it exists, then removes every other
     * template in the store (their running clones keep their RAM).
     */
    public Built buildTemplate() throws TemplateException, IOException {
        if (templates == null) {
            throw new TemplateException("templates are off: every VM boots cold", null);
        }
        TemplateStore.Spec spec = templateSpec();
        boolean existed = templates.existing(templates.key(spec)) != null;
        long t0 = System.nanoTime();
        TemplateStore.Template t = templates.get(spec);
        long millis = (System.nanoTime() - t0) / 1_000_000;
        return new Built(t, !existed, millis, templates.prune(t.key()));
    }

    /** The state of every sandbox in the state root, by id. */
    public List<SandboxState> list() throws IOException {
        List<SandboxState> states = new java.util.ArrayList<>();
        try (Stream<Path> dirs = Files.list(config.stateRoot())) {
            for (Path dir : dirs.sorted().toList()) {
                if (Ids.isValid(dir.getFileName().toString())) {
                    try {
                        states.add(SandboxState.read(dir));
                    } catch (IOException e) {
                        // a start that has not written its first state yet, or one being removed
                    }
                }
            }
        }
        return states;
    }

    /** How many spare VMs are kept ready (0: none). */
    public int spareVms() {
        SparePool p = spares;
        return p == null ? 0 : p.size();
    }

    /** How many spare VMs are ready now. */
    public int sparesReady() {
        SparePool p = spares;
        return p == null ? 0 : p.ready();
    }

    /** A paused clone named {@code name}: its directory, share and helper, disk and VM; nothing left if it fails. */
    private SparePool.Spare makeSpare(String name) throws Exception {
        Path dir = config.stateRoot().resolve(name);
        Files.createDirectory(dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Teardown undo = new Teardown(name);
        undo.push(Resource.STATE_DIR, dir.toString(), () -> Dirs.removeShallow(dir));
        VmJail jail = hypervisor.jail();
        int uid = jail.acquire();
        SandboxHelper[] helper = {null, null}; // the image share's, the host-directory share's
        Vm[] vm = {null};
        undo.push(Resource.VM, "uid " + uid, () -> releaseWhenGone(uid, vm[0], helper));
        try {
            TemplateStore.Template t = template(defaultSize());
            SandboxState state = SandboxState.of(name, SandboxState.Phase.SPARE, hypervisor.accelerator().kind().name())
                    .withVm(0, "clone " + t.key(), dir.toString());
            state.write(dir);
            Path share = ReadOnlyLayer.mountShare(dir);
            undo.push(Resource.SHARE, "share", () -> ReadOnlyLayer.unmountIn(dir));
            helper[0] = SandboxHelper.start(name, dir, share, jail.helperJail(uid), SandboxHelper.Limits.DEFAULT);
            undo.push(Resource.SHARE, "helper", helper[0]::close);
            Path hostShare = HostDirShare.mountShare(dir);
            undo.push(Resource.SHARE, "host-directory share", () -> HostDirShare.unmountIn(dir));
            helper[1] = SandboxHelper.start(name, dir, hostShare, jail.helperJail(uid), SandboxHelper.Limits.DEFAULT,
                    SandboxHelper.Kind.HOST_DIRS);
            undo.push(Resource.SHARE, "host-directory helper", helper[1]::close);
            state = state.withHelpers(helper[0].process().pid(), helper[1].process().pid());
            state.write(dir);
            WritableLayer writable = store.create(name, defaultSize().diskMiB(), t.disk());
            undo.push(Resource.VM, "disk", writable::close);
            String tap = VmConfig.newTapName();
            vm[0] = hypervisor.launchPaused(vmConfig(name, dir, writable, helper[0], helper[1], t.cloneRam(), tap, uid,
                    defaultSize()));
            writable.heldUntil(vm[0].exited());
            undo.push(Resource.VM, "QEMU", vm[0]::close);
            FaultPoints.at("spare.refill");
            state.withVm(vm[0].pid(), state.boot(), state.vmDir()).write(dir);
            // From here the spare owns them all; its uid goes back once its processes are gone.
            releaseWhenGone(uid, vm[0], helper);
            return new SparePool.Spare(name, dir, t.key(), vm[0], helper[0], helper[1], writable, tap);
        } catch (Exception e) {
            undo.run();
            throw e;
        }
    }

    /** Gives a sandbox's uid back once its helpers and VM (any may be null: never started) are gone. */
    void releaseWhenGone(int uid, Vm vm, SandboxHelper... helpers) {
        List<ProcessHandle> holders = new java.util.ArrayList<>();
        for (SandboxHelper helper : helpers) {
            if (helper != null) {
                holders.add(helper.process());
            }
        }
        if (vm != null) {
            ProcessHandle.of(vm.pid()).ifPresent(holders::add);
        }
        hypervisor.jail().releaseWhenGone(uid, holders);
    }

    /**
     * A sandbox's VM: its disk is the writable layer, its virtio-fs devices the back-ends
     * {@code images} and {@code hostDirs}, its network device the tap {@code tap}, its uid the helpers'.
     */
    private VmConfig vmConfig(String id, Path dir, WritableLayer writable, SandboxHelper images, SandboxHelper hostDirs,
            VmConfig.Ram ram, String tap, int uid, VmSize size) {
        return VmConfig.sandbox(id, dir, config.kernel(), config.initramfs(), size.vcpus(), size.memoryMiB(),
                writable.procPath(), images.socket(), hostDirs.socket(), ram, tap, uid);
    }

    /**
     * A ready spare of the current template, its directory renamed to {@code dir}; null
     * when there is none (or no current template key can be had).
     *
     * @throws FileAlreadyExistsException when {@code dir} exists (the spare is discarded)
     */
    SparePool.Spare takeSpare(String id, Path dir, VmSize size) throws IOException {
        SparePool p = spares;
        if (p == null || Files.exists(dir) || !size.equals(defaultSize())) {
            return null; // an existing sandbox fails the plain path, and costs no spare
        }
        SparePool.Spare spare;
        try {
            spare = p.take(templates.key(templateSpec()));
        } catch (IOException e) {
            LOG.log(Level.WARNING, "sandbox={0}: no spare VM: template key: {1}", id, e.getMessage());
            return null;
        }
        if (spare == null) {
            return null;
        }
        try {
            Syscalls.renameNoReplace(spare.dir(), dir);
        } catch (Syscalls.SyscallException e) {
            spare.close();
            Dirs.removeShallow(spare.dir());
            if (e.errno() == Syscalls.EEXIST) {
                throw new FileAlreadyExistsException(dir.toString());
            }
            throw new IOException("take spare VM " + spare.name() + ": " + e.getMessage(), e);
        }
        LOG.log(Level.INFO, "sandbox={0}: takes spare VM {1} (pid {2})", id, spare.name(), spare.vm().pid());
        return spare;
    }

    /** MemTotal of /proc/meminfo in MiB; 1 GiB when it cannot be read. */
    private static int hostMemoryMiB() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemTotal:")) {
                    return (int) (Long.parseLong(line.replaceAll("[^0-9]", "")) >> 10);
                }
            }
        } catch (IOException | NumberFormatException e) {
            // below
        }
        return 1024;
    }

    /** The traces of the latest starts, this one's included once it ended (started or failed). */
    public StartTrace.Kept traces() {
        return traces;
    }

    /** The state directory of sandbox {@code id}. */
    public Path dirOf(String id) {
        return config.stateRoot().resolve(Ids.dirName(id));
    }

    /** Starts a sandbox with its first container, whose id becomes the sandbox's. */
    public Sandbox start(ContainerSpec spec) throws SandboxException {
        starting.incrementAndGet();
        try {
            return startCounted(spec);
        } finally {
            starting.decrementAndGet();
        }
    }

    private Sandbox startCounted(ContainerSpec spec) throws SandboxException {
        String id = spec.id();
        if (!Ids.isValid(id)) {
            throw new SandboxException(Fault.INVALID_ARGUMENT, "sandbox id " + id
                    + " must be " + Ids.RULE, null);
        }
        Path dir = dirOf(id);
        // containerd's input, checked before anything is made: a bad value is INVALID_ARGUMENT.
        PodNetwork network;
        List<Path> lowers;
        try {
            lowers = ReadOnlyLayer.lowerDirs(id, spec.rootfs());
            network = spec.netns() == null ? null : PodNetwork.inspect(spec.netns());
        } catch (StoreException | NetworkException e) {
            throw new SandboxException(Fault.INVALID_ARGUMENT, "start sandbox=" + id + ": " + e.getMessage(), e);
        }
        VmSize size = sizeFor(spec.vmResources(), spec.writableLayerMiB());
        Starting s = new Starting(this, id, dir, spec, lowers, network, size);
        boolean turn = false;
        try {
            if (turns != null) {
                s.step("wait for its turn");
                turns.acquire();
                turn = true;
            }
            s.step("check the store's room");
            for (Resource r : Resource.values()) {
                r.acquire(s);
                FaultPoints.at("start." + r.name().toLowerCase(java.util.Locale.ROOT));
            }
            s.step("create the container");
            try {
                s.trace.guest(s.agent.createContainer(ContainerRequests.of(spec, s.image, "", "", s.dirs)));
            } catch (AgentException e) {
                // The guest's own verdict on the container: an agent INVALID_ARGUMENT is one for containerd too.
                throw new SandboxException(e.kind(), e.getMessage(), e);
            }
            FaultPoints.at("start.container");
            s.step("record it running");
            s.write(s.state.with(SandboxState.Phase.RUNNING)
                    .withContainers(Map.of(id, new SandboxState.Attached(s.image, s.dirs))));
            StartTrace trace = s.trace.finish(s.boot, null);
            traces.add(trace);
            LOG.log(Level.INFO, "sandbox={0}: started in {1} ms ({2}, {3}{4}): {5}", id, trace.totalMicros() / 1_000,
                    hypervisor.accelerator().kind(), s.boot, network == null ? "" : ", network " + network, trace.summary());
            return new Sandbox(id, dir, s.cgroup, s.readOnly, s.hostDirs, s.vm, s.agent, s.state, network, s.undo);
        } catch (FileAlreadyExistsException e) {
            throw new SandboxException(Fault.ALREADY_EXISTS, "start sandbox=" + id + ": it exists", e);
        } catch (Exception e) {
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            String failed = s.step();
            s.step("release what it made");
            s.undo.run();
            Fault kind = e instanceof SandboxException x ? x.kind()
                    : e instanceof StoreException se && se.noSpace() ? Fault.RESOURCE_EXHAUSTED : Fault.INTERNAL;
            SandboxException error = new SandboxException(kind, "start sandbox=" + id + ": " + failed + ": " + e.getMessage(), e);
            traces.add(s.trace.finish(s.boot, error.getMessage()));
            throw error;
        } finally {
            if (turn) {
                turns.release();
            }
        }
    }

    /** A launched VM and how it started: "cold" or "clone <template key>". */
    record Launched(Vm vm, String boot) {}

    /** Makes a VM's writable layer: a clone of {@code from} (a template's disk), or of the store's image for null. */
    @FunctionalInterface
    interface Layers {
        WritableLayer make(Path from) throws StoreException;
    }

    /**
     * Clones the VM from its template when there is a template store, and boots it cold
     * when there is none or the clone fails (the failure is logged). Template and cold
     * boot have the same devices in the same order, so the guest finds the same disk either
     * way: a clone's layer is made from its template's disk, which the template's guest has
     * mounted, a cold VM's from the store's image; a failed clone's layer is dropped.
     */
    Launched launch(String id, Path dir, Layers layers, ReadOnlyLayer readOnly, HostDirShare hostDirs,
            Cgroup cgroup, String tap, int uid, VmSize size) throws HypervisorException, StoreException, CgroupException {
        if (templates != null) {
            TemplateStore.Template t = null;
            boolean launched = false;
            try {
                t = template(size);
                try (WritableLayer writable = layers.make(t.disk())) {
                    launched = true;
                    Vm vm = hypervisor.launch(vmConfig(id, dir, writable, readOnly.helper(), hostDirs.helper(), t.cloneRam(),
                            tap, uid, size));
                    // QEMU has opened the layer by the time QMP answered; ours closes here, the store counts it till QEMU ends.
                    writable.heldUntil(vm.exited());
                    return new Launched(vm, "clone " + t.key());
                }
            } catch (StoreException e) {
                if (t == null || t.disk() == null || Files.exists(t.disk())) {
                    throw e; // the store's own failure (full, above all): a cold VM would need a layer too
                }
                // Its template was removed under it (a new guest): as a clone of a removed RAM file would.
                LOG.log(Level.WARNING, "sandbox={0}: clone of template {1} failed, booting cold: {2}", id, t.key(),
                        e.getMessage());
            } catch (TemplateException | HypervisorException | IOException e) {
                // A template's own failures name its key; a failed launch names it here.
                LOG.log(Level.WARNING, "sandbox={0}: clone {1}failed, booting cold: {2}", id,
                        t == null ? "" : "of template " + t.key() + " ", e.getMessage());
            }
            if (launched) {
                // The failed clone was the helpers' one front-end: the cold VM gets fresh helpers.
                readOnly.restartHelper(hypervisor.jail().helperJail(uid));
                cgroup.bind(readOnly.helper().process().pid());
                hostDirs.restartHelper(hypervisor.jail().helperJail(uid));
                cgroup.bind(hostDirs.helper().process().pid());
            }
        }
        try (WritableLayer writable = layers.make(null)) {
            Vm vm = hypervisor.launch(vmConfig(id, dir, writable, readOnly.helper(), hostDirs.helper(),
                    VmConfig.Ram.ANONYMOUS, tap, uid, size));
            writable.heldUntil(vm.exited());
            return new Launched(vm, "cold");
        }
    }

    /**
     * Cleans everything a previous daemon left (see {@link Recovery#recover}).
     *
     * @return the ids cleaned
     */
    public List<String> recover() throws IOException {
        return recovery.recover(this, Set.of()).cleaned();
    }

    /**
     * Adopts every sandbox of {@code keep} that still runs, and cleans everything else a
     * previous daemon left (see {@link Recovery#recover}).
     *
     * @return the sandboxes adopted, by id; what could not be adopted is cleaned and absent
     */
    public Map<String, Sandbox> recover(Set<String> keep) throws IOException {
        Recovery.Result r = recovery.recover(this, keep);
        r.cleaned().forEach(id -> LOG.log(Level.INFO, "sandbox={0}: cleaned after a previous daemon", id));
        return r.adopted();
    }

    /**
     * Cleans one sandbox from what is on disk (see {@link Recovery#cleanup}): for a sandbox
     * whose daemon-side object is gone (a crash, or containerd's last-resort delete).
     */
    public void cleanup(String id) throws IOException {
        recovery.cleanup(id);
    }

    /** Ends the spare VMs; sandboxes are their owners' to stop. */
    @Override
    public void close() {
        SparePool p = spares;
        spares = null;
        if (p != null) {
            p.close();
        }
    }

}
