package io.rund.sandbox.lifecycle;

import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ResourceLimits;

/**
 * How large a sandbox's VM is: vCPUs, RAM and its writable layer's disk. Each size is a
 * template of its own (a size class), built on first need, so a clone stays a clone at any
 * size and a sandbox of the default size costs what it always did (docs/ARCHITECTURE.md,
 * "VM sizes"); its guest knows its disk's size from the template, which is why the disk is
 * part of the size.
 *
 * <p>A VM holds what its containers are allowed: a memory limit of L bytes gets
 * L + G MiB (the guest kernel and agent: rund.toml's guest_memory_mib), rounded up to {@link #STEP_MIB};
 * a cpu quota of Q per period P gets ceil(Q / P) vCPUs, and a cpuset as many as its
 * highest CPU needs (the guest's CPUs are numbered as the host's, so the set means the same);
 * never less than the default size, never more vCPUs than the host has. A limit above what
 * the host can give is refused by name.
 */
public record VmSize(int vcpus, int memoryMiB, int diskMiB) {

    /**
     * This size with a writable layer of at least {@code mib} (0: as it is), rounded up to a
     * power of two: every layer size a pod may ask for is a template and an image on the node,
     * so there are 17 of them at most (16 MiB .. 1 TiB), not one per number a pod can write.
     */
    VmSize withDisk(int mib) {
        return mib <= 0 ? this : new VmSize(vcpus, memoryMiB, Math.max(16, Integer.highestOneBit(mib - 1) << 1));
    }

    /** Sizes are multiples of this, so that near limits share a template. */
    static final int STEP_MIB = 128;

    /**
     * The size for a sandbox whose containers are allowed {@code wanted} (a plain
     * container's own limits, or a pod's from CRI's sandbox annotations).
     *
     * @param guestMiB what the guest itself needs beside its containers: kernel, agent, page cache to run in
     * @param maxMemoryMiB the most this host gives one VM
     * @param hostCpus the host's CPUs, the most vCPUs one VM gets
     */
    static VmSize fit(ResourceLimits wanted, VmSize defaults, int guestMiB, int maxMemoryMiB, int hostCpus) throws SandboxException {
        int memory = defaults.memoryMiB;
        long limit = wanted.memoryLimitBytes();
        if (limit > 0) {
            long mib = (limit + (1 << 20) - 1 >> 20) + guestMiB;
            long stepped = (mib + STEP_MIB - 1) / STEP_MIB * STEP_MIB;
            if (stepped > maxMemoryMiB) {
                throw new SandboxException(Fault.INVALID_ARGUMENT, "memory limit " + limit + " needs a VM of " + stepped
                        + " MiB, more than the " + maxMemoryMiB + " MiB this host gives one VM", null);
            }
            memory = (int) Math.max(memory, stepped);
        }
        int cpus = defaults.vcpus;
        Long quota = wanted.cpuQuota();
        if (quota != null && quota > 0) {
            long period = wanted.periodMicros();
            cpus = (int) Math.max(cpus, Math.min(hostCpus, (quota + period - 1) / period));
        }
        int span = cpusetSpan(wanted.cpusetCpus());
        if (span > hostCpus) {
            throw new SandboxException(Fault.INVALID_ARGUMENT, "cpuset " + wanted.cpusetCpus() + " names a CPU this host "
                    + "does not have (it has " + hostCpus + ")", null);
        }
        cpus = Math.max(cpus, span);
        return new VmSize(cpus, memory, defaults.diskMiB);
    }

    /** One more than the highest CPU a cpuset list ("0-1,3" -> 4) names; 0 for none or one that does not parse. */
    static int cpusetSpan(String list) {
        if (list == null || list.isBlank()) {
            return 0;
        }
        int highest = -1;
        try {
            for (String part : list.split(",")) {
                String[] range = part.strip().split("-");
                int from = Integer.parseInt(range[0]);
                int to = range.length > 1 ? Integer.parseInt(range[1]) : from;
                if (to < from || from < 0 || range.length > 2) {
                    return 0;
                }
                highest = Math.max(highest, to);
            }
        } catch (NumberFormatException e) {
            return 0;
        }
        return highest + 1;
    }
}
