package io.rund.sandbox.guest;

import io.rund.sandbox.agent.AgentException;
import java.time.Duration;
import java.util.List;

/**
 * What can be done to a sandbox's containers and processes in the guest: the calls the
 * task adapter and the stdio pumps make. {@code AgentClient} does them over the agent's
 * ttrpc connection; a test can stand in for a guest with an implementation of its own.
 */
public interface GuestProcesses {

    /**
     * Blocks until a container of the sandbox is OOM-killed in the guest, or {@code timeout}
     * passes (null: for as long as the guest runs); that container's id.
     */
    String waitOom(Duration timeout) throws AgentException;

    /** Starts a created process; returns its pid in the guest. */
    int startProcess(String containerId, String execId) throws AgentException;

    void execProcess(String containerId, String execId, ProcessSpec process) throws AgentException;

    void signal(String containerId, String execId, int signal, boolean all) throws AgentException;

    /** Waits for the process's exit (null: no limit). */
    ProcessExit waitProcess(String containerId, String execId, Duration timeout) throws AgentException;

    void deleteProcess(String containerId, String execId) throws AgentException;

    int writeStdin(String containerId, String execId, byte[] data) throws AgentException;

    void closeStdin(String containerId, String execId) throws AgentException;

    StreamChunk readStdout(String containerId, String execId, int maxBytes, Duration timeout) throws AgentException;

    StreamChunk readStderr(String containerId, String execId, int maxBytes, Duration timeout) throws AgentException;

    /**
     * Reads stdout (or stderr) at stream offset {@code offset}: how much of it the caller has
     * passed on. What was answered is kept until a read at a later offset, so output a reader
     * took but never passed on (it died) is read again by the next.
     */
    StreamChunk readAt(boolean stderr, String containerId, String execId, long offset, int maxBytes, Duration timeout)
            throws AgentException;

    void resizePty(String containerId, String execId, int rows, int cols) throws AgentException;

    List<Integer> pids(String containerId) throws AgentException;

    ContainerStats stats(String containerId) throws AgentException;

    void pause(String containerId) throws AgentException;

    void resume(String containerId) throws AgentException;

    void updateResources(String containerId, ResourceLimits limits) throws AgentException;
}
