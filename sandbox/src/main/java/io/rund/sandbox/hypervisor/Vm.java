package io.rund.sandbox.hypervisor;

import java.time.Duration;
import java.util.concurrent.CompletableFuture;

/**
 * A running VM. Lifecycle: launched by {@link Hypervisor#launch}; {@link #stop} asks the
 * hypervisor to end it and kills it when that takes longer than the grace period;
 * {@link #close} kills at once. Both are idempotent.
 */
public interface Vm extends AutoCloseable {

    /** The hypervisor process's pid on the host (for cgroups and state files). */
    long pid();

    /** Completes with the hypervisor process's exit code when it has exited, however. */
    CompletableFuture<Integer> exited();

    /** Freezes every vCPU. */
    void pause() throws HypervisorException;

    /** Thaws the vCPUs. */
    void resume() throws HypervisorException;

    /** Ends the VM: the hypervisor's own quit first, then kill after {@code grace}. */
    void stop(Duration grace);

    @Override
    void close();
}
