package io.rund.vm;

/**
 * Runs VMs. The only type the rest of rund sees of QEMU: another VMM (cloud-hypervisor,
 * Firecracker, Dragonball) is another implementation of this interface.
 */
public interface Hypervisor {

    /** e.g. "qemu". */
    String name();

    /** How this hypervisor runs guests on this host, and why. */
    Accelerator accelerator();

    /**
     * Starts a VM and returns once the hypervisor answers on its control channel (the guest
     * may still be booting). On failure nothing is left running.
     */
    Vm launch(VmConfig config) throws HypervisorException;

    /**
     * Starts a clone ({@link VmConfig.Ram#isClone}) with the template's state loaded and
     * its vCPUs stopped: {@link Vm#resume} runs it. What {@link #launch} does in one step,
     * split so that the slow half can happen before anybody waits for the VM.
     */
    Vm launchPaused(VmConfig config) throws HypervisorException;

    /**
     * What makes the machine a VM of {@code config} gets, as this hypervisor would start it,
     * without what names one VM (its directory, files, sockets, descriptors, tap, uid): a
     * template is keyed by it, so any change to the machine's command line is a new template.
     */
    String machine(VmConfig config);

    /**
     * The directory of the VM {@code process} runs, if it provably is one of this
     * hypervisor's: its own binary, with its control socket in that directory (as
     * {@link VmConfig#dir} gave it). Recovery kills only such processes, never one whose
     * command line merely mentions a path.
     */
    java.util.Optional<java.nio.file.Path> vmDirOf(ProcessHandle process);

    /**
     * Takes over the running VM {@code process} of directory {@code dir}, which a previous
     * daemon launched (it is no child of ours): its control channel is connected again. Its
     * console and messages, which went to the previous daemon, are not logged any more.
     *
     * @param uid its uid, which the caller has reserved ({@link VmJail#reserve}); -1 unjailed
     * @throws HypervisorException when the process is not this hypervisor's VM of {@code dir},
     *     or does not answer
     */
    Vm adopt(String id, java.nio.file.Path dir, ProcessHandle process, int uid) throws HypervisorException;

    /**
     * How this hypervisor's VMs are confined (their uids, and the jail that also starts their
     * helpers), or null where VMs run as the daemon's user, which only tests of a VM alone do.
     */
    default VmJail jail() {
        return null;
    }

    /**
     * Lets every VM read {@code p}, a file or directory of the template store (clones map
     * a template's RAM and load its state). Nothing to do where VMs run as the daemon's user.
     */
    default void grantVmRead(java.nio.file.Path p) throws java.io.IOException {}
}
