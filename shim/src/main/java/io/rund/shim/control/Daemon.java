package io.rund.shim.control;

import io.rund.containerd.task.v2.DeleteResponse;
import io.rund.control.v1.BuildTemplateRequest;
import io.rund.control.v1.BuildTemplateResponse;
import io.rund.control.v1.DeleteRequest;
import io.rund.control.v1.SandboxStatus;
import io.rund.control.v1.TraceRequest;
import io.rund.control.v1.TraceResponse;
import io.rund.control.v1.TraceStep;
import io.rund.control.v1.StartRequest;
import io.rund.control.v1.StartResponse;
import io.rund.control.v1.StatusRequest;
import io.rund.control.v1.StatusResponse;
import io.rund.rootfs.Syscalls;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.sandbox.id.Ids;
import io.rund.sandbox.lifecycle.FaultPoints;
import io.rund.sandbox.lifecycle.SandboxManager;
import io.rund.sandbox.lifecycle.SandboxState;
import io.rund.shim.TaskFault;
import io.rund.shim.Timestamps;
import io.rund.shim.Version;
import io.rund.shim.containerd.EventPublisher;
import io.rund.shim.containerd.StatusMapper;
import io.rund.shim.containerd.TaskRecord;
import io.rund.shim.containerd.TaskService;
import io.rund.shim.oci.OciSpec;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.PeerPolicy;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import io.rund.vm.AcceleratorProbe;
import io.rund.vm.VmJail;
import io.rund.vm.qemu.QemuHypervisor;
import io.rund.vm.template.TemplateStore;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

/**
 * The node's rund daemon: the control socket the launcher talks to, and one ttrpc task
 * endpoint per sandbox. A task is its own sandbox, except a container of a CRI pod
 * (annotated with the pod's sandbox id), which is routed to its pod's endpoint and runs
 * in its VM. Holds the node-wide parts: cgroup pool, writable-layer store, hypervisor,
 * sandbox manager.
 *
 * <p>An endpoint's socket is its relay's (forked by the launcher's start, shim/launcher/
 * relay.c): it holds containerd's connections and links each to the daemon
 * ({@link RelayLinks}), so the daemon may die or be replaced while containerd sees
 * nothing close. Each endpoint is kept in {@code <state>/t/<name>.json}
 * ({@link io.rund.shim.containerd.TaskRecord}); a new daemon takes up every endpoint whose
 * relay lives, with its sandbox adopted, and cleans the rest. Stopping the daemon
 * (SIGTERM) leaves every sandbox running, for the next daemon.
 *
 * <p>Threads: ttrpc's (a virtual thread per call); nothing here blocks the accept loops.
 */
