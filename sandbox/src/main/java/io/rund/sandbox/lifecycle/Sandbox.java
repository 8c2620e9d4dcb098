package io.rund.sandbox.lifecycle;

import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.StoreException;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.guest.GuestProcesses;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.id.Ids;
import io.rund.sandbox.network.PodNetwork;
import io.rund.vm.Vm;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A started sandbox: its VM with the agent connected and its containers: the first, whose
 * id the sandbox has, and any that joined later (the other containers of a pod). Stop
 * undoes the start in reverse order and may be called more than once.
 *
 * <p>Threads: any; adding and removing containers may run concurrently with each other
 * and with the agent's other calls.
 */
public final class Sandbox implements Pod, AutoCloseable {

    private static final System.Logger LOG = System.getLogger(Sandbox.class.getName());

    private final String id;
    private final Path dir;
    private final Cgroup cgroup;
    private final ReadOnlyLayer readOnly;
    private final HostDirShare hostDirs;
    private final Vm vm;
    private final AgentClient agent;
    private final String boot;
    private final PodNetwork network;
    /** The releases its start pushed, one per resource acquired: what stop runs. */
    private final Teardown teardown;
    private final AtomicBoolean stopped = new AtomicBoolean();
    /** Container id → its image's directory on the share. */
    private final Map<String, String> images = new ConcurrentHashMap<>();
    /** Where the host-directory share holds each container's host directories (the first's go with the share). */
    private final Map<String, List<String>> dirs = new ConcurrentHashMap<>();
    /** What the state file says, rewritten as containers come and go (a restarted daemon adopts by it). */
    private SandboxState state;

    /**
     * A sandbox whose resources are held and whose containers are those {@code state} lists
     * (its first, at a start; all it had, when a restarted daemon adopts it).
     */
    Sandbox(String id, Path dir, Cgroup cgroup, ReadOnlyLayer readOnly, HostDirShare hostDirs, Vm vm, AgentClient agent,
            SandboxState state, PodNetwork network, Teardown teardown) {
        this.id = id;
        this.dir = dir;
        this.cgroup = cgroup;
        this.readOnly = readOnly;
        this.hostDirs = hostDirs;
        this.vm = vm;
        this.agent = agent;
        this.boot = state.boot();
        this.network = network;
        this.teardown = teardown;
        this.state = state;
        state.containers().forEach((cid, attached) -> {
            images.put(cid, attached.image());
            dirs.put(cid, attached.dirs());
        });
        watch();
    }

    /**
     * How often the agent is asked whether it lives, how long it has to answer, and how many
     * missed answers in a row fail the sandbox: ~2 minutes of silence, which a guest starved
     * by dozens of TCG VMs starting on two cores does not come near. Rare on purpose: each
     * check wakes an idle guest, its QEMU and the daemon, and a node holds thousands of idle
     * sandboxes. A VM that dies or panics is seen at once by its exit; only a guest that
     * hangs alive waits for these.
     */
    static final Duration HEALTH_EVERY = Duration.ofSeconds(30);
    static final Duration HEALTH_TIMEOUT = Duration.ofSeconds(10);
    static final int HEALTH_MISSES = 3;

    /**
     * Fails the sandbox (kills its VM, so its processes end as killed) when it can no longer
     * serve: a helper died while the VM runs (the guest's file requests would wait for ever),
     * or the agent has not answered {@link #HEALTH_MISSES} health checks in a row (a hung
     * guest). A VM that ended by itself (killed, or its guest panicked: panic=-1 and
     * -no-reboot end QEMU) needs nothing here: its processes' waits fail and report 137.
     */
    private void watch() {
        for (var helper : List.of(readOnly.helper(), hostDirs.helper())) {
            helper.process().onExit().thenRun(() -> fail(helper + " exited while the VM ran"));
        }
        Thread.ofVirtual().name("health-" + id).start(() -> {
            int missed = 0;
            while (!stopped.get() && !vm.exited().isDone()) {
                try {
                    Thread.sleep(HEALTH_EVERY);
                    agent.health(HEALTH_TIMEOUT);
                    missed = 0;
                } catch (InterruptedException e) {
                    return;
                } catch (AgentException e) {
                    if (stopped.get() || vm.exited().isDone()) {
                        return;
                    }
                    missed++;
                    LOG.log(Level.WARNING, "sandbox={0}: agent missed health check {1} of {2}: {3}", id, missed,
                            HEALTH_MISSES, e.getMessage());
                    if (missed >= HEALTH_MISSES) {
                        fail("its agent did not answer " + missed + " health checks");
                        return;
                    }
                }
            }
        });
    }

