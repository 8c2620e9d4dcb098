package io.rund.shim;

import com.google.protobuf.Any;
import com.google.protobuf.Empty;
import com.google.protobuf.Timestamp;
import io.rund.containerd.cgroups.v1.CPUStat;
import io.rund.containerd.cgroups.v1.CPUUsage;
import io.rund.containerd.cgroups.v1.MemoryEntry;
import io.rund.containerd.cgroups.v1.MemoryStat;
import io.rund.containerd.cgroups.v1.Metrics;
import io.rund.containerd.cgroups.v1.PidsStat;
import io.rund.containerd.events.TaskCreate;
import io.rund.containerd.events.TaskDelete;
import io.rund.containerd.events.TaskExecAdded;
import io.rund.containerd.events.TaskExecStarted;
import io.rund.containerd.events.TaskExit;
import io.rund.containerd.events.TaskIO;
import io.rund.containerd.events.TaskPaused;
import io.rund.containerd.events.TaskResumed;
import io.rund.containerd.events.TaskStart;
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
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.lifecycle.Sandbox;
import io.rund.sandbox.lifecycle.SandboxManager;
import io.rund.sandbox.lifecycle.SandboxSpec;
import io.rund.ttrpc.ServiceDefinition;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * containerd.task.v2.Task for one task (one sandbox, one container): each RPC checks the
 * id, looks the process up, delegates to the sandbox's agent, publishes its event and
 * builds the reply. Processes move CREATED → RUNNING → STOPPED.
 */
final class TaskService {

    private static final System.Logger LOG = System.getLogger(TaskService.class.getName());
    static final String SERVICE = "containerd.task.v2.Task";
    private static final Duration STOP_GRACE = Duration.ofSeconds(5);

    enum State {
        CREATED,
        RUNNING,
        STOPPED
    }

    record Exit(int status, Instant at) {}

    /** A process of the task: the init process (execId "") or an exec. */
    static final class Proc {
        final String execId;
        final String stdin;
        final String stdout;
        final String stderr;
        final boolean terminal;
        volatile State state = State.CREATED;
        volatile int pid;
        final CompletableFuture<Exit> exit = new CompletableFuture<>();

        Proc(String execId, String stdin, String stdout, String stderr, boolean terminal) {
            this.execId = execId;
            this.stdin = stdin;
            this.stdout = stdout;
            this.stderr = stderr;
            this.terminal = terminal;
        }
    }

    final String namespace;
    final String id;
    private final SandboxManager manager;
    private final EventPublisher events;
    private final Runnable onShutdown;
    private final Map<String, Proc> procs = new ConcurrentHashMap<>();
    private volatile Sandbox sandbox;
    private volatile boolean paused;
    private volatile Path bundle;

    TaskService(String namespace, String id, SandboxManager manager, EventPublisher events, Runnable onShutdown) {
        this.namespace = namespace;
        this.id = id;
        this.manager = manager;
        this.events = events;
        this.onShutdown = onShutdown;
    }

    ServiceDefinition definition() {
        return ServiceDefinition.builder(SERVICE)
                .unary("Create", CreateTaskRequest.parser(), (c, r) -> create(r))
                .unary("Start", StartRequest.parser(), (c, r) -> start(r))
                .unary("State", StateRequest.parser(), (c, r) -> state(r))
                .unary("Wait", WaitRequest.parser(), (c, r) -> waitFor(r))
                .unary("Kill", KillRequest.parser(), (c, r) -> kill(r))
                .unary("Delete", DeleteRequest.parser(), (c, r) -> delete(r.getId(), r.getExecId()))
                .unary("Exec", ExecProcessRequest.parser(), (c, r) -> exec(r))
                .unary("ResizePty", ResizePtyRequest.parser(), (c, r) -> resize(r))
                .unary("CloseIO", CloseIORequest.parser(), (c, r) -> closeIO(r))
                .unary("Pids", PidsRequest.parser(), (c, r) -> pids(r))
                .unary("Pause", PauseRequest.parser(), (c, r) -> pause(r.getId(), true))
                .unary("Resume", ResumeRequest.parser(), (c, r) -> pause(r.getId(), false))
                .unary("Update", UpdateTaskRequest.parser(), (c, r) -> update(r))
                .unary("Stats", StatsRequest.parser(), (c, r) -> stats(r))
                .unary("Connect", ConnectRequest.parser(), (c, r) -> connect(r))
                .unary("Shutdown", ShutdownRequest.parser(), (c, r) -> shutdown(r))
                .unary("Checkpoint", CheckpointTaskRequest.parser(), (c, r) -> {
                    throw new TaskFault(TaskFault.Kind.UNIMPLEMENTED, "checkpoint of a rund task is not supported");
                })
                .build();
    }