public final class Daemon implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(Daemon.class.getName());
    private static final Pattern NAMESPACE = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,75}");
    /** The hypervisor binary (Debian's; QEMU 10 from bookworm-backports on Debian 12). */
    public static final Path QEMU = Path.of("/usr/bin/qemu-system-x86_64");
    /** The default VM's size (`rund check` computes the template key from them and the configured layer size). */
    public static final int VM_VCPUS = 1;
    public static final int VM_MEMORY_MIB = 256;
    /** How long a stopping daemon lets the calls it is running finish. */
    private static final Duration STOP_GRACE = Duration.ofSeconds(10);

    /**
     * Where things are; see {@link RundConfig} for where the values come from.
     * {@code templates}: the VM template store's directory, or null to boot every VM cold;
     * {@code spareVms}: paused clones kept ready (with templates only);
     * {@code vmUidBase}: VMs and their helpers run as uids above it, started by {@code jailer};
     * {@code fault}: a fault point armed for tests ("" for none, see {@link FaultPoints});
     * {@code standby}: keep a standby daemon, warm, to take over at once when this one goes ({@link Standby});
     * {@code startsAtOnce}: sandbox starts run at once, the rest waiting their turn in order (0: all).
     */
    public record Config(Path stateDir, Path guestDir, Path scratch, int poolSize, String cgroupPool, String accelerator,
            Path templates, int spareVms, int vmUidBase, Path jailer, int guestMemoryMiB, int writableLayerMiB, String fault,
            boolean standby, int startsAtOnce) {

        /** The VMs' jail. */
        public VmJail jail() {
            return new VmJail(jailer, vmUidBase);
        }
    }

    private final Config config;
    private final CgroupPool pool;
    private final SandboxManager manager;
    private final String accelerator;
    private final Server control;
    private final RelayLinks relays;
    /** Keeps a standby daemon ready to take over from this one (config {@code standby}). */
    private final Standby.Keeper standby = new Standby.Keeper();
    /** namespace/task id → the endpoint serving it; a pod's containers share their pod's. */
    private final Map<String, Endpoint> tasks = new ConcurrentHashMap<>();
    /** Endpoint name (its relay's) → endpoint. */
    private final Map<String, Endpoint> byName = new ConcurrentHashMap<>();

    /** A sandbox's service with its own ttrpc server, the socket its relay listens on and the relay. */
    private record Endpoint(TaskService service, Server server, Path socket, Relay relay) {}

    /**
     * Takes the node's daemon lock, or returns null when another daemon holds it. Two
     * launchers that find no daemon at the same moment both start one; the loser must go
     * before it touches the socket, the pool or any sandbox.
     */
    static FileLock lock(Path stateDir) throws IOException {
        Files.createDirectories(stateDir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        FileChannel ch = FileChannel.open(stateDir.resolve("rund.lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        FileLock lock = ch.tryLock();
        if (lock == null) {
            ch.close();
        }
        return lock;
    }

    /** The steps of a daemon's start and what each took (ms), for its log line once it serves. */
    private static final class StartTrace {
        private long last = System.nanoTime();
        private final java.util.StringJoiner steps = new java.util.StringJoiner(", ");

        void step(String name) {
            long now = System.nanoTime();
            steps.add(name + " " + (now - last) / 1_000_000);
            last = now;
        }

        @Override
        public String toString() {
            return steps.toString();
        }
    }

    Daemon(Config config) throws Exception {
        this.config = config;
        long constructed = System.nanoTime();
        StartTrace trace = new StartTrace();
        Files.createDirectories(config.stateDir().resolve("t"));
        // The shares are mounted below it: none of that may reach, or be reached from, the
        // host's mounts (a shared /run would carry each share's mount and unmount elsewhere).
        Syscalls.makePrivateMount(config.stateDir());
        LOG.log(Level.INFO, "daemon: rund {0}", Version.CURRENT);
        FaultPoints.arm(config.fault(), config.stateDir().resolve("fault.fired"));
        VmJail jail = config.jail();
        for (Path p : List.of(jail.jailer(), jail.helper())) {
            if (!Files.isExecutable(p)) {
                throw new IOException(p + " is missing (hack/install builds it)");
            }
        }
        QemuHypervisor hypervisor = new QemuHypervisor(QEMU, new AcceleratorProbe().choose(config.accelerator()), jail);
        accelerator = hypervisor.accelerator().toString();
        LOG.log(Level.INFO, "daemon: hypervisor {0}", hypervisor);
        trace.step("hypervisor");
        pool = CgroupPool.open(CgroupLayout.detect(config.cgroupPool()), config.stateDir().resolve("cgroup-claims"), config.poolSize());
        trace.step("cgroup pool");
        WritableLayerStore store = WritableLayerStore.open(config.scratch(), config.writableLayerMiB());
        trace.step("store");
        manager = new SandboxManager(new SandboxManager.Config(config.stateDir().resolve("sandboxes"),
                config.guestDir().resolve("vmlinux"), config.guestDir().resolve("initramfs.cpio"),
                VM_VCPUS, VM_MEMORY_MIB, config.guestMemoryMiB(), Duration.ofSeconds(60), config.startsAtOnce()), hypervisor,
                pool, store,
                config.templates() == null ? null : TemplateStore.open(config.templates(), hypervisor, buildReady()));
        LOG.log(Level.INFO, "daemon: VMs {0}", config.templates() == null ? "boot cold (templates = off)"
                : "are cloned from templates in " + config.templates() + ", cold boot when a clone fails");
        trace.step("templates");
        long tookUp = System.nanoTime();
        takeUpEndpoints(trace);
        tookUp = System.nanoTime() - tookUp;
        relays = new RelayLinks(config.stateDir().resolve("relay.sock"), new RelayLinks.Endpoints() {
            @Override
            public boolean control(String name, long pid, java.nio.channels.SocketChannel ch) throws IOException {
                Endpoint e = byName.get(name);
                if (e == null) {
                    return false;
                }
                e.relay().attach(ch);
                e.service().relayPid(pid);
                return true;
            }

            @Override
            public boolean connection(String name, java.nio.channels.SocketChannel ch) {
                Endpoint e = byName.get(name);
                if (e == null) {
                    return false;
                }
                e.server().serve(ch);
                return true;
            }

            @Override
            public void idle(String name) {
                Endpoint e = byName.get(name);
                if (e != null && e.service().servesNothing()) {
                    LOG.log(Level.INFO, "endpoint {0}: containerd left it with no container; closing it", name);
                    e.service().close();
                }
            }

            @Override
            public void controlClosed(String name, java.nio.channels.SocketChannel ch) {
                Endpoint e = byName.get(name);
                if (e != null) {
                    e.relay().detach(ch);
                }
            }
        });
        manager.startSpares(config.spareVms());
        control = Server.builder().name("control").peerPolicy(PeerPolicy.sameUser()).errorMapper(StatusMapper.MAPPER)
                .stoppingCode(Code.ABORTED) // the launcher sends it to the next daemon
                .register(ServiceDefinition.builder("rund.control.v1.Control")
                        .unary("Start", StartRequest.parser(), (c, r) -> start(r))
                        .unary("Delete", DeleteRequest.parser(), (c, r) -> delete(r))
                        .unary("Status", StatusRequest.parser(), (c, r) -> status())
                        .unary("BuildTemplate", BuildTemplateRequest.parser(), (c, r) -> buildTemplate())
                        .unary("Trace", TraceRequest.parser(), (c, r) -> trace(r))
                        .build())
                .build();
        control.serve(listen(config.stateDir().resolve("rund.sock")));
        // Whole or not at all: a relay or a test may read it at any moment.
        Path pidTmp = config.stateDir().resolve("rund.pid.tmp");
        Files.writeString(pidTmp, Long.toString(ProcessHandle.current().pid()));
        Files.move(pidTmp, config.stateDir().resolve("rund.pid"), java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        LOG.log(Level.INFO, "daemon: serving on {0}, accelerator {1}", config.stateDir().resolve("rund.sock"),
                hypervisor.accelerator());
        // Where a (re)start's time went (the JVM's own start, before main, is ~50 ms here).
        long now = System.nanoTime();
        long began = Main.began == 0 ? constructed : Main.began; // 0: made by a test, not by main
        LOG.log(Level.INFO, "daemon: ready {0} ms after main began: {1} ms reading the configuration, {2} ms"
                + " making the node''s parts, {3} ms taking up {4} endpoint(s) ({5})", (now - began) / 1_000_000,
                (constructed - began) / 1_000_000, (now - constructed - tookUp) / 1_000_000, tookUp / 1_000_000,
                byName.size(), trace);
        if (config.standby()) {
            standby.start();
        }
    }

    /**
     * Takes up the endpoints a previous daemon kept: those whose relay lives (containerd
     * still holds their tasks) with their sandboxes, adopted; the sandboxes of the others,
     * and any other a previous daemon left, are cleaned.
     */
    private void takeUpEndpoints(StartTrace trace) throws IOException {
        Path dir = config.stateDir().resolve("t");
        Map<Path, TaskRecord> records = new java.util.HashMap<>();
        try (var files = Files.list(dir)) {
            for (Path f : files.toList()) {
                String n = f.getFileName().toString();
                if (!n.endsWith(".json")) {
                    continue;
                }
                Path socket = f.resolveSibling(n.substring(0, n.length() - 5) + ".sock");
                try {
                    TaskRecord r = TaskRecord.read(f);
                    if (relayLives(r, socket)) {
                        records.put(f, r);
                        continue;
                    }
                    LOG.log(Level.INFO, "task {0}/{1}: its relay is gone; cleaning it", r.namespace(), r.id());
                } catch (IOException e) {
                    LOG.log(Level.WARNING, "endpoint {0}: unreadable ({1}); removing it", f, e.getMessage());
                }
                Files.deleteIfExists(f);
                Files.deleteIfExists(socket);
            }
        }
        Set<String> keep = new java.util.HashSet<>();
        records.values().forEach(r -> keep.add(r.id()));
        trace.step("records");
        Map<String, io.rund.sandbox.lifecycle.Sandbox> adopted = manager.recover(keep);
        trace.step("recovery");
        // Each endpoint's processes are taken up on a thread of its own: their pumps and exit
        // watches start with a call to their guest each.
        List<Thread> takingUp = new java.util.ArrayList<>();
        for (var entry : records.entrySet()) {
            TaskRecord r = entry.getValue();
            String name = entry.getKey().getFileName().toString().replaceFirst("\\.json$", "");
            takingUp.add(Thread.ofVirtual().name("take-up-" + name).start(() -> {
                Endpoint e = endpoint(r.namespace(), r.id(), r.ttrpcAddress(), name, adopted.get(r.id()), r);
                LOG.log(Level.INFO, "task {0}/{1}: endpoint {2} taken up, sandbox {3}", r.namespace(), r.id(), name,
                        adopted.containsKey(r.id()) ? "adopted" : "gone");
                for (String task : r.routed()) {
                    tasks.put(key(r.namespace(), task), e);
                }
                tasks.put(key(r.namespace(), r.id()), e);
            }));
        }
        for (Thread t : takingUp) {
            try {
                t.join();
            } catch (InterruptedException ex) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while taking up endpoints", ex);
            }
        }
        trace.step("processes");
    }

    /** Whether the relay of a kept endpoint still runs: its pid is a launcher's, or it has not said hello yet but listens. */
    private static boolean relayLives(TaskRecord r, Path socket) {
        if (r.relayPid() <= 0) {
            return Files.exists(socket);
        }
        return ProcessHandle.of(r.relayPid())
                .flatMap(p -> p.info().command())
                .filter(c -> c.endsWith("/containerd-shim-rund-v2") || c.endsWith("/containerd-shim-rund-v2 (deleted)"))
                .isPresent();
    }

    /**
     * An endpoint named {@code name}, registered by name: new ({@code saved} null) or
     * taken up from what a previous daemon saved, serving {@code pod}.
     */
    private Endpoint endpoint(String namespace, String id, String ttrpcAddress, String name,
            io.rund.sandbox.lifecycle.Sandbox pod, TaskRecord saved) {
        String key = key(namespace, id);
        Path socket = config.stateDir().resolve("t").resolve(name + ".sock");
        Relay relay = new Relay(name);
        EventPublisher events = new EventPublisher(ttrpcAddress, namespace);
        TaskService.Owner owner = new TaskService.Owner() {
            @Override
            public void containerGone(String containerId) {
                tasks.remove(key(namespace, containerId));
            }

            @Override
            public void closed() {
                forget(key);
            }

            @Override
            public void containerJoined(String containerId) {
                Endpoint e = byName.get(name);
                if (e != null) {
                    tasks.putIfAbsent(key(namespace, containerId), e);
                }
            }
        };
        Path record = socket.resolveSibling(name + ".json");
        TaskService service = saved == null
                ? new TaskService(namespace, id, ttrpcAddress, manager::start, events, owner, relay, record)
                : TaskService.adopt(saved, pod, manager::start, events, owner, relay, record);
        // A request that arrives while this daemon stops is not run: the relay keeps it for the next.
        Server.Builder builder = Server.builder().name("task-" + id).peerPolicy(PeerPolicy.sameUser())
                .errorMapper(StatusMapper.MAPPER).stoppingCode(Code.ABORTED);
        service.definitions().forEach(builder::register);
        // containerd 2.x's Sandbox API: the pod's VM without a pause container of containerd's.
        builder.register(service.sandboxApi(config.jailer().resolveSibling("pause-rootfs")));
        Server server = builder.build();
        Endpoint e = new Endpoint(service, server, socket, relay);
        byName.put(name, e);
        return e;
    }

    /** A template build's guest is ready when its agent answers; the build's fault point is there. */
    private static TemplateStore.GuestReady buildReady() {
        TemplateStore.GuestReady agent = AgentClient.ready(Duration.ofSeconds(60));
        return (socket, mountDisk) -> {
            FaultPoints.at("template.build");
            agent.await(socket, mountDisk);
        };
    }

    private static ServerSocketChannel listen(Path socket) throws IOException {
        Files.deleteIfExists(socket);
        ServerSocketChannel ch = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        ch.bind(UnixDomainSocketAddress.of(socket));
        Files.setPosixFilePermissions(socket, PosixFilePermissions.fromString("rw-------"));
        return ch;
    }

    private static void checkIds(String namespace, String id) throws TaskFault {
        if (!Ids.isValid(id)) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "task id " + id + " must be " + Ids.RULE);
        }
        if (!NAMESPACE.matcher(namespace).matches()) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "namespace " + namespace + " is not valid");
        }
    }

    private static String key(String namespace, String id) {
        return namespace + "/" + id;
    }

    private StartResponse start(StartRequest r) throws Exception {
        checkIds(r.getNamespace(), r.getId());
        String key = key(r.getNamespace(), r.getId());
        Endpoint existing = tasks.get(key);
        if (existing != null) {
            return StartResponse.newBuilder().setAddress("unix://" + existing.socket()).build();
        }
        OciSpec.PodMember member = r.getBundle().isEmpty() ? null : OciSpec.podMember(Path.of(r.getBundle()));
        if (member != null && !member.sandboxId().equals(r.getId())) {
            return join(r, key, member.sandboxId());
        }
        String name = shortName(key);
        synchronized (tasks) {
            Endpoint raced = tasks.get(key);
            if (raced != null) {
                return StartResponse.newBuilder().setAddress("unix://" + raced.socket()).build();
            }
            Endpoint endpoint = endpoint(r.getNamespace(), r.getId(), r.getTtrpcAddress(), name, null, null);
            endpoint.service().save(); // kept before its relay exists: a restarted daemon finds it
            tasks.put(key, endpoint);
            LOG.log(Level.INFO, "task {0}: endpoint {1}", key, endpoint.socket());
            // The launcher forks the relay, which listens on the socket.
            return StartResponse.newBuilder().setAddress("unix://" + endpoint.socket()).setRelay(name).build();
        }
    }

    /** Routes a container of a pod to the endpoint of the pod's sandbox, whose VM it will run in. */
    private StartResponse join(StartRequest r, String key, String sandboxId) throws TaskFault {
        if (!Ids.isValid(sandboxId)) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "task " + r.getId() + ": annotation "
                    + OciSpec.SANDBOX_ID + " " + sandboxId + " is not a valid sandbox id");
        }
        Endpoint pod = tasks.get(key(r.getNamespace(), sandboxId));
        if (pod == null || !pod.service().id.equals(sandboxId) || !pod.service().route(r.getId())) {
            throw new TaskFault(Fault.NOT_FOUND, "task " + r.getId() + " joins pod " + sandboxId
                    + ", which has no sandbox on this node (" + OciSpec.SANDBOX_ID + ")");
        }
        Endpoint raced = tasks.putIfAbsent(key, pod);
        Endpoint serving = raced == null ? pod : raced;
        LOG.log(Level.INFO, "task {0}: joins pod {1} at {2}", key, sandboxId, serving.socket());
        return StartResponse.newBuilder().setAddress("unix://" + serving.socket()).build();
    }

    private DeleteResponse delete(DeleteRequest r) throws Exception {
        checkIds(r.getNamespace(), r.getId());
        Endpoint e = tasks.get(key(r.getNamespace(), r.getId()));
        if (e != null) {
            return e.service().forceDelete(r.getId());
        }
        // Sandboxes are named by task id alone: the same id in another namespace may be
        // running here, and must not be cleaned for this one.
        if (tasks.values().stream().noneMatch(other -> other.service().id.equals(r.getId()))) {
            manager.cleanup(r.getId());
        }
        return DeleteResponse.newBuilder().setExitStatus(137).setExitedAt(Timestamps.of(Instant.now())).build();
    }

    /** The store as `rund status` shows it: what its layers hold and are promised, what is free. */
    private static String layerStore(io.rund.rootfs.WritableLayerStore store) throws IOException {
        io.rund.rootfs.WritableLayerStore.Usage u = store.usage();
        long free = Files.getFileStore(store.dir()).getUsableSpace();
        return String.format("%s: %d layer(s) held (%d MiB allocated), %d MiB promised to them, %d MiB free; %d MiB each by"
                + " default", store.dir(), u.layers(), u.allocated() >> 20, u.promised() >> 20, free >> 20, store.defaultMiB());
    }

    private StatusResponse status() throws IOException {
        StatusResponse.Builder b = StatusResponse.newBuilder().setPid(ProcessHandle.current().pid())
                .setVersion(Version.CURRENT.toString())
                .setCgroupPool(pool.freeCount() + " free, " + pool.claimed().size() + " claimed")
                .setAccelerator(accelerator).setSpareVmsReady(manager.sparesReady()).setSpareVms(manager.spareVms());
        Standby.waiting(config.stateDir()).ifPresent(p -> b.setStandbyPid(p.pid()));
        b.setLayerStore(layerStore(manager.store()));
        if (config.templates() != null) {
            String key = manager.templateKey();
            b.setTemplates(config.templates().toString()).setTemplateKey(key)
                    .setTemplateBuilt(manager.templates().existing(key) != null);
        }
        for (SandboxState s : manager.list()) {
            SandboxStatus.Builder sb = SandboxStatus.newBuilder().setId(s.sandboxId()).setPhase(s.phase().toString())
                    .setBoot(s.boot()).setVmPid(s.vmPid()).setCgroup(s.cgroupSlot());
            Endpoint own = tasks.values().stream().filter(e -> e.service().id.equals(s.sandboxId())).findFirst().orElse(null);
            if (own != null) {
                tasks.forEach((task, e) -> {
                    if (e == own) {
                        sb.addTasks(task);
                    }
                });
            }
            b.addSandboxes(sb);
        }
        return b.build();
    }

    private TraceResponse trace(TraceRequest r) throws TaskFault {
        List<io.rund.sandbox.lifecycle.StartTrace> kept;
        if (r.getId().isEmpty()) {
            kept = manager.traces().all();
        } else {
            if (!Ids.isValid(r.getId())) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox id " + r.getId() + " is not valid: it must be " + Ids.RULE);
            }
            kept = manager.traces().of(r.getId()).map(List::of).orElseThrow(() -> new TaskFault(Fault.NOT_FOUND,
                    "no start of sandbox " + r.getId() + " is kept (the daemon keeps the latest "
                    + io.rund.sandbox.lifecycle.StartTrace.Kept.KEPT + " since it started)"));
        }
        TraceResponse.Builder b = TraceResponse.newBuilder();
        for (io.rund.sandbox.lifecycle.StartTrace t : kept) {
            io.rund.control.v1.StartTrace.Builder tb = io.rund.control.v1.StartTrace.newBuilder().setId(t.id())
                    .setBeganUnixMillis(t.began().toEpochMilli()).setBoot(t.boot()).setTotalMicros(t.totalMicros())
                    .setError(t.error());
            for (io.rund.sandbox.lifecycle.StartTrace.Step s : t.steps()) {
                TraceStep.Builder sb = TraceStep.newBuilder().setName(s.name()).setMicros(s.micros());
                s.guest().forEach(g -> sb.addGuest(TraceStep.newBuilder().setName(g.name()).setMicros(g.micros())));
                tb.addSteps(sb);
            }
            b.addStarts(tb);
        }
        return b.build();
    }

    private BuildTemplateResponse buildTemplate() throws Exception {
        if (config.templates() == null) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "templates = off in the daemon's configuration:"
                    + " every VM boots cold, there is no template to build");
        }
        SandboxManager.Built b = manager.buildTemplate();
        return BuildTemplateResponse.newBuilder().setKey(b.template().key()).setDir(b.template().dir().toString())
                .setBuilt(b.built()).setBuildMillis(b.millis()).addAllRemoved(b.removed()).build();
    }

    /** Closes a sandbox's endpoint, unroutes every task that was routed to it and lets its relay go. */
    private void forget(String key) {
        Endpoint e = tasks.remove(key);
        if (e != null) {
            tasks.values().removeIf(other -> other == e);
            byName.remove(e.relay().name, e);
            e.relay().quit();
            e.server().shutdown(Duration.ofSeconds(2));
            try {
                e.service().discardRecord();
                Files.deleteIfExists(e.socket());
            } catch (IOException ex) {
                LOG.log(Level.WARNING, "task {0}: remove its record and socket: {1}", key, ex.getMessage());
            }
            LOG.log(Level.INFO, "task {0}: endpoint closed", key);
        }
    }

    /** A short, stable socket name: unix socket paths are limited to 107 bytes. */
    private static String shortName(String key) {
        return Ids.shortHash(key);
    }

    /**
     * Stops serving and goes, leaving every sandbox running and every endpoint kept for the
     * next daemon (their relays hold containerd's connections meanwhile); the spare VMs end.
     * Calls in flight that change something finish (within {@link #STOP_GRACE}); calls that
     * only wait (Wait, WaitSandbox) and calls that arrive meanwhile are given back to the
     * relays, unrun, for the next daemon: an upgrade costs containerd nothing.
     */
    @Override
    public void close() {
        standby.close(); // the one waiting stays, and takes over
        control.shutdown(Duration.ofSeconds(2));
        relays.close();
        List<Endpoint> all = List.copyOf(byName.values());
        all.forEach(e -> e.service().daemonLeaving());
        List<Thread> stops = all.stream()
                .map(e -> Thread.ofVirtual().name("stop-" + e.relay().name).start(() -> e.server().shutdown(STOP_GRACE)))
                .toList();
        for (Thread t : stops) {
            try {
                t.join();
            } catch (InterruptedException ex) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        manager.close();
        pool.close();
    }
}
