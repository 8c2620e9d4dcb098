package io.rund.shim.containerd;

import com.google.protobuf.Any;
import io.rund.containerd.cgroups.v1.CPUStat;
import io.rund.containerd.cgroups.v1.CPUUsage;
import io.rund.containerd.cgroups.v1.MemoryEntry;
import io.rund.containerd.cgroups.v1.MemoryStat;
import io.rund.containerd.cgroups.v1.Metrics;
import io.rund.containerd.cgroups.v1.PidsStat;
import io.rund.sandbox.guest.ContainerStats;

/**
 * A container's numbers from the guest as containerd's Stats answers them: cgroups v1
 * Metrics in an Any, CPU in nanoseconds, a memory limit of "none" as the largest value.
 */
final class ContainerMetrics {

    static final String TYPE_URL = "io.containerd.cgroups.v1.Metrics";

    private ContainerMetrics() {}

    static Any of(ContainerStats s) {
        Metrics m = Metrics.newBuilder()
                .setCpu(CPUStat.newBuilder().setUsage(CPUUsage.newBuilder().setTotal(s.cpuUsageMicros() * 1000)
                        .setUser(s.cpuUserMicros() * 1000).setKernel(s.cpuSystemMicros() * 1000)))
                .setMemory(MemoryStat.newBuilder().setUsage(MemoryEntry.newBuilder().setUsage(s.memoryBytes())
                        .setLimit(s.memoryLimitBytes() > 0 ? s.memoryLimitBytes() : Long.MAX_VALUE)))
                .setPids(PidsStat.newBuilder().setCurrent(s.pids()).setLimit(s.pidsLimit()))
                .build();
        return Any.newBuilder().setTypeUrl(TYPE_URL).setValue(m.toByteString()).build();
    }
}