    private void checkId(String requested) throws TaskFault {
        if (!id.equals(requested)) {
            throw new TaskFault(TaskFault.Kind.NOT_FOUND, "task " + requested + " (this endpoint serves " + id + ")");
        }
    }

    private Proc proc(String requestedId, String execId) throws TaskFault {
        checkId(requestedId);
        Proc p = procs.get(execId);
        if (p == null) {
            throw new TaskFault(TaskFault.Kind.NOT_FOUND, execId.isEmpty() ? "task " + id + " is not created"
                    : "process " + execId + " of task " + id);
        }
        return p;
    }

    private Sandbox sandbox() throws TaskFault {
        Sandbox s = sandbox;
        if (s == null) {
            throw new TaskFault(TaskFault.Kind.NOT_FOUND, "task " + id + " is not created");
        }
        return s;
    }

    private static Timestamp ts(Instant t) {
        return Timestamp.newBuilder().setSeconds(t.getEpochSecond()).setNanos(t.getNano()).build();
    }

    private CreateTaskResponse create(CreateTaskRequest r) throws Exception {
        checkId(r.getId());
        if (!r.getCheckpoint().isEmpty()) {
            throw new TaskFault(TaskFault.Kind.UNIMPLEMENTED, "restore from checkpoint is not supported");
        }
        Stdio.check(r.getStdin(), r.getStdout(), r.getStderr());
        Proc init = new Proc("", r.getStdin(), r.getStdout(), r.getStderr(), r.getTerminal());
        if (procs.putIfAbsent("", init) != null) {
            throw new TaskFault(TaskFault.Kind.ALREADY_EXISTS, "task " + id);
        }
        try {
            Path bundlePath = Path.of(r.getBundle());
            OciSpec.Bundle spec = OciSpec.readBundle(bundlePath);
            List<RootfsMount> rootfs = new ArrayList<>();
            r.getRootfsList().forEach(m -> rootfs.add(new RootfsMount(m.getType(), m.getSource(), m.getOptionsList())));
            io.rund.agent.v1.Process process = spec.process().toBuilder().setTerminal(r.getTerminal()).build();
            sandbox = manager.start(new SandboxSpec(id, rootfs, process.getArgsList(), process.getEnvList(),
                    process.getCwd(), spec.hostname(), r.getTerminal(), spec.memoryLimitBytes(), spec.cpuQuotaMicros(),
                    process));
            bundle = bundlePath;
        } catch (Exception e) {
            procs.remove("");
            throw e;
        }
        init.pid = (int) sandbox.vm().pid();
        events.publish("/tasks/create", TaskCreate.newBuilder().setContainerId(id).setBundle(r.getBundle())
                .addAllRootfs(r.getRootfsList())
                .setIo(TaskIO.newBuilder().setStdin(r.getStdin()).setStdout(r.getStdout()).setStderr(r.getStderr())
                        .setTerminal(r.getTerminal()))
                .setPid(init.pid).build());
        return CreateTaskResponse.newBuilder().setPid(init.pid).build();
    }

