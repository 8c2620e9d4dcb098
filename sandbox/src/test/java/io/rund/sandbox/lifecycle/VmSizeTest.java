package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ResourceLimits;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** A VM holds what its containers are allowed, in size classes; never below the default, never beyond the host. */
@Tag("unit")
class VmSizeTest {

    private static final VmSize DEFAULT = new VmSize(1, 256, 256);

    private static ResourceLimits limits(Long memory, Long quota, Long period, String cpus) {
        return new ResourceLimits(memory, null, null, null, quota, period, cpus, null, null, java.util.List.of());
    }

    @Test
    void memoryLimitsGetTheGuestsShareOnTopRoundedToAClass() throws Exception {
        assertEquals(DEFAULT, VmSize.fit(ResourceLimits.NONE, DEFAULT, 64, 24 * 1024, 2), "nothing asked: the default");
        assertEquals(DEFAULT, VmSize.fit(limits(32L << 20, null, null, null), DEFAULT, 64, 24 * 1024, 2), "small: the default");
        assertEquals(new VmSize(1, 2176, 256), VmSize.fit(limits(2L << 30, null, null, null), DEFAULT, 64, 24 * 1024, 2),
                "2 GiB + 64 MiB for the guest, rounded up to 128 MiB");
        assertEquals(new VmSize(1, 256, 256), VmSize.fit(limits(-1L, null, null, null), DEFAULT, 64, 24 * 1024, 2), "-1: unlimited");
        assertEquals(new VmSize(1, 2304, 256), VmSize.fit(limits(2L << 30, null, null, null), DEFAULT, 200, 24 * 1024, 2),
                "a node that gives the guest 200 MiB: 2248, rounded up");
        SandboxException big = assertThrows(SandboxException.class,
                () -> VmSize.fit(limits(64L << 30, null, null, null), DEFAULT, 64, 24 * 1024, 2));
        assertEquals(Fault.INVALID_ARGUMENT, big.kind());
        assertTrue(big.getMessage().contains("68719476736"), big.getMessage());
    }

    @Test
    void cpuQuotasAndCpusetsGetVcpusUpToTheHosts() throws Exception {
        assertEquals(new VmSize(2, 256, 256), VmSize.fit(limits(null, 200_000L, 100_000L, null), DEFAULT, 64, 24 * 1024, 2));
        assertEquals(new VmSize(2, 256, 256), VmSize.fit(limits(null, 150_000L, null, null), DEFAULT, 64, 24 * 1024, 2),
                "1.5 CPUs need 2 vCPUs");
        assertEquals(new VmSize(2, 256, 256), VmSize.fit(limits(null, 800_000L, 100_000L, null), DEFAULT, 64, 24 * 1024, 2),
                "8 CPUs on a 2-CPU host: 2");
        assertEquals(new VmSize(2, 256, 256), VmSize.fit(limits(null, null, null, "1"), DEFAULT, 64, 24 * 1024, 2),
                "cpuset 1 needs CPU 1 to exist in the guest");
        assertEquals(4, VmSize.cpusetSpan("0-1,3"));
        assertEquals(0, VmSize.cpusetSpan("3-1"));
        SandboxException none = assertThrows(SandboxException.class,
                () -> VmSize.fit(limits(null, null, null, "0-7"), DEFAULT, 64, 24 * 1024, 2));
        assertTrue(none.getMessage().contains("0-7"), none.getMessage());
    }

    /** A pod's layer size is rounded up to a power of two: a bounded number of templates and images per node. */
    @Test
    void aLayerSizeIsAPowerOfTwo() {
        assertEquals(DEFAULT, DEFAULT.withDisk(0), "none asked: the default");
        assertEquals(64, DEFAULT.withDisk(64).diskMiB());
        assertEquals(512, DEFAULT.withDisk(300).diskMiB());
        assertEquals(16, DEFAULT.withDisk(16).diskMiB());
        assertEquals(1 << 20, DEFAULT.withDisk((1 << 19) + 1).diskMiB());
    }
}
