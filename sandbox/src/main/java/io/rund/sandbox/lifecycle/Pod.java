package io.rund.sandbox.lifecycle;

import io.rund.sandbox.guest.ContainerHandle;
import io.rund.sandbox.guest.GuestProcesses;
import java.nio.file.Path;
import java.time.Duration;

/**
 * A started sandbox as the task adapter sees it: its containers come and go, each reached
 * through a handle ({@link #container}), and it stops. {@link Sandbox} is the real one.
 */
public interface Pod {

    /** Its id: its first container's. */
    String id();

    /** Its state directory. */
    Path dir();

    /** The pid of its VM on the host (containerd reports it as every task's pid). */
    long vmPid();

    /**
     * Whether its VM still runs {@code within} from now: false once the VM has exited (it was
     * killed, or its guest panicked). Waits only while the VM runs.
     */
    boolean awaitVmRunning(Duration within);

    /** Completes when its VM has ended (stopped, killed, or its guest panicked). */
    java.util.concurrent.CompletionStage<?> vmEnded();

    /** Adds another container of the pod. */
    void addContainer(ContainerSpec spec) throws SandboxException;

    /** Removes a container that joined; the first goes only with the pod. */
    void removeContainer(String containerId) throws SandboxException;

    /**
     * Tells the pod, before {@code process} is exec'd in container {@code containerId}, what
     * its spec lets it do to the host (the owners it may give files to in host directories).
     */
    default void allowExec(String containerId, io.rund.sandbox.guest.ProcessSpec process) throws SandboxException {}

    /** The containers' processes in the guest, which the handles drive. */
    GuestProcesses processes();

    /** Container {@code containerId} of the pod, its first or one that joined. */
    default ContainerHandle container(String containerId) {
        return new ContainerHandle(processes(), containerId);
    }

    /** Stops it, giving its VM {@code grace} to quit; idempotent. */
    void stop(Duration grace);

    /** Starts pods: the sandbox manager, or a test's stand-in. */
    @FunctionalInterface
    interface Starter {
        Pod start(ContainerSpec spec) throws SandboxException;
    }
}
