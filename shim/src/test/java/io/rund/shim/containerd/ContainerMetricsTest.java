package io.rund.shim.containerd;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.protobuf.Any;
import io.rund.containerd.cgroups.v1.Metrics;
import io.rund.sandbox.guest.ContainerStats;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** The guest's numbers become the cgroups v1 Metrics containerd's ctr and the kubelet read. */
@Tag("unit")
class ContainerMetricsTest {

    @Test
    void cpuIsInNanosecondsAndNoLimitIsTheLargestValue() throws Exception {
        Any any = ContainerMetrics.of(new ContainerStats(1500, 1000, 500, 4096, 0, 3, 512, 0));
        assertEquals("io.containerd.cgroups.v1.Metrics", any.getTypeUrl());
        Metrics m = Metrics.parseFrom(any.getValue());
        assertEquals(1_500_000, m.getCpu().getUsage().getTotal());
        assertEquals(1_000_000, m.getCpu().getUsage().getUser());
        assertEquals(500_000, m.getCpu().getUsage().getKernel());
        assertEquals(4096, m.getMemory().getUsage().getUsage());
        assertEquals(Long.MAX_VALUE, m.getMemory().getUsage().getLimit(), "no memory limit");
        assertEquals(3, m.getPids().getCurrent());
        assertEquals(512, m.getPids().getLimit());
        Metrics limited = Metrics.parseFrom(ContainerMetrics.of(new ContainerStats(0, 0, 0, 1, 1 << 20, 1, 0, 0)).getValue());
        assertEquals(1 << 20, limited.getMemory().getUsage().getLimit());
    }
}