    private StartResponse start(StartRequest r) throws Exception {
        Proc p = proc(r.getId(), r.getExecId());
        synchronized (p) {
            if (p.state != State.CREATED) {
                throw new TaskFault(TaskFault.Kind.FAILED_PRECONDITION,
                        "process " + label(p) + " is " + p.state.name().toLowerCase() + ", not created");
            }
            AgentClient agent = sandbox().agent();
            // An exec's pipes exist only once it is started; whatever it writes before the
            // pumps read stays in them.
            int guestPid = agent.startProcess(id, p.execId);
            CompletableFuture<Void> out = Stdio.pumpOut(agent, id, p.execId, p.stdout, false);
            CompletableFuture<Void> err = p.terminal ? CompletableFuture.completedFuture(null)
                    : Stdio.pumpOut(agent, id, p.execId, p.stderr, true);
            Stdio.Input input = Stdio.pumpIn(agent, id, p.execId, p.stdin);
            if (!p.execId.isEmpty()) {
                p.pid = guestPid;
            }
            p.state = State.RUNNING;
            watchExit(agent, p, CompletableFuture.allOf(out, err), input);
        }
        if (p.execId.isEmpty()) {
            events.publish("/tasks/start", TaskStart.newBuilder().setContainerId(id).setPid(p.pid).build());
        } else {
            events.publish("/tasks/exec-started", TaskExecStarted.newBuilder().setContainerId(id)
                    .setExecId(p.execId).setPid(p.pid).build());
        }
        return StartResponse.newBuilder().setPid(p.pid).build();
    }

    /** Waits (on a virtual thread) for the process to exit and its output to drain, then reports it. */
    private void watchExit(AgentClient agent, Proc p, CompletableFuture<Void> output, Stdio.Input input) {
        Thread.ofVirtual().name("exit-" + id + "-" + p.execId).start(() -> {
            Exit exit;
            try {
                AgentClient.Exit e = agent.waitProcess(id, p.execId, null);
                exit = new Exit(e.status(), e.exitedAt());
            } catch (AgentException e) {
                LOG.log(Level.WARNING, "task {0}: lost process {1}: {2}", id, label(p), e.getMessage());
                exit = new Exit(255, Instant.now());
            }
            try {
                output.get(10, TimeUnit.SECONDS);
            } catch (InterruptedException | ExecutionException | TimeoutException e) {
                LOG.log(Level.DEBUG, "task {0}: output of {1} still open after exit", id, label(p));
            }
            input.cancel();
            p.state = State.STOPPED;
            p.exit.complete(exit);
            events.publish("/tasks/exit", TaskExit.newBuilder().setContainerId(id)
                    .setId(p.execId.isEmpty() ? id : p.execId).setPid(p.pid).setExitStatus(exit.status())
                    .setExitedAt(ts(exit.at())).build());
        });
    }

    private String label(Proc p) {
        return p.execId.isEmpty() ? id : id + "/" + p.execId;
    }

    private StateResponse state(StateRequest r) throws TaskFault {
        Proc p = proc(r.getId(), r.getExecId());
        StateResponse.Builder b = StateResponse.newBuilder().setId(r.getExecId().isEmpty() ? id : r.getExecId())
                .setBundle(bundle == null ? "" : bundle.toString()).setPid(p.pid)
                .setStdin(p.stdin).setStdout(p.stdout).setStderr(p.stderr).setTerminal(p.terminal)
                .setExecId(r.getExecId())
                .setStatus(switch (p.state) {
                    case CREATED -> Status.CREATED;
                    case RUNNING -> paused ? Status.PAUSED : Status.RUNNING;
                    case STOPPED -> Status.STOPPED;
                });
        Exit e = p.exit.getNow(null);
        if (e != null) {
            b.setExitStatus(e.status()).setExitedAt(ts(e.at()));
        }
        return b.build();
    }

    private WaitResponse waitFor(WaitRequest r) throws Exception {
        Proc p = proc(r.getId(), r.getExecId());
        Exit e = p.exit.get();
        return WaitResponse.newBuilder().setExitStatus(e.status()).setExitedAt(ts(e.at())).build();
    }

