package io.rund.shim.containerd;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.rund.sandbox.Fault;
import io.rund.sandbox.lifecycle.SandboxException;
import io.rund.shim.TaskFault;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.Status;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** Faults become containerd's codes in one place, by the fault alone, whichever exception carries it. */
@Tag("unit")
class StatusMapperTest {

    @Test
    void everyFaultHasTheCodeOfItsName() {
        for (Fault f : Fault.values()) {
            assertEquals(Code.valueOf(f.name()), StatusMapper.code(f), f.name());
        }
    }

    @Test
    void theSameFaultMapsTheSameFromTheTaskAdapterAndFromTheSandbox() {
        for (Fault f : Fault.values()) {
            Status task = StatusMapper.MAPPER.map(new TaskFault(f, "task says " + f));
            Status sandbox = StatusMapper.MAPPER.map(new SandboxException(f, "sandbox says " + f, null));
            assertEquals(Code.valueOf(f.name()), task.code(), f.name());
            assertEquals(task.code(), sandbox.code(), f.name());
            assertEquals("sandbox says " + f, sandbox.message());
        }
    }
}
