package io.rund.sandbox.lifecycle;

import io.rund.rootfs.ReadOnlyLayer;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.hypervisor.Vm;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A started sandbox: its VM with the agent connected and its container created. Stop
 * undoes the start in reverse order and may be called more than once.
 */
public final class Sandbox implements AutoCloseable {

    private final SandboxManager manager;
    private final String id;
    private final Path dir;
    private final Cgroup cgroup;
    private final ReadOnlyLayer readOnly;
    private final Vm vm;
    private final AgentClient agent;
    private final AtomicBoolean stopped = new AtomicBoolean();

    Sandbox(SandboxManager manager, String id, Path dir, Cgroup cgroup, ReadOnlyLayer readOnly, Vm vm,
            AgentClient agent) {
        this.manager = manager;
        this.id = id;
        this.dir = dir;
        this.cgroup = cgroup;
        this.readOnly = readOnly;
        this.vm = vm;
        this.agent = agent;
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

    public Vm vm() {
        return vm;
    }

    public Cgroup cgroup() {
        return cgroup;
    }

    /**
     * Stops the sandbox: the container is removed in the guest (best effort), the VM ends
     * (quit, then kill after {@code grace}), virtiofsd stops, the image is unmounted, the
     * cgroup goes back to the pool and the state directory is removed.
     */
    public void stop(Duration grace) {
        if (!stopped.compareAndSet(false, true)) {
            return;
        }
        try {
            agent.removeContainer(id);
        } catch (Exception e) {
            // The VM is about to go anyway; removing first only makes the guest's exit tidy.
        }
        agent.close();
        vm.stop(grace);
        readOnly.close();
        manager.release(id, dir, cgroup);
    }

    @Override
    public void close() {
        stop(Duration.ofSeconds(5));
    }
}
