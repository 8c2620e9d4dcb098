package io.rund.sandbox.guest;

import io.rund.sandbox.agent.AgentException;
import java.util.List;
import java.util.Objects;

/**
 * One container in a sandbox's guest, as a sandbox hands it out ({@code Pod.container}):
 * its processes, its pids and stats, pause and resume, its limits.
 */
public final class ContainerHandle {

    private final GuestProcesses guest;
    private final String id;

    public ContainerHandle(GuestProcesses guest, String id) {
        this.guest = Objects.requireNonNull(guest, "guest");
        this.id = Objects.requireNonNull(id, "id");
    }

    public String id() {
        return id;
    }

    /** Its process {@code execId}; "" names its init process. */
    public GuestProcess process(String execId) {
        return new GuestProcess(guest, id, execId);
    }

    /** Creates process {@code execId} (not started) from {@code spec}. */
    public GuestProcess exec(String execId, ProcessSpec spec) throws AgentException {
        guest.execProcess(id, execId, spec);
        return process(execId);
    }

    /** The pids of its processes in the guest. */
    public List<Integer> pids() throws AgentException {
        return guest.pids(id);
    }

    public ContainerStats stats() throws AgentException {
        return guest.stats(id);
    }

    public void pause() throws AgentException {
        guest.pause(id);
    }

    public void resume() throws AgentException {
        guest.resume(id);
    }

    /** Changes its limits live; 0 leaves a value as it is. */
    public void update(ResourceLimits limits) throws AgentException {
        guest.updateResources(id, limits);
    }
}
