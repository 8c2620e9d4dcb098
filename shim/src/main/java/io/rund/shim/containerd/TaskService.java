package io.rund.shim.containerd;

import com.google.protobuf.Empty;
import io.rund.containerd.task.v2.CheckpointTaskRequest;
import io.rund.containerd.task.v2.CloseIORequest;
import io.rund.containerd.task.v2.ConnectRequest;
import io.rund.containerd.task.v2.ConnectResponse;
import io.rund.containerd.task.v2.CreateTaskRequest;
import io.rund.containerd.task.v2.CreateTaskResponse;
import io.rund.containerd.task.v2.DeleteRequest;
import io.rund.containerd.task.v2.DeleteResponse;
import io.rund.containerd.task.v2.ExecProcessRequest;
import io.rund.containerd.task.v2.KillRequest;
import io.rund.containerd.task.v2.PauseRequest;
import io.rund.containerd.task.v2.PidsRequest;
import io.rund.containerd.task.v2.PidsResponse;
import io.rund.containerd.task.v2.ResizePtyRequest;
import io.rund.containerd.task.v2.ResumeRequest;
import io.rund.containerd.task.v2.ShutdownRequest;
import io.rund.containerd.task.v2.StartRequest;
import io.rund.containerd.task.v2.StartResponse;
import io.rund.containerd.task.v2.StateRequest;
import io.rund.containerd.task.v2.StateResponse;
import io.rund.containerd.task.v2.StatsRequest;
import io.rund.containerd.task.v2.StatsResponse;
import io.rund.containerd.task.v2.UpdateTaskRequest;
import io.rund.containerd.task.v2.WaitRequest;
import io.rund.containerd.task.v2.WaitResponse;
import io.rund.containerd.types.task.ProcessInfo;
import io.rund.containerd.types.task.Status;
import io.rund.rootfs.RootfsMount;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.guest.GuestProcess;
import io.rund.sandbox.guest.ProcessExit;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.sandbox.lifecycle.FaultPoints;
import io.rund.sandbox.lifecycle.Pod;
import io.rund.shim.TaskFault;
import io.rund.shim.Timestamps;
import io.rund.shim.oci.OciSpec;
import io.rund.shim.stdio.Stdio;
import io.rund.ttrpc.ServiceDefinition;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * containerd.task.v2.Task for one sandbox: its first container (a task of its own, or a
 * pod's sandbox container) and, in a pod, the containers that join it. Each RPC finds the
 * container by the request's id, looks the process up, acts through the pod's handles
 * ({@link Pod#container}, {@link GuestProcess}), has its event sent ({@link TaskEvents})
 * and builds the reply.
 * Processes move {@link Created} → {@link Running} → {@link Stopped}, under their own lock.
 *
 * <p>Its size is containerd's: the Task API's calls, each mapped here; what is not the
 * mapping (events, metrics, the OCI translation, stdio, status codes) lives in units of
 * its own.
 *
 * <p>The sandbox (the VM) is made by the first container's Create and stopped by its
 * Delete, which waits until no other container of the pod still runs; or, when
 * containerd 2.x's Sandbox API made it ({@link SandboxApi}), by StartSandbox and
 * StopSandbox, and then every container is one that joins it.
 */
public final class TaskService {

    private static final System.Logger LOG = System.getLogger(TaskService.class.getName());
    static final String SERVICE = "containerd.task.v2.Task";
    /**
     * containerd 2.x's task API v3: the same methods and messages as v2 (its shim.proto is
     * v2's under a new package), asked for by a containerd the launcher answered with a
     * BootstrapResult of version 3.
     */
    static final String SERVICE_V3 = "containerd.task.v3.Task";
    private static final Duration STOP_GRACE = Duration.ofSeconds(5);
    /**
     * The metadata key the endpoint's relay adds to a request it sends again to a new daemon
     * because the one that had it went without answering (shim/launcher/relay.c lists which
     * calls it repeats, and why each is safe). Such a Delete, Kill or CloseIO whose work is
     * already done is answered as the first would have been.
     */
    static final String REPLAY = "rund-replay";
    /** Deletes whose answers are kept for a repeat: more than containerd has in flight on one endpoint. */
    private static final int KEPT_DELETES = 64;

    record Exit(int status, Instant at) {}

    /**
     * Keeps a process's fifos open while no daemon does (the endpoint's relay): containerd's
     * side of an output fifo sees no end of stream, and of a stdin fifo no EPIPE, across a
     * daemon restart. Keys are this service's; a drop of an unknown key does nothing.
     */
    public interface Fifos {
        /** Holds {@code path}'s read end ({@code read}: a stdin fifo) or write end (an output fifo). */
        void hold(String key, boolean read, String path);

        void drop(String key);
    }

    /** What the daemon hears from an endpoint. */
    public interface Owner {
        /** A container that joined the pod was deleted: its id no longer routes here. */
        void containerGone(String containerId);

        /** The endpoint serves nothing any more. */
        void closed();

        /** A container joined a Sandbox API sandbox by its Create alone: its id routes here now. */
        default void containerJoined(String containerId) {}
    }

    /** Where a process is: each state a type, so what a state knows (a start time, an exit) goes with it. */
    sealed interface ProcState permits Created, Running, Stopped {}

    /** Made in the guest, not started. */
    record Created() implements ProcState {}

    /** Started at {@code since} (host clock): no exit is reported as earlier. */
    record Running(Instant since) implements ProcState {}

    record Stopped(Exit exit) implements ProcState {}

    /**
     * A process of a container: the init process (execId "") or an exec. Its state and pid
     * change only through its synchronized methods, under its own lock, which a start holds
     * from the check to the transition.
     */
    static final class Proc {
        final String execId;
        final String stdin;
        final String stdout;
        final String stderr;
        final boolean terminal;
        private ProcState state = new Created();
        private int pid;
        /** Completed with the stop: callers wait on it. */
        final CompletableFuture<Exit> exit = new CompletableFuture<>();
        /** containerd has been sent its exit. */
        private boolean reported;

        Proc(String execId, String stdin, String stdout, String stderr, boolean terminal) {
            this.execId = execId;
            this.stdin = stdin;
            this.stdout = stdout;
            this.stderr = stderr;
            this.terminal = terminal;
        }

        synchronized ProcState state() {
            return state;
        }

        synchronized int pid() {
            return pid;
        }

        synchronized void pid(int newPid) {
            pid = newPid;
        }

        /** Created → Running; the caller holds the lock across its check and the guest's start. */
        synchronized Running run() {
            if (!(state instanceof Created)) {
                throw new IllegalStateException("process " + execId + " is " + name(state) + ", not created");
            }
            Running r = new Running(Instant.now());
            state = r;
            return r;
        }

        /** Running → Stopped with {@code exit}, which waiters then see. */
        synchronized void stop(Exit exit) {
            state = new Stopped(exit);
            this.exit.complete(exit);
        }

        boolean running() {
            return state() instanceof Running;
        }

        synchronized void reported() {
            reported = true;
        }

        synchronized TaskRecord.Proc saved() {
            return switch (state) {
                case Created c -> new TaskRecord.Proc(execId, stdin, stdout, stderr, terminal, pid, "created", 0, 0, 0, false);
                case Running r -> new TaskRecord.Proc(execId, stdin, stdout, stderr, terminal, pid, "running",
                        Timestamps.nanos(r.since()), 0, 0, false);
                case Stopped t -> new TaskRecord.Proc(execId, stdin, stdout, stderr, terminal, pid, "stopped", 0,
                        t.exit().status(), Timestamps.nanos(t.exit().at()), reported);
            };
        }

        /** The process as a previous daemon saved it. */
        static Proc restored(TaskRecord.Proc r) {
            Proc p = new Proc(r.execId(), r.stdin(), r.stdout(), r.stderr(), r.terminal());
            p.pid = r.pid();
            switch (r.state()) {
                case "running" -> p.state = new Running(Timestamps.ofNanos(r.sinceNanos()));
                case "stopped" -> {
                    p.stop(new Exit(r.exitStatus(), Timestamps.ofNanos(r.exitedAtNanos())));
                    p.reported = r.reported();
                }
                default -> p.state = new Created();
            }
            return p;
        }

        static String name(ProcState s) {
            return switch (s) {
                case Created c -> "created";
                case Running r -> "running";
                case Stopped t -> "stopped";
            };
        }
    }

    /** A container (a containerd task) of this sandbox. */
    static final class Container {
        public final String id;
        final Path bundle;
        final Map<String, Proc> procs = new ConcurrentHashMap<>();
        volatile boolean paused;

        Container(String id, Path bundle) {
            this.id = id;
            this.bundle = bundle;
        }

        boolean running() {
            return procs.values().stream().anyMatch(Proc::running);
        }

        TaskRecord.Container saved() {
            return new TaskRecord.Container(id, bundle.toString(), paused, procs.values().stream().map(Proc::saved).toList());
        }
    }

    final String namespace;
    /** The sandbox's id: its first container's. */
    public final String id;
    private final String ttrpcAddress;
    private final Pod.Starter starter;
    private final EventPublisher publisher;
    private final TaskEvents events;
    private final Owner owner;
    private final Fifos fifos;
    /** Where this endpoint is kept for a restarted daemon ({@link TaskRecord}). */
    private final Path record;
    private final Object saving = new Object();
    /** Set (under {@code saving}) once the record is removed: nothing writes it again. */
    private boolean discarded;
    private volatile long relayPid;
    /** Ids containerd was given this endpoint for, whether created yet or not. */
    private final Set<String> routed = ConcurrentHashMap.newKeySet();
    private final Map<String, Container> containers = new ConcurrentHashMap<>();
    private final Object lifecycle = new Object();
    private volatile Pod sandbox;
    private volatile boolean closed;
    /** The answers of the last deletes, oldest first; guarded by itself. */
    private final java.util.ArrayDeque<TaskRecord.Deleted> deleted = new java.util.ArrayDeque<>();
    /**
     * Completed when the daemon stops: a call that would wait past it (Wait, WaitSandbox)
     * gives its request back to the relay for the next daemon ({@link Fault#NOT_RUN}).
     */
    final CompletableFuture<Void> leaving = new CompletableFuture<>();

    /**
     * The endpoint of sandbox {@code id}, whose events go to containerd at {@code ttrpcAddress}
     * through {@code events}, whose fifos {@code fifos} holds, kept in {@code record}.
     */
    public TaskService(String namespace, String id, String ttrpcAddress, Pod.Starter starter, EventPublisher events,
            Owner owner, Fifos fifos, Path record) {
        this.namespace = namespace;
        this.id = id;
        this.ttrpcAddress = ttrpcAddress;
        this.starter = starter;
        this.publisher = events;
        this.events = new TaskEvents(events);
        this.owner = owner;
        this.fifos = fifos;
        this.record = record;
        routed.add(id);
    }

    /**
     * The endpoint a previous daemon kept in {@code saved}, serving {@code pod} (its sandbox,
     * adopted; null when it could not be: its VM died, or it was never made). Each process
     * is taken up where it was: a running one's output, input and exit are watched again
     * (the guest kept what it wrote meanwhile in its pipes; exits that happened meanwhile
     * are reported with their status); an exit containerd was not told of is told; without
     * a sandbox, what ran is reported killed (137).
     */
    public static TaskService adopt(TaskRecord saved, Pod pod, Pod.Starter starter, EventPublisher events, Owner owner,
            Fifos fifos, Path record) {
        TaskService t = new TaskService(saved.namespace(), saved.id(), saved.ttrpcAddress(), starter, events, owner, fifos,
                record);
        t.routed.addAll(saved.routed());
        t.relayPid = saved.relayPid();
        t.podFiles = saved.podFiles() == null ? null : Path.of(saved.podFiles());
        t.deleted.addAll(saved.deleted());
        t.sandbox = pod;
        if (pod != null) {
            t.watchOom(pod);
        }
        for (TaskRecord.Container sc : saved.containers()) {
            Container c = new Container(sc.id(), Path.of(sc.bundle()));
            c.paused = sc.paused();
            sc.procs().forEach(sp -> c.procs.put(sp.execId(), Proc.restored(sp)));
            t.containers.put(c.id, c);
        }
        for (Container c : t.containers.values()) {
            for (Proc p : c.procs.values()) {
                t.takeUp(c, p);
            }
        }
        t.save();
        return t;
    }

    /** One process of an adopted endpoint, as {@link #adopt} says. */
    private void takeUp(Container c, Proc p) {
        ProcState state = p.state();
        Pod pod = sandbox;
        if (state instanceof Running running && pod != null) {
            try {
                GuestProcess process = pod.container(c.id).process(p.execId);
                Stdio.Output output = Stdio.output(pod.dir(), namespace, c.id, p.execId, p.stdout, p.stderr, p.terminal);
                output.begin(process);
                // The relay holds this stdin already (a hold is kept across daemons).
                watchExit(process, c, p, running, output, Stdio.pumpIn(process, p.stdin, () -> { }));
                LOG.log(Level.INFO, "task {0}: process {1} taken up after a daemon restart", c.id, label(c, p));
                return;
            } catch (TaskFault e) {
                LOG.log(Level.WARNING, "task {0}: take up {1}: {2}", c.id, label(c, p), e.getMessage());
            }
        }
        if (!(state instanceof Stopped)) {
            if (state instanceof Created && pod != null) {
                return; // still waiting in the guest for its Start
            }
            p.stop(new Exit(137, Instant.now()));
        }
        synchronized (p) {
            if (p.reported) {
                return;
            }
        }
        Exit exit = p.exit.join();
        dropFifos(c, p);
        events.exited(c.id, p.execId, p.pid(), exit, () -> reported(p));
    }

    /** Rewrites this endpoint's record; a failure is logged (only a restarted daemon would miss it). */
    public void save() {
        synchronized (saving) {
            if (discarded) {
                return; // the endpoint is gone: a process's late exit must not bring its record back
            }
            List<TaskRecord.Deleted> deletes;
            synchronized (deleted) {
                deletes = List.copyOf(deleted);
            }
            TaskRecord r = new TaskRecord(namespace, id, ttrpcAddress, relayPid, List.copyOf(routed),
                    containers.values().stream().map(Container::saved).toList(),
                    podFiles == null ? null : podFiles.toString(), deletes);
            try {
                r.write(record);
            } catch (java.io.IOException e) {
                LOG.log(Level.WARNING, "task {0}: write {1}: {2}", id, record, e.getMessage());
            }
        }
    }

    /** The endpoint is gone for good: its record is removed, and no later save writes it again. */
    public void discardRecord() throws java.io.IOException {
        synchronized (saving) {
            discarded = true;
            java.nio.file.Files.deleteIfExists(record);
        }
    }

    /** The relay serving this endpoint said hello: its pid is kept, for a restarted daemon to know it lives. */
    public void relayPid(long pid) {
        if (pid != relayPid) {
            relayPid = pid;
            save();
        }
    }

    private void reported(Proc p) {
        p.reported();
        save();
    }

    /** The relay's keys of a process's fifos. */
    private static String fifoKey(Container c, Proc p, String stream) {
        return io.rund.sandbox.id.Ids.shortHash(c.id + "/" + p.execId) + "." + stream;
    }

    /** Has the relay hold a started process's fifos (file:// destinations and binaries need nothing). */
    /** The relay holds the process's output fifos (its stdin once the pump has it open: {@link #holdStdin}). */
    private void holdFifos(Container c, Proc p) {
        if (p.stdout.startsWith("/")) {
            fifos.hold(fifoKey(c, p, "out"), false, p.stdout);
        }
        if (!p.terminal && p.stderr.startsWith("/")) {
            fifos.hold(fifoKey(c, p, "err"), false, p.stderr);
        }
    }

    /** The relay holds the stdin fifo, read-only, so that containerd's writes never see EPIPE while no daemon runs. */
    private void holdStdin(Container c, Proc p) {
        synchronized (p) { // not after its exit's stop and drop (they come after p.stop, under p)
            if (p.stdin.startsWith("/") && !(p.state() instanceof Stopped)) {
                fifos.hold(fifoKey(c, p, "in"), true, p.stdin);
            }
        }
    }

    private void dropFifos(Container c, Proc p) {
        for (String stream : List.of("in", "out", "err")) {
            fifos.drop(fifoKey(c, p, stream));
        }
    }

    /** Lets a container of the pod be created here; false once the endpoint is closing. */
    public boolean route(String containerId) {
        synchronized (lifecycle) {
            if (closed) {
                return false;
            }
            routed.add(containerId);
        }
        save();
        return true;
    }

    /** containerd 2.x's Sandbox API for this endpoint, with rund's pause from {@code pauseRootfs}. */
    public ServiceDefinition sandboxApi(Path pauseRootfs) {
        return new SandboxApi(this, pauseRootfs).definition();
    }

    /** The task API, as v2 and as v3: containerd asks for the one the launcher's answer named. */
    public List<ServiceDefinition> definitions() {
        return List.of(definition(SERVICE), definition(SERVICE_V3));
    }

    private ServiceDefinition definition(String service) {
        return ServiceDefinition.builder(service)
                .unary("Create", CreateTaskRequest.parser(), (c, r) -> create(r))
                .unary("Start", StartRequest.parser(), (c, r) -> start(r))
                .unary("State", StateRequest.parser(), (c, r) -> state(r))
                .unary("Wait", WaitRequest.parser(), (c, r) -> waitFor(r))
                .unary("Kill", KillRequest.parser(), (c, r) -> kill(r, replayed(c)))
                .unary("Delete", DeleteRequest.parser(), (c, r) -> delete(r.getId(), r.getExecId(), replayed(c)))
                .unary("Exec", ExecProcessRequest.parser(), (c, r) -> exec(r))
                .unary("ResizePty", ResizePtyRequest.parser(), (c, r) -> resize(r))
                .unary("CloseIO", CloseIORequest.parser(), (c, r) -> closeIO(r, replayed(c)))
                .unary("Pids", PidsRequest.parser(), (c, r) -> pids(r))
                .unary("Pause", PauseRequest.parser(), (c, r) -> pause(r.getId(), true))
                .unary("Resume", ResumeRequest.parser(), (c, r) -> pause(r.getId(), false))
                .unary("Update", UpdateTaskRequest.parser(), (c, r) -> update(r))
                .unary("Stats", StatsRequest.parser(), (c, r) -> stats(r))
                .unary("Connect", ConnectRequest.parser(), (c, r) -> connect(r))
                .unary("Shutdown", ShutdownRequest.parser(), (c, r) -> shutdown(r))
                .unary("Checkpoint", CheckpointTaskRequest.parser(), (c, r) -> {
                    throw new TaskFault(Fault.UNIMPLEMENTED, "checkpoint of a rund task is not supported");
                })
                .build();
    }

    /** Refuses a task id containerd was not given this endpoint for. */
    private void checkServed(String requested) throws TaskFault {
        if (!routed.contains(requested)) {
            throw new TaskFault(Fault.NOT_FOUND, "task " + requested + " (this endpoint serves sandbox " + id + ")");
        }
    }

    private Container container(String requested) throws TaskFault {
        checkServed(requested);
        Container c = containers.get(requested);
        if (c == null) {
            throw new TaskFault(Fault.NOT_FOUND, "task " + requested + " is not created");
        }
        return c;
    }

    /** A joined container is gone from the sandbox: its id no longer routes here. */
    private void forgetJoined(String cid) {
        containers.remove(cid);
        routed.remove(cid);
        save();
        owner.containerGone(cid);
    }

    private Proc proc(Container c, String execId) throws TaskFault {
        Proc p = c.procs.get(execId);
        if (p == null) {
            throw new TaskFault(Fault.NOT_FOUND, execId.isEmpty() ? "task " + c.id + " is not created"
                    : "process " + execId + " of task " + c.id);
        }
        return p;
    }

    private Pod sandbox() throws TaskFault {
        Pod s = sandbox;
        if (s == null) {
            throw new TaskFault(Fault.NOT_FOUND, "sandbox " + id + " is not created");
        }
        return s;
    }

    private CreateTaskResponse create(CreateTaskRequest r) throws Exception {
        String cid = r.getId();
        if (!r.getCheckpoint().isEmpty()) {
            throw new TaskFault(Fault.UNIMPLEMENTED, "restore from checkpoint is not supported");
        }
        Stdio.check(r.getStdin(), r.getStdout(), r.getStderr());
        boolean joinedHere = false;
        if (!routed.contains(cid)) {
            // A Sandbox API sandbox's containers come without a start of their own: one whose
            // spec names this pod joins it.
            if (sandboxApi() && !io.rund.sandbox.id.Ids.isValid(cid)) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, "task id " + cid + " must be " + io.rund.sandbox.id.Ids.RULE);
            }
            OciSpec.PodMember member = sandboxApi() ? OciSpec.podMember(Path.of(r.getBundle())) : null;
            if (member == null || !member.sandboxId().equals(id) || !route(cid)) {
                throw new TaskFault(Fault.NOT_FOUND, "task " + cid + " was not started on this endpoint (sandbox " + id
                        + ")" + (sandboxApi() ? " and its spec does not name this pod as its " + OciSpec.SANDBOX_ID : ""));
            }
            owner.containerJoined(cid);
            joinedHere = true;
        }
        Path bundlePath = Path.of(r.getBundle());
        Container c = new Container(cid, bundlePath);
        Proc init = new Proc("", r.getStdin(), r.getStdout(), r.getStderr(), r.getTerminal());
        c.procs.put("", init);
        if (containers.putIfAbsent(cid, c) != null) {
            throw new TaskFault(Fault.ALREADY_EXISTS, "task " + cid);
        }
        try {
            List<RootfsMount> rootfs = new ArrayList<>();
            r.getRootfsList().forEach(m -> rootfs.add(new RootfsMount(m.getType(), m.getSource(), m.getOptionsList())));
            ContainerSpec cs = OciSpec.readBundle(cid, bundlePath, rootfs, r.getTerminal());
            if (cid.equals(id)) {
                sandbox = starter.start(cs);
                watchOom(sandbox);
            } else {
                sandbox().addContainer(sandboxApi() ? SandboxApi.withPodFiles(cs, podFiles) : cs);
            }
        } catch (Exception e) {
            containers.remove(cid);
            if (joinedHere) {
                forgetJoined(cid); // routed by this Create alone: nothing of it stays
            }
            throw e;
        }
        // The task's pid is the VM's on the host: containerd and its users look pids up there.
        init.pid((int) sandbox.vmPid());
        save();
        events.created(r, init.pid());
        return CreateTaskResponse.newBuilder().setPid(init.pid()).build();
    }

    private StartResponse start(StartRequest r) throws Exception {
        Container c = container(r.getId());
        Proc p = proc(c, r.getExecId());
        synchronized (p) {
            if (!(p.state() instanceof Created)) {
                throw new TaskFault(Fault.FAILED_PRECONDITION,
                        "process " + label(c, p) + " is " + Proc.name(p.state()) + ", not created");
            }
            GuestProcess process = sandbox().container(c.id).process(p.execId);
            Stdio.Output output = Stdio.output(sandbox().dir(), namespace, c.id, p.execId, p.stdout, p.stderr, p.terminal);
            // An exec's pipes exist only once it is started; whatever it writes before the
            // pumps read stays in them.
            int guestPid;
            try {
                guestPid = process.start();
            } catch (AgentException e) {
                output.abandon();
                throw e;
            }
            output.begin(process);
            Stdio.Input input = Stdio.pumpIn(process, p.stdin, () -> holdStdin(c, p));
            if (!p.execId.isEmpty()) {
                p.pid(guestPid);
            }
            holdFifos(c, p);
            watchExit(process, c, p, p.run(), output, input);
        }
        FaultPoints.at("task.start");
        save();
        events.started(c.id, p.execId, p.pid());
        return StartResponse.newBuilder().setPid(p.pid()).build();
    }

    /** Waits (on a virtual thread) for the process to exit and its output to drain, then reports it. */
    private void watchExit(GuestProcess process, Container c, Proc p, Running running, Stdio.Output output, Stdio.Input input) {
        Thread.ofVirtual().name("exit-" + c.id + "-" + p.execId).start(() -> {
            Exit exit;
            try {
                ProcessExit e = process.await();
                // The guest's clock may run behind the host's; an exit before the start is that.
                exit = new Exit(e.status(), e.exitedAt().isBefore(running.since()) ? running.since() : e.exitedAt());
            } catch (AgentException e) {
                // A VM that died took its processes with it, as a kill would: 137, as for runc's SIGKILL.
                boolean vmGone = sandbox != null && !sandbox.awaitVmRunning(Duration.ofSeconds(2));
                LOG.log(Level.WARNING, "task {0}: lost process {1}{2}: {3}", c.id, label(c, p),
                        vmGone ? " (its VM is gone)" : "", e.getMessage());
                exit = new Exit(vmGone ? 137 : 255, Instant.now());
            }
            output.awaitDrained(Duration.ofSeconds(10));
            input.cancel();
            p.stop(exit);
            save();
            try {
                FaultPoints.at("task.exit");
            } catch (io.rund.sandbox.lifecycle.SandboxException e) {
                LOG.log(Level.WARNING, "task {0}: {1}", c.id, e.getMessage()); // an exit is still reported
            }
            dropFifos(c, p); // containerd's side of the output sees its end once ours is closed too
            events.exited(c.id, p.execId, p.pid(), exit, () -> reported(p));
        });
    }

    private static String label(Container c, Proc p) {
        return p.execId.isEmpty() ? c.id : c.id + "/" + p.execId;
    }

    private StateResponse state(StateRequest r) throws TaskFault {
        Container c = container(r.getId());
        Proc p = proc(c, r.getExecId());
        ProcState state = p.state();
        StateResponse.Builder b = StateResponse.newBuilder().setId(r.getExecId().isEmpty() ? c.id : r.getExecId())
                .setBundle(c.bundle.toString()).setPid(p.pid())
                .setStdin(p.stdin).setStdout(p.stdout).setStderr(p.stderr).setTerminal(p.terminal)
                .setExecId(r.getExecId())
                .setStatus(switch (state) {
                    case Created created -> Status.CREATED;
                    case Running running -> c.paused ? Status.PAUSED : Status.RUNNING;
                    case Stopped stopped -> Status.STOPPED;
                });
        if (state instanceof Stopped stopped) {
            b.setExitStatus(stopped.exit().status()).setExitedAt(Timestamps.of(stopped.exit().at()));
        }
        return b.build();
    }

    private WaitResponse waitFor(WaitRequest r) throws Exception {
        Proc p = proc(container(r.getId()), r.getExecId());
        CompletableFuture.anyOf(p.exit, leaving).get();
        if (!p.exit.isDone()) {
            throw new TaskFault(Fault.NOT_RUN, "the daemon is stopping: wait for " + r.getId()
                    + (r.getExecId().isEmpty() ? "" : "/" + r.getExecId()) + " goes on with the next one");
        }
        Exit e = p.exit.get();
        return WaitResponse.newBuilder().setExitStatus(e.status()).setExitedAt(Timestamps.of(e.at())).build();
    }

    /** Whether the relay sent this request again, after a daemon that had it went ({@link #REPLAY}). */
    private static boolean replayed(io.rund.ttrpc.CallContext c) {
        return c.metadata().get(REPLAY).isPresent();
    }

    /** Whether task {@code cid} has process {@code execId} here now. */
    private boolean exists(String cid, String execId) {
        Container c = containers.get(cid);
        return c != null && c.procs.containsKey(execId);
    }

    /** The answer a Delete of {@code cid}/{@code execId} was given, the latest; null if none is kept. */
    private TaskRecord.Deleted deletedEarlier(String cid, String execId) {
        synchronized (deleted) {
            for (var it = deleted.descendingIterator(); it.hasNext(); ) {
                TaskRecord.Deleted d = it.next();
                if (d.id().equals(cid) && d.execId().equals(execId)) {
                    return d;
                }
            }
        }
        return null;
    }

    private Empty kill(KillRequest r, boolean replayed) throws Exception {
        if (r.getSignal() < 1 || r.getSignal() > 64) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "signal " + r.getSignal() + " is outside 1..64");
        }
        if (replayed && !exists(r.getId(), r.getExecId()) && deletedEarlier(r.getId(), r.getExecId()) != null) {
            return Empty.getDefaultInstance(); // deleted since: it ended, as the kill asked
        }
        Container c = container(r.getId());
        Proc p = proc(c, r.getExecId());
        ProcState state = p.state();
        if (replayed && state instanceof Stopped) {
            return Empty.getDefaultInstance(); // the first kill, or the process's own end, got there
        }
        if (state instanceof Created && p.execId.isEmpty()) {
            killCreated(c, p, r.getSignal());
            return Empty.getDefaultInstance();
        }
        if (state instanceof Stopped && !r.getAll()) {
            throw new TaskFault(Fault.NOT_FOUND, "process " + label(c, p) + " already finished");
        }
        sandbox().container(c.id).process(p.execId).signal(r.getSignal(), r.getAll());
        return Empty.getDefaultInstance();
    }

    /** Signals whose default action leaves a process running: what a created init survives. */
    private static final Set<Integer> HARMLESS = Set.of(17, 18, 19, 20, 21, 22, 23, 28);

    /**
     * A signal to a created, not started init. runc delivers it to the init waiting in
     * `runc init`, which a fatal one ends (128 + signal, with its exit event), and containerd's
     * forced delete of a created task counts on that. Here the init waits in the guest for a
     * start that will not come: it is ended with the container, at Delete.
     */
    private void killCreated(Container c, Proc p, int signal) {
        if (HARMLESS.contains(signal)) {
            return;
        }
        Exit exit = new Exit(128 + signal, Instant.now());
        synchronized (p) {
            if (!(p.state() instanceof Created)) {
                return; // started meanwhile: its exit is watched
            }
            p.stop(exit);
        }
        save();
        events.exited(c.id, p.execId, p.pid(), exit, () -> reported(p));
    }

    private DeleteResponse delete(String cid, String execId, boolean replayed) throws Exception {
        if (replayed && !exists(cid, execId)) {
            TaskRecord.Deleted d = deletedEarlier(cid, execId);
            if (d != null) {
                LOG.log(Level.INFO, "task {0}: a repeated delete{1}, answered as the first", cid,
                        execId.isEmpty() ? "" : " of " + execId);
                return DeleteResponse.newBuilder().setPid(d.pid()).setExitStatus(d.exitStatus())
                        .setExitedAt(Timestamps.of(Timestamps.ofNanos(d.exitedAtNanos()))).build();
            }
        }
        Container c = container(cid);
        Proc p = proc(c, execId);
        Exit e;
        synchronized (p) { // not while a start is between its check and its transition
            e = switch (p.state()) {
                case Running running -> throw new TaskFault(Fault.FAILED_PRECONDITION,
                        "process " + label(c, p) + " is still running");
                case Stopped stopped -> stopped.exit();
                case Created created -> new Exit(0, Instant.now());
            };
        }
        // Kept before the removal is saved (a restarted daemon answers a repeat from it), taken back if it fails.
        TaskRecord.Deleted answer = new TaskRecord.Deleted(c.id, execId, p.pid(), e.status(), Timestamps.nanos(e.at()));
        if (execId.isEmpty()) {
            if (c.running()) {
                throw new TaskFault(Fault.FAILED_PRECONDITION, "task " + c.id + " still has running execs");
            }
            keepDelete(answer);
            try {
                removeContainer(c);
            } catch (Exception ex) {
                synchronized (deleted) {
                    deleted.remove(answer);
                }
                throw ex;
            }
        } else {
            keepDelete(answer);
            try {
                sandbox().container(c.id).process(execId).delete();
            } catch (AgentException ignored) {
                // the process record in the guest is gone already
            }
            c.procs.remove(execId);
        }
        save();
        events.deleted(c.id, execId, p.pid(), e);
        return DeleteResponse.newBuilder().setPid(p.pid()).setExitStatus(e.status()).setExitedAt(Timestamps.of(e.at())).build();
    }

    private void keepDelete(TaskRecord.Deleted answer) {
        synchronized (deleted) {
            if (deleted.size() == KEPT_DELETES) {
                deleted.removeFirst();
            }
            deleted.addLast(answer);
        }
    }

    /**
     * Removes a container whose processes have all ended. The first container takes the
     * sandbox with it, and so waits for every other container of the pod to be stopped.
     */
    private void removeContainer(Container c) throws Exception {
        if (!c.id.equals(id)) {
            sandbox().removeContainer(c.id);
            forgetJoined(c.id);
            return;
        }
        List<String> running = containers.values().stream().filter(o -> o != c && o.running()).map(o -> o.id).toList();
        if (!running.isEmpty()) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox task " + id
                    + " is the pod's; its containers " + running + " still run");
        }
        Pod s = sandbox;
        if (s != null) {
            s.stop(STOP_GRACE);
        }
        for (Container o : containers.values()) {
            if (o != c) {
                owner.containerGone(o.id);
            }
        }
        containers.clear();
    }

    private Empty exec(ExecProcessRequest r) throws Exception {
        Container c = container(r.getId());
        if (r.getExecId().isEmpty()) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "exec_id is empty");
        }
        Stdio.check(r.getStdin(), r.getStdout(), r.getStderr());
        Proc init = proc(c, "");
        if (!init.running()) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "task " + c.id + " is not running");
        }
        ProcessSpec process = OciSpec.execProcess(r.getSpec().getValue().toByteArray()).withTerminal(r.getTerminal());
        Proc p = new Proc(r.getExecId(), r.getStdin(), r.getStdout(), r.getStderr(), r.getTerminal());
        if (c.procs.putIfAbsent(r.getExecId(), p) != null) {
            throw new TaskFault(Fault.ALREADY_EXISTS, "process " + r.getExecId() + " of task " + c.id);
        }
        try {
            sandbox().allowExec(c.id, process);
            sandbox().container(c.id).exec(r.getExecId(), process);
        } catch (AgentException | io.rund.sandbox.lifecycle.SandboxException e) {
            c.procs.remove(r.getExecId());
            throw e;
        }
        save();
        events.execAdded(c.id, r.getExecId());
        return Empty.getDefaultInstance();
    }

    private Empty resize(ResizePtyRequest r) throws Exception {
        Container c = container(r.getId());
        Proc p = proc(c, r.getExecId());
        sandbox().container(c.id).process(p.execId).resizePty(r.getHeight(), r.getWidth());
        return Empty.getDefaultInstance();
    }

    private Empty closeIO(CloseIORequest r, boolean replayed) throws Exception {
        if (replayed && !exists(r.getId(), r.getExecId())) {
            return Empty.getDefaultInstance(); // gone since: its stdin with it
        }
        Container c = container(r.getId());
        Proc p = proc(c, r.getExecId());
        if (r.getStdin() && p.stdin.isEmpty()) {
            sandbox().container(c.id).process(p.execId).closeStdin();
        }
        // With a stdin fifo, the pump closes the process's stdin when containerd closes the fifo.
        return Empty.getDefaultInstance();
    }

    private PidsResponse pids(PidsRequest r) throws Exception {
        Container c = container(r.getId());
        PidsResponse.Builder b = PidsResponse.newBuilder();
        for (int pid : sandbox().container(c.id).pids()) {
            b.addProcesses(ProcessInfo.newBuilder().setPid(pid));
        }
        return b.build();
    }

    private Empty pause(String cid, boolean pause) throws Exception {
        Container c = container(cid);
        if (pause) {
            sandbox().container(c.id).pause();
            c.paused = true;
            save();
            events.paused(c.id, true);
        } else {
            sandbox().container(c.id).resume();
            c.paused = false;
            save();
            events.paused(c.id, false);
        }
        return Empty.getDefaultInstance();
    }

    private Empty update(UpdateTaskRequest r) throws Exception {
        Container c = container(r.getId());
        sandbox().container(c.id).update(OciSpec.resources(r.getResources().getValue().toByteArray()));
        return Empty.getDefaultInstance();
    }

    private StatsResponse stats(StatsRequest r) throws Exception {
        Container c = container(r.getId());
        return StatsResponse.newBuilder().setStats(ContainerMetrics.of(sandbox().container(c.id).stats())).build();
    }

    private ConnectResponse connect(ConnectRequest r) throws TaskFault {
        checkServed(r.getId());
        Container c = containers.get(r.getId());
        Proc init = c == null ? null : c.procs.get("");
        return ConnectResponse.newBuilder().setShimPid((int) ProcessHandle.current().pid())
                .setTaskPid(init == null ? 0 : init.pid()).setVersion("rund 0.1.0").build();
    }

    /**
     * containerd asks the shim to go after each task's delete; this endpoint goes only once
     * it serves no container (with {@code now}, at once, stopping the sandbox).
     */
    private Empty shutdown(ShutdownRequest r) throws TaskFault {
        if (sandboxApi()) {
            // After each container's delete, for the container's id (gone from here by then):
            // a Sandbox API sandbox's endpoint ends with ShutdownSandbox only.
            return Empty.getDefaultInstance();
        }
        checkServed(r.getId());
        synchronized (lifecycle) {
            if (!r.getNow() && !containers.isEmpty()) {
                return Empty.getDefaultInstance();
            }
            closed = true;
        }
        // After the answer has gone out: close this endpoint.
        CompletableFuture.delayedExecutor(100, TimeUnit.MILLISECONDS).execute(this::close);
        return Empty.getDefaultInstance();
    }

    /** No container is created here (none yet, or all deleted), nor a sandbox of the Sandbox API. */
    public boolean servesNothing() {
        return containers.isEmpty() && !sandboxApi();
    }

    /**
     * Set by CreateSandbox when containerd 2.x's Sandbox API makes this endpoint's sandbox:
     * where the pod's /etc files are, which every container that joins gets.
     */
    private volatile Path podFiles;

    /**
     * Marks the endpoint as a Sandbox API sandbox's (CreateSandbox), its pod's /etc files in
     * {@code files}; false when it already has a sandbox or has ended.
     */
    boolean useSandboxApi(Path files) {
        synchronized (lifecycle) {
            if (closed || sandbox != null || !containers.isEmpty() || podFiles != null) {
                return false;
            }
            podFiles = files;
        }
        save();
        return true;
    }

    boolean sandboxApi() {
        return podFiles != null;
    }

    /** StartSandbox: the pod's VM, holding the pod's namespaces in {@code holder}, a container containerd does not see. */
    Pod startSandbox(ContainerSpec holder) throws Exception {
        synchronized (lifecycle) {
            if (closed) {
                throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + id + " has ended");
            }
            if (sandbox != null) {
                throw new TaskFault(Fault.ALREADY_EXISTS, "sandbox " + id + " is started");
            }
        }
        Pod p = starter.start(holder);
        synchronized (lifecycle) {
            if (!closed) {
                sandbox = p;
                watchOom(p);
                return p;
            }
        }
        p.stop(STOP_GRACE); // shut down while it started
        throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + id + " ended while it started");
    }

    /** Fewest milliseconds between two OOM answers of one pod's guest: none can flood containerd or spin a thread. */
    private static final long OOM_EVENT_GAP_MILLIS = 100;

    /**
     * Tells containerd of every OOM kill in the pod's containers (TaskOOM), as runc's shim
     * does from the cgroup, for as long as the guest answers: it waits on the agent, which
     * watches each container's memory.events. At most one answer per {@link
     * #OOM_EVENT_GAP_MILLIS}, so a guest that answers at once, for ever, costs nothing.
     */
    private void watchOom(Pod pod) {
        Thread.ofVirtual().name("oom-" + id).start(() -> {
            while (true) {
                String cid;
                try {
                    cid = pod.processes().waitOom(null);
                } catch (AgentException e) {
                    LOG.log(Level.DEBUG, "task {0}: OOM watch ends: {1}", id, e.getMessage());
                    return;
                }
                if (containers.containsKey(cid)) {
                    LOG.log(Level.INFO, "task {0}: container {1} had a process OOM-killed", id, cid);
                    events.oom(cid);
                } else {
                    // Another endpoint's container of the pod (it reports its own), or a guest's lie.
                    LOG.log(Level.DEBUG, "task {0}: OOM kill in {1}, not a container of this endpoint", id, cid);
                }
                try {
                    Thread.sleep(OOM_EVENT_GAP_MILLIS);
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
    }

    /** The sandbox, or null before it started. */
    Pod sandboxOrNull() {
        return sandbox;
    }

    /**
     * The daemon is stopping (the sandbox runs on): calls waiting here give their requests
     * back to the relay, for the next daemon.
     */
    public void daemonLeaving() {
        leaving.complete(null);
    }

    /** Stops the sandbox if it still runs and ends this endpoint. */
    public void close() {
        synchronized (lifecycle) {
            closed = true;
        }
        Pod s = sandbox;
        if (s != null) {
            s.stop(STOP_GRACE);
        }
        publisher.close();
        owner.closed();
    }

    /**
     * For the launcher's delete (containerd's last word on a task whose shim it lost): the
     * init's exit, or a kill's if it never said. The sandbox's own task ends the endpoint;
     * a joined container is removed from the sandbox.
     */
    public DeleteResponse forceDelete(String cid) {
        Container c = containers.get(cid);
        Proc p = c == null ? null : c.procs.get("");
        Exit e = p == null ? new Exit(137, Instant.now()) : p.exit.getNow(new Exit(137, Instant.now()));
        if (cid.equals(id)) {
            close();
        } else {
            try {
                if (c != null) {
                    sandbox().removeContainer(cid);
                }
            } catch (Exception ex) {
                LOG.log(Level.WARNING, "task {0}: remove from sandbox {1}: {2}", cid, id, ex.getMessage());
            }
            forgetJoined(cid);
        }
        return DeleteResponse.newBuilder().setPid(p == null ? 0 : p.pid()).setExitStatus(e.status())
                .setExitedAt(Timestamps.of(e.at())).build();
    }
}
