package io.rund.vm;

import java.nio.file.Path;
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

    /**
     * Every process of the VM on the host, the hypervisor first: with a jailed QEMU, also
     * its jailer, which waits for it. All are charged to the sandbox's cgroup.
     */
    default java.util.List<Long> processes() {
        return java.util.List.of(pid());
    }

    /** Completes with the hypervisor process's exit code when it has exited, however. */
    CompletableFuture<Integer> exited();

    /** Freezes every vCPU. */
    void pause() throws HypervisorException;

    /** Thaws the vCPUs. */
    void resume() throws HypervisorException;

    /**
     * Makes this VM a template: pauses it and writes its device state to {@code state};
     * its RAM, in the file it was launched with ({@link VmConfig.Ram#template}), is the
     * rest. The VM stays paused.
     */
    void saveTemplate(Path state) throws HypervisorException;

    /** Ends the VM: the hypervisor's own quit first, then kill after {@code grace}. */
    void stop(Duration grace);

    @Override
    void close();
}