    /** Kills the VM of a sandbox that cannot serve any more; its stop (containerd's delete) cleans the rest. */
    private void fail(String why) {
        if (stopped.get() || vm.exited().isDone()) {
            return;
        }
        LOG.log(Level.WARNING, "sandbox={0}: failed: {1}; killing its VM", id, why);
        vm.close();
    }

    /** Rewrites the state file with the containers as they are now; a failure is logged (only an adoption would miss it). */
    private synchronized void saveContainers() {
        Map<String, SandboxState.Attached> now = new java.util.HashMap<>();
        images.forEach((cid, image) -> {
            if (!image.isEmpty()) {
                now.put(cid, new SandboxState.Attached(image, dirs.getOrDefault(cid, List.of())));
            }
        });
        state = state.withContainers(now);
        try {
            state.write(dir);
        } catch (java.io.IOException e) {
            LOG.log(Level.WARNING, "sandbox={0}: write its state: {1}", id, e.getMessage());
        }
    }

    /**
     * Creates another container in this sandbox: its image goes on the share, its writes to
     * its own directory of the sandbox's disk, which the guest deletes when it is removed.
     */
    public void addContainer(ContainerSpec spec) throws SandboxException {
        String cid = spec.id();
        if (!Ids.isValid(cid)) {
            throw new SandboxException(Fault.INVALID_ARGUMENT, "container id " + cid + " must be " + Ids.RULE, null);
        }
        if (stopped.get()) {
            throw new SandboxException(Fault.FAILED_PRECONDITION, "sandbox=" + id + " is stopped", null);
        }
        List<Path> lowers;
        try {
            lowers = ReadOnlyLayer.lowerDirs(cid, spec.rootfs()); // containerd's input, checked before anything is made
        } catch (StoreException e) {
            throw new SandboxException(Fault.INVALID_ARGUMENT, "sandbox=" + id + ": " + e.getMessage(), e);
        }
        if (images.putIfAbsent(cid, "") != null) {
            throw new SandboxException(Fault.ALREADY_EXISTS, "container " + cid + " in sandbox=" + id, null);
        }
        String image = null;
        boolean created = false;
        try {
            image = readOnly.add(cid, lowers);
            images.put(cid, image);
            List<String> attached = HostDirs.attach(hostDirs, spec);
            dirs.put(cid, attached);
            agent.createContainer(ContainerRequests.of(spec, image, image, id, attached));
            created = true;
            FaultPoints.at("container.add");
            saveContainers();
        } catch (StoreException | AgentException | SandboxException e) {
            // Whatever was made goes, newest first.
            if (created) {
                try {
                    agent.removeContainer(cid);
                } catch (AgentException gone) {
                    LOG.log(Level.WARNING, "sandbox={0}: remove container {1} after a failed add: {2}", id, cid,
                            gone.getMessage());
                }
            }
            HostDirs.detach(hostDirs, dirs.getOrDefault(cid, List.of()));
            dirs.remove(cid);
            if (image != null) {
                readOnly.remove(image);
            }
            images.remove(cid);
            throw switch (e) {
                // The guest's own verdict: an agent INVALID_ARGUMENT is one for containerd too.
                case AgentException a -> new SandboxException(a.kind(), "sandbox=" + id + ": create container " + cid + ": "
                        + a.getMessage(), a);
                case SandboxException x -> x;
                default -> new SandboxException(Fault.INTERNAL, "sandbox=" + id + ": " + e.getMessage(), e);
            };
        }
    }