    private Empty kill(KillRequest r) throws Exception {
        Proc p = proc(r.getId(), r.getExecId());
        if (r.getSignal() < 1 || r.getSignal() > 64) {
            throw new TaskFault(TaskFault.Kind.INVALID_ARGUMENT, "signal " + r.getSignal() + " is outside 1..64");
        }
        if (p.state == State.CREATED && p.execId.isEmpty()) {
            // Killing a created task ends it without running: remove the container's init.
            throw new TaskFault(TaskFault.Kind.FAILED_PRECONDITION, "task " + id + " is not started");
        }
        if (p.state == State.STOPPED && !r.getAll()) {
            throw new TaskFault(TaskFault.Kind.NOT_FOUND, "process " + label(p) + " already finished");
        }
        sandbox().agent().signal(id, p.execId, r.getSignal(), r.getAll());
        return Empty.getDefaultInstance();
    }

    private DeleteResponse delete(String requestedId, String execId) throws Exception {
        Proc p = proc(requestedId, execId);
        if (p.state == State.RUNNING) {
            throw new TaskFault(TaskFault.Kind.FAILED_PRECONDITION, "process " + label(p) + " is still running");
        }
        Exit e = p.exit.getNow(new Exit(0, Instant.now()));
        if (execId.isEmpty()) {
            if (procs.values().stream().anyMatch(q -> q.state == State.RUNNING)) {
                throw new TaskFault(TaskFault.Kind.FAILED_PRECONDITION, "task " + id + " still has running execs");
            }
            Sandbox s = sandbox;
            if (s != null) {
                s.stop(STOP_GRACE);
            }
        } else {
            try {
                sandbox().agent().deleteProcess(id, execId);
            } catch (AgentException ignored) {
                // the process record in the guest is gone already
            }
        }
        procs.remove(execId);
        events.publish("/tasks/delete", TaskDelete.newBuilder().setContainerId(id).setPid(p.pid)
                .setExitStatus(e.status()).setExitedAt(ts(e.at())).setId(execId.isEmpty() ? id : execId).build());
        return DeleteResponse.newBuilder().setPid(p.pid).setExitStatus(e.status()).setExitedAt(ts(e.at())).build();
    }

    private Empty exec(ExecProcessRequest r) throws Exception {
        checkId(r.getId());
        if (r.getExecId().isEmpty()) {
            throw new TaskFault(TaskFault.Kind.INVALID_ARGUMENT, "exec_id is empty");
        }
        Stdio.check(r.getStdin(), r.getStdout(), r.getStderr());
        Proc init = proc(r.getId(), "");
        if (init.state != State.RUNNING) {
            throw new TaskFault(TaskFault.Kind.FAILED_PRECONDITION, "task " + id + " is not running");
        }
        io.rund.agent.v1.Process process = OciSpec.execProcess(r.getSpec().getValue().toByteArray()).toBuilder()
                .setTerminal(r.getTerminal()).build();
        Proc p = new Proc(r.getExecId(), r.getStdin(), r.getStdout(), r.getStderr(), r.getTerminal());
        if (procs.putIfAbsent(r.getExecId(), p) != null) {
            throw new TaskFault(TaskFault.Kind.ALREADY_EXISTS, "process " + r.getExecId() + " of task " + id);
        }
        try {
            sandbox().agent().execProcess(id, r.getExecId(), process);
        } catch (AgentException e) {
            procs.remove(r.getExecId());
            throw e;
        }
        events.publish("/tasks/exec-added", TaskExecAdded.newBuilder().setContainerId(id).setExecId(r.getExecId()).build());
        return Empty.getDefaultInstance();
    }

    private Empty resize(ResizePtyRequest r) throws Exception {
        Proc p = proc(r.getId(), r.getExecId());
        sandbox().agent().resizePty(id, p.execId, r.getHeight(), r.getWidth());
        return Empty.getDefaultInstance();
    }

    private Empty closeIO(CloseIORequest r) throws Exception {
        Proc p = proc(r.getId(), r.getExecId());
        if (r.getStdin() && p.stdin.isEmpty()) {
            sandbox().agent().closeStdin(id, p.execId);
        }
        // With a stdin fifo, the pump closes the process's stdin when containerd closes the fifo.
        return Empty.getDefaultInstance();
    }

