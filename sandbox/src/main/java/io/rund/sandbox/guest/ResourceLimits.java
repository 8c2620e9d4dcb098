package io.rund.sandbox.guest;

import java.util.List;

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
 * @param devices the device cgroup's rules in order, the last that matches deciding; empty:
 *     every device allowed (on update: unchanged)
 */
public record ResourceLimits(Long memoryLimit, Long memorySwap, Long memoryReservation, Long cpuShares, Long cpuQuota,
        Long cpuPeriod, String cpusetCpus, String cpusetMems, Long pidsLimit, List<DeviceRule> devices) {

    /**
     * One device rule: {@code allow} or deny {@code access} (some of "rwm") to devices of
     * {@code type} ("a", "b" or "c") with {@code major}:{@code minor} (null: any).
     */
    public record DeviceRule(boolean allow, String type, Long major, Long minor, String access) {
        public DeviceRule {
            type = type == null || type.isEmpty() ? "a" : type;
            access = access == null ? "" : access;
        }
    }

    /** Nothing set. */
    public static final ResourceLimits NONE = new ResourceLimits(null, null, null, null, null, null, null, null, null,
            List.of());

    public ResourceLimits {
        cpusetCpus = cpusetCpus == null ? "" : cpusetCpus;
        cpusetMems = cpusetMems == null ? "" : cpusetMems;
        devices = devices == null ? List.of() : List.copyOf(devices);
    }

    /** Only a memory limit and a pids limit (null: not set). */
    public static ResourceLimits memoryAndPids(Long memoryLimit, Long pidsLimit) {
        return new ResourceLimits(memoryLimit, null, null, null, null, null, null, null, pidsLimit, List.of());
    }

    /** The memory limit in bytes; 0 when there is none. */
    public long memoryLimitBytes() {
        return memoryLimit == null || memoryLimit < 0 ? 0 : memoryLimit;
    }

    /** The cpu period in microseconds; 100 ms, what cgroups default to, when it is not set. */
    public long periodMicros() {
        return cpuPeriod != null && cpuPeriod > 0 ? cpuPeriod : 100_000;
    }

    /** The cpu quota per 100 ms period; 0 for none. */
    public long quotaPer100ms() {
        return cpuQuota != null && cpuQuota > 0 ? cpuQuota * 100_000 / periodMicros() : 0;
    }
}