    @Override
    public void allowExec(String cid, ProcessSpec process) throws SandboxException {
        if (dirs.getOrDefault(cid, List.of()).isEmpty()) {
            return;
        }
        try {
            HostDirs.allowOwners(hostDirs, process);
        } catch (StoreException e) {
            throw new SandboxException(Fault.INTERNAL, "sandbox=" + id + ": exec in " + cid + ": " + e.getMessage(), e);
        }
    }

    /**
     * Removes a container that joined the sandbox: its processes are killed, its writes
     * deleted, its image unmounted. The first container goes only with the sandbox.
     */
    public void removeContainer(String cid) throws SandboxException {
        if (cid.equals(id)) {
            throw new SandboxException(Fault.INVALID_ARGUMENT,
                    "container " + cid + " is sandbox=" + id + "'s first: it goes when the sandbox stops", null);
        }
        String image = images.get(cid);
        if (image == null) {
            throw new SandboxException(Fault.NOT_FOUND, "container " + cid + " in sandbox=" + id, null);
        }
        try {
            agent.removeContainer(cid);
        } catch (AgentException e) {
            if (e.kind() != Fault.NOT_FOUND) {
                throw new SandboxException(e.kind(), "sandbox=" + id + ": remove container " + cid + ": " + e.getMessage(), e);
            }
        }
        FaultPoints.at("container.remove");
        images.remove(cid);
        readOnly.remove(image);
        HostDirs.detach(hostDirs, dirs.getOrDefault(cid, List.of()));
        dirs.remove(cid);
        saveContainers();
    }

    /** The ids of the sandbox's containers, the first included. */
    public Set<String> containers() {
        return Set.copyOf(images.keySet());
    }

    public String id() {
        return id;
    }

    public Path dir() {
        return dir;
    }

    public AgentClient agent() {
        return agent;
    }

    /** How the VM started: "cold", or "clone " and the template's key. */
    public String boot() {
        return boot;
    }

    @Override
    public long vmPid() {
        return vm.pid();
    }

    @Override
    public java.util.concurrent.CompletionStage<?> vmEnded() {
        return vm.exited();
    }

    @Override
    public boolean awaitVmRunning(Duration within) {
        try {
            vm.exited().get(within.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
            return false;
        } catch (java.util.concurrent.TimeoutException e) {
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return !vm.exited().isDone();
        } catch (java.util.concurrent.ExecutionException e) {
            return false;
        }
    }

    @Override
    public GuestProcesses processes() {
        return agent;
    }

    public Vm vm() {
        return vm;
    }

    public Cgroup cgroup() {
        return cgroup;
    }

    /** The pod network the VM is connected to; null for none. */
    public PodNetwork network() {
        return network;
    }

    /**
     * Stops the sandbox: the containers are removed in the guest (best effort), the VM ends
     * (quit, then kill after {@code grace}; its tap goes with it), then what its start
     * acquired is released in reverse ({@link Teardown}): the agent connection, the pod
     * interface's redirect, the VM, the helper and the share with its images, the cgroup
     * (back to the pool, killing what is left in it), the state directory.
     */
    public void stop(Duration grace) {
        if (!stopped.compareAndSet(false, true)) {
            return;
        }
        for (String cid : images.keySet()) {
            try {
                agent.removeContainer(cid);
            } catch (Exception e) {
                // The VM is about to go anyway; removing first only makes the guest's exit tidy.
            }
        }
        vm.stop(grace); // the guest's exit, given its grace; the VM's own release below finds it gone
        try {
            FaultPoints.at("stop");
        } catch (SandboxException e) {
            LOG.log(Level.WARNING, "sandbox={0}: {1}; releasing the rest", id, e.getMessage()); // a stop goes on
        }
        teardown.run();
        LOG.log(Level.INFO, "sandbox={0}: stopped", id);
    }

    @Override
    public void close() {
        stop(Duration.ofSeconds(5));
    }
}
