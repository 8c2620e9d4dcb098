package io.rund.sandbox.guest;

/**
 * A container's limits in the guest, in the OCI runtime spec's units. A null value is not
 * set: left as it is (at create, the kernel's default; on update, unchanged).
 *
 * @param memoryLimit bytes; -1 unlimited
 * @param memorySwap memory plus swap, bytes; -1 unlimited
 * @param memoryReservation bytes
 * @param cpuShares cgroup v1 shares (2..262144)
 * @param cpuQuota microseconds per period; -1 unlimited
 * @param cpuPeriod microseconds
 * @param cpusetCpus the kernel's list syntax ("0-1,3"); null or "" not set
 * @param cpusetMems likewise
 * @param pidsLimit -1 or 0 unlimited
 */
public record ResourceLimits(Long memoryLimit, Long memorySwap, Long memoryReservation, Long cpuShares, Long cpuQuota,
        Long cpuPeriod, String cpusetCpus, String cpusetMems, Long pidsLimit) {

    /** Nothing set. */
    public static final ResourceLimits NONE = new ResourceLimits(null, null, null, null, null, null, null, null, null);

    public ResourceLimits {
        cpusetCpus = cpusetCpus == null ? "" : cpusetCpus;
        cpusetMems = cpusetMems == null ? "" : cpusetMems;
    }

    /** Only a memory limit and a pids limit (null: not set). */
    public static ResourceLimits memoryAndPids(Long memoryLimit, Long pidsLimit) {
        return new ResourceLimits(memoryLimit, null, null, null, null, null, null, null, pidsLimit);
    }

    /** The memory limit in bytes; 0 when there is none. */
    public long memoryLimitBytes() {
        return memoryLimit == null || memoryLimit < 0 ? 0 : memoryLimit;
    }

    /** The cpu quota per 100 ms period (the period cgroups default to); 0 for none. */
    public long quotaPer100ms() {
        long period = cpuPeriod != null && cpuPeriod > 0 ? cpuPeriod : 100_000;
        return cpuQuota != null && cpuQuota > 0 ? cpuQuota * 100_000 / period : 0;
    }
}
