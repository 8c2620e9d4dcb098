package io.rund.sandbox.guest;

import io.rund.sandbox.agent.AgentException;
import java.time.Duration;

/** One process of a container in the guest: start it, feed and drain it, signal it, wait for it. */
public final class GuestProcess {

    private final GuestProcesses guest;
    private final String containerId;
    private final String execId;

    GuestProcess(GuestProcesses guest, String containerId, String execId) {
        this.guest = guest;
        this.containerId = containerId;
        this.execId = execId;
    }

    /** "container" for an init process, "container/exec" for an exec: how logs and threads name it. */
    public String name() {
        return execId.isEmpty() ? containerId : containerId + "/" + execId;
    }

    public String execId() {
        return execId;
    }

    /** Starts it; returns its pid in the guest. */
    public int start() throws AgentException {
        return guest.startProcess(containerId, execId);
    }

    /** Sends {@code signal}; with {@code all}, to every process of the container. */
    public void signal(int signal, boolean all) throws AgentException {
        guest.signal(containerId, execId, signal, all);
    }

    /** Blocks until it exits (no limit). */
    public ProcessExit await() throws AgentException {
        return guest.waitProcess(containerId, execId, null);
    }

    /** Forgets an exited exec in the guest. */
    public void delete() throws AgentException {
        guest.deleteProcess(containerId, execId);
    }

    /** Writes to its stdin; returns how many bytes the guest took. */
    public int writeStdin(byte[] data) throws AgentException {
        return guest.writeStdin(containerId, execId, data);
    }

    public void closeStdin() throws AgentException {
        guest.closeStdin(containerId, execId);
    }

    /** Blocks until stdout (or stderr) has bytes or ended; null waits for ever. */
    public StreamChunk read(boolean stderr, int maxBytes, Duration timeout) throws AgentException {
        return stderr ? guest.readStderr(containerId, execId, maxBytes, timeout)
                : guest.readStdout(containerId, execId, maxBytes, timeout);
    }

    /**
     * Like {@link #read}, at stream offset {@code offset} (what the caller has passed on):
     * what a reader never passed on is read again by the next (see {@link GuestProcesses#readAt}).
     */
    public StreamChunk readAt(boolean stderr, long offset, int maxBytes, Duration timeout) throws AgentException {
        return guest.readAt(stderr, containerId, execId, offset, maxBytes, timeout);
    }

    public void resizePty(int rows, int cols) throws AgentException {
        guest.resizePty(containerId, execId, rows, cols);
    }
}
