package io.rund.shim.stdio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.Fault;
import io.rund.shim.TaskFault;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** The stdio URIs containerd may hand a task, checked before anything is opened. */
@Tag("unit")
class StdioCheckTest {

    @Test
    void fifosFilesAndLoggingProgramsAreAcceptedAndTheRestNamed() throws Exception {
        Stdio.check("", "", "");
        Stdio.check("/run/containerd/fifo/1-stdin", "/run/containerd/fifo/1-stdout", "/run/containerd/fifo/1-stderr");
        Stdio.check("", "file:///var/log/out", "file:///var/log/err");
        Stdio.check("", "binary:///bin/true?a=1&b=x%20y", "binary:///bin/true?a=1&b=x%20y");
        for (String[] c : new String[][] {
                {"http://x/in", "", "", "stdin http://x/in"},
                {"", "relative/path", "", "stdout relative/path"},
                {"", "binary:///bin/true", "/tmp/err", "must be the same binary:// URI"},
                {"", "binary://host/bin/true", "binary://host/bin/true", "must name an absolute path"},
                {"", "binary:///no/such/logger", "binary:///no/such/logger", "is not an executable file"}}) {
            TaskFault f = assertThrows(TaskFault.class, () -> Stdio.check(c[0], c[1], c[2]), String.join(",", c));
            assertEquals(Fault.INVALID_ARGUMENT, f.kind);
            assertTrue(f.getMessage().contains(c[3]), f.getMessage());
        }
    }

    @Test
    void aLoggingProgramGetsItsQueryAsArguments() throws Exception {
        assertEquals(List.of("/bin/true", "a", "1", "b", "x y", "flag", ""),
                LoggingProgram.binary("binary:///bin/true?a=1&b=x%20y&flag&a=2"));
    }
}
