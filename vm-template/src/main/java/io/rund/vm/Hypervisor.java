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
     * The identity of the directory of the VM {@code process} runs, if it provably is one of
     * this hypervisor's: its own binary, started in that directory (as {@link VmConfig#dir}
     * gave it), which stays its working directory. The identity is the directory's device and
     * inode ({@link #dirKey}), which outlive a rename (a spare taken by a sandbox) and hold
     * in any mount namespace (a jailed VM sees its directory at its old name, in a root of its
     * own). Recovery kills only such processes, never one whose command line merely mentions
     * a path.
     */
    java.util.Optional<Object> vmDirKey(ProcessHandle process);

    /** Whether {@code process} is this hypervisor's VM of directory {@code dir}. */
    default boolean isVmOf(ProcessHandle process, java.nio.file.Path dir) {
        java.util.Optional<Object> key = vmDirKey(process);
        return key.isPresent() && key.equals(dirKey(dir));
    }

    /** The directory among {@code dirs} (by {@link #dirsByKey}) that {@code process} is this hypervisor's VM of. */
    default java.util.Optional<java.nio.file.Path> vmDirOf(ProcessHandle process,
            java.util.Map<Object, java.nio.file.Path> dirs) {
        return vmDirKey(process).map(dirs::get);
    }

    /** The identity of directory {@code dir} (device and inode); empty when it is gone. */
    static java.util.Optional<Object> dirKey(java.nio.file.Path dir) {
        try {
            return java.util.Optional.ofNullable(java.nio.file.Files.readAttributes(dir,
                    java.nio.file.attribute.BasicFileAttributes.class).fileKey());
        } catch (java.io.IOException e) {
            return java.util.Optional.empty();
        }
    }

    /** {@code dirs} by identity, for {@link #vmDirOf}. */
    static java.util.Map<Object, java.nio.file.Path> dirsByKey(java.util.Collection<java.nio.file.Path> dirs) {
        java.util.Map<Object, java.nio.file.Path> byKey = new java.util.HashMap<>();
        for (java.nio.file.Path d : dirs) {
            dirKey(d).ifPresent(k -> byKey.put(k, d));
        }
        return byKey;
    }

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
