package io.rund.sandbox.lifecycle;

import io.rund.sandbox.agent.GuestProcesses;
import java.nio.file.Path;
import java.time.Duration;

/**
 * A started sandbox as the task adapter sees it: its containers come and go, its processes
 * are reached through {@link #processes}, and it stops. {@link Sandbox} is the real one.
 */
public interface Pod {

    /** Its id: its first container's. */
    String id();

    /** Its state directory. */
    Path dir();

    /** The pid of its VM on the host (containerd reports it as every task's pid). */
    long vmPid();

    /** Adds another container of the pod. */
    void addContainer(ContainerSpec spec) throws SandboxException;

    /** Removes a container that joined; the first goes only with the pod. */
    void removeContainer(String containerId) throws SandboxException;

    /** The containers' processes in the guest. */
    GuestProcesses processes();

    /** Stops it, giving its VM {@code grace} to quit; idempotent. */
    void stop(Duration grace);

    /** Starts pods: the sandbox manager, or a test's stand-in. */
    @FunctionalInterface
    interface Starter {
        Pod start(ContainerSpec spec) throws SandboxException;
    }
}
