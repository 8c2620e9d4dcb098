package io.rund.shim.containerd;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.rund.sandbox.Fault;
import io.rund.sandbox.lifecycle.SandboxException;
import io.rund.shim.TaskFault;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.Status;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Faults become containerd's codes in one place, by the fault alone, whichever exception carries
 * it: each the code of its name, but NOT_RUN, which is ABORTED (the relay's word for "send it to
 * the next daemon"; containerd never sees it).
 */
@Tag("unit")
class StatusMapperTest {

    private static Code expected(Fault f) {
        return f == Fault.NOT_RUN ? Code.ABORTED : Code.valueOf(f.name());
    }

    @Test
    void everyFaultHasTheCodeOfItsName() {
        for (Fault f : Fault.values()) {
            assertEquals(expected(f), StatusMapper.code(f), f.name());
        }
    }

    @Test
    void anAbortedAnswerOfAnotherPeerIsNotTheRelaysWord() {
        Status s = StatusMapper.MAPPER.map(new io.rund.ttrpc.TtrpcException(Code.ABORTED, "containerd aborted"));
        assertEquals(Code.INTERNAL, s.code(), "passed on as ABORTED, the relay would send a call that ran again");
    }

    @Test
    void theSameFaultMapsTheSameFromTheTaskAdapterAndFromTheSandbox() {
        for (Fault f : Fault.values()) {
            Status task = StatusMapper.MAPPER.map(new TaskFault(f, "task says " + f));
            Status sandbox = StatusMapper.MAPPER.map(new SandboxException(f, "sandbox says " + f, null));
            assertEquals(expected(f), task.code(), f.name());
            assertEquals(task.code(), sandbox.code(), f.name());
            assertEquals("sandbox says " + f, sandbox.message());
        }
    }
}