    private PidsResponse pids(PidsRequest r) throws Exception {
        checkId(r.getId());
        PidsResponse.Builder b = PidsResponse.newBuilder();
        for (int pid : sandbox().agent().pids(id)) {
            b.addProcesses(ProcessInfo.newBuilder().setPid(pid));
        }
        return b.build();
    }

    private Empty pause(String requestedId, boolean pause) throws Exception {
        checkId(requestedId);
        if (pause) {
            sandbox().agent().pause(id);
            paused = true;
            events.publish("/tasks/paused", TaskPaused.newBuilder().setContainerId(id).build());
        } else {
            sandbox().agent().resume(id);
            paused = false;
            events.publish("/tasks/resumed", TaskResumed.newBuilder().setContainerId(id).build());
        }
        return Empty.getDefaultInstance();
    }

    private Empty update(UpdateTaskRequest r) throws Exception {
        checkId(r.getId());
        OciSpec.Resources res = OciSpec.resources(r.getResources().getValue().toByteArray());
        sandbox().agent().updateResources(io.rund.agent.v1.UpdateResourcesRequest.newBuilder().setContainerId(id)
                .setMemoryLimitBytes(res.memoryLimitBytes()).setCpuQuotaUsec(res.cpuQuotaMicros())
                .setCpuPeriodUsec(res.cpuPeriodMicros()).setPidsLimit(res.pidsLimit()).build());
        return Empty.getDefaultInstance();
    }

    private StatsResponse stats(StatsRequest r) throws Exception {
        checkId(r.getId());
        AgentClient.Stats s = sandbox().agent().stats(id);
        Metrics m = Metrics.newBuilder()
                .setCpu(CPUStat.newBuilder().setUsage(CPUUsage.newBuilder().setTotal(s.cpuUsageMicros() * 1000)
                        .setUser(s.cpuUserMicros() * 1000).setKernel(s.cpuSystemMicros() * 1000)))
                .setMemory(MemoryStat.newBuilder().setUsage(MemoryEntry.newBuilder().setUsage(s.memoryBytes())
                        .setLimit(s.memoryLimitBytes() > 0 ? s.memoryLimitBytes() : Long.MAX_VALUE)))
                .setPids(PidsStat.newBuilder().setCurrent(s.pids()).setLimit(s.pidsLimit()))
                .build();
        return StatsResponse.newBuilder().setStats(Any.newBuilder().setTypeUrl("io.containerd.cgroups.v1.Metrics")
                .setValue(m.toByteString())).build();
    }

    private ConnectResponse connect(ConnectRequest r) throws TaskFault {
        checkId(r.getId());
        Proc init = procs.get("");
        return ConnectResponse.newBuilder().setShimPid((int) ProcessHandle.current().pid())
                .setTaskPid(init == null ? 0 : init.pid).setVersion("rund 0.1.0").build();
    }

    private Empty shutdown(ShutdownRequest r) throws TaskFault {
        checkId(r.getId());
        if (!r.getNow() && procs.values().stream().anyMatch(p -> p.state == State.RUNNING)) {
            return Empty.getDefaultInstance(); // still serving a running task
        }
        // After the answer has gone out: close this task's endpoint.
        CompletableFuture.delayedExecutor(100, TimeUnit.MILLISECONDS).execute(this::close);
        return Empty.getDefaultInstance();
    }

    /** Stops the sandbox if it still runs and ends this endpoint. */
    void close() {
        Sandbox s = sandbox;
        if (s != null) {
            s.stop(STOP_GRACE);
        }
        events.close();
        onShutdown.run();
    }

    /** For the launcher's delete: the init's exit, or a kill's if it never said. */
    DeleteResponse forceDelete() {
        Proc p = procs.get("");
        Exit e = p == null ? new Exit(137, Instant.now()) : p.exit.getNow(new Exit(137, Instant.now()));
        close();
        return DeleteResponse.newBuilder().setPid(p == null ? 0 : p.pid).setExitStatus(e.status())
                .setExitedAt(ts(e.at())).build();
    }
}
