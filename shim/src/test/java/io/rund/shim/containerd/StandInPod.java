package io.rund.shim.containerd;

import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.guest.ContainerStats;
import io.rund.sandbox.guest.GuestProcesses;
import io.rund.sandbox.guest.StreamChunk;
import io.rund.sandbox.guest.ProcessExit;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.sandbox.lifecycle.Pod;
import io.rund.sandbox.lifecycle.SandboxException;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A stand-in for a pod's sandbox, in memory: no VM, no guest, no root. Its processes start
 * when told, exit with 128 + the signal when signalled (or with what a test says), write
 * nothing, and read stdin into nothing. It lets the task adapter be tested alone; what it
 * does is what a guest must do, and the real-component suites check that a guest does it.
 */
final class StandInPod implements Pod, GuestProcesses {

    static final long VM_PID = 4242;

    private final String id;
    private final Path dir;
    private final AtomicInteger nextPid = new AtomicInteger(100);
    /** "cid/eid" -> the process's exit. */
    private final Map<String, CompletableFuture<ProcessExit>> exits = new ConcurrentHashMap<>();
    private final Map<String, Integer> pids = new ConcurrentHashMap<>();
    final List<String> containers = new ArrayList<>();
    volatile boolean stopped;
    /** What the stand-in guest answers the next create with (null: it accepts it). */
    volatile AgentException refuseNextCreate;

    StandInPod(String id, Path dir) {
        this.id = id;
        this.dir = dir;
    }

    /** The starter a task adapter gets: the first container makes this pod. */
    Starter starter() {
        return spec -> {
            create(spec);
            return this;
        };
    }

    private void create(ContainerSpec spec) throws SandboxException {
        AgentException refused = refuseNextCreate;
        refuseNextCreate = null;
        if (refused != null) {
            throw new SandboxException(refused.kind(), "stand-in guest: " + refused.getMessage(), refused);
        }
        synchronized (containers) {
            containers.add(spec.id());
        }
        exits.put(key(spec.id(), ""), new CompletableFuture<>());
    }

    private static String key(String cid, String eid) {
        return cid + "/" + eid;
    }

    private CompletableFuture<ProcessExit> exit(String cid, String eid) throws AgentException {
        CompletableFuture<ProcessExit> f = exits.get(key(cid, eid));
        if (f == null) {
            throw new AgentException(Fault.NOT_FOUND, "no process " + key(cid, eid), null);
        }
        return f;
    }

    /** Makes a process exit with {@code status}, as the guest would report it. */
    void exit(String cid, String eid, int status) throws AgentException {
        exit(cid, eid).complete(new ProcessExit(status, Instant.now()));
    }

    @Override
    public String id() {
        return id;
    }

    @Override
    public Path dir() {
        return dir;
    }

    @Override
    public long vmPid() {
        return VM_PID;
    }

    @Override
    public boolean awaitVmRunning(Duration within) {
        return !stopped;
    }

    private final java.util.concurrent.CompletableFuture<Integer> ended = new java.util.concurrent.CompletableFuture<>();

    @Override
    public java.util.concurrent.CompletionStage<?> vmEnded() {
        return ended;
    }

    @Override
    public void addContainer(ContainerSpec spec) throws SandboxException {
        create(spec);
    }

    @Override
    public void removeContainer(String containerId) {
        synchronized (containers) {
            containers.remove(containerId);
        }
    }

    @Override
    public GuestProcesses processes() {
        return this;
    }

    @Override
    public void stop(Duration grace) {
        stopped = true;
        ended.complete(0);
    }

    /** Containers the stand-in guest says were OOM-killed, in order (a test adds them). */
    final java.util.concurrent.BlockingQueue<String> ooms = new java.util.concurrent.LinkedBlockingQueue<>();

    @Override
    public String waitOom(Duration timeout) throws AgentException {
        long end = timeout == null ? Long.MAX_VALUE : System.nanoTime() + timeout.toNanos();
        try {
            while (!stopped && System.nanoTime() < end) {
                String cid = ooms.poll(50, TimeUnit.MILLISECONDS);
                if (cid != null) {
                    return cid;
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        throw new AgentException(stopped ? Fault.UNAVAILABLE : Fault.DEADLINE_EXCEEDED, "no OOM", null);
    }

    @Override
    public int startProcess(String containerId, String execId) throws AgentException {
        exit(containerId, execId);
        return pids.computeIfAbsent(key(containerId, execId), k -> nextPid.getAndIncrement());
    }

    @Override
    public void execProcess(String containerId, String execId, ProcessSpec process) throws AgentException {
        if (exits.putIfAbsent(key(containerId, execId), new CompletableFuture<>()) != null) {
            throw new AgentException(Fault.ALREADY_EXISTS, "exec " + execId, null);
        }
    }

    @Override
    public void signal(String containerId, String execId, int signal, boolean all) throws AgentException {
        exit(containerId, execId).complete(new ProcessExit(128 + signal, Instant.now()));
    }

    @Override
    public ProcessExit waitProcess(String containerId, String execId, Duration timeout) throws AgentException {
        try {
            return exit(containerId, execId).get(timeout == null ? 60 : timeout.toSeconds(), TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new AgentException(Fault.DEADLINE_EXCEEDED, "wait " + key(containerId, execId), e);
        }
    }

    @Override
    public void deleteProcess(String containerId, String execId) {
        exits.remove(key(containerId, execId));
    }

    @Override
    public int writeStdin(String containerId, String execId, byte[] data) {
        stdin.computeIfAbsent(key(containerId, execId), k -> new java.io.ByteArrayOutputStream()).writeBytes(data);
        return data.length;
    }

    @Override
    public void closeStdin(String containerId, String execId) {
        stdinClosed.computeIfAbsent(key(containerId, execId), k -> new CompletableFuture<>()).complete(null);
    }

    /** What each process got on its stdin, and when its stdin was closed (its EOF). */
    final Map<String, java.io.ByteArrayOutputStream> stdin = new ConcurrentHashMap<>();
    final Map<String, CompletableFuture<Void>> stdinClosed = new ConcurrentHashMap<>();

    @Override
    public StreamChunk readStdout(String containerId, String execId, int maxBytes, Duration timeout) {
        return new StreamChunk(new byte[0], true);
    }

    @Override
    public StreamChunk readStderr(String containerId, String execId, int maxBytes, Duration timeout) {
        return new StreamChunk(new byte[0], true);
    }

    @Override
    public StreamChunk readAt(boolean stderr, String containerId, String execId, long offset, int maxBytes, Duration timeout) {
        return new StreamChunk(new byte[0], true);
    }

    @Override
    public void resizePty(String containerId, String execId, int rows, int cols) {}

    @Override
    public List<Integer> pids(String containerId) {
        return List.copyOf(pids.values());
    }

    @Override
    public ContainerStats stats(String containerId) {
        return new ContainerStats(1000, 600, 400, 1 << 20, 0, 1, 0, 0);
    }

    @Override
    public void pause(String containerId) {}

    @Override
    public void resume(String containerId) {}

    @Override
    public void updateResources(String containerId, ResourceLimits limits) {}
}
