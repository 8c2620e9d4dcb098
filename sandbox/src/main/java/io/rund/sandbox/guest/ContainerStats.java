package io.rund.sandbox.guest;

/** Resource use of a container's cgroup in the guest, and its limits (0: none). */
public record ContainerStats(long cpuUsageMicros, long cpuUserMicros, long cpuSystemMicros, long memoryBytes,
        long memoryLimitBytes, long pids, long pidsLimit, long oomKills) {}
