package io.rund.shim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * containerd reads a shim's stdout and stderr together, so a rund JVM must print nothing
 * of its own. The flags that silence it live in one java argfile, which the daemon's
 * launcher and the test JVMs use; this runs a child JVM with and without it.
 */
class JvmFlagsTest {

    private static Command.Result probe(boolean withArgfile) throws Exception {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        List<String> argv = new ArrayList<>(List.of(java.toString()));
        if (withArgfile) {
            Path argfile = Path.of(System.getProperty("rund.jvm.argfile"));
            assertTrue(Files.isRegularFile(argfile), "no argfile at " + argfile);
            argv.add("@" + argfile);
        }
        argv.addAll(List.of("-cp", System.getProperty("java.class.path"), WarningProbe.class.getName()));
        return Command.run(Duration.ofSeconds(60), null, Map.of(), argv).ok();
    }

    @Test
    void withTheArgfileTheJvmPrintsNothingOfItsOwn() throws Exception {
        Command.Result r = probe(true);
        assertEquals("probe true\n", r.stdout(), r.toString());
        assertEquals("", r.stderr(), r.toString());
    }

    @Test
    void withoutItTheSameProgramWarns() throws Exception {
        // The control: proves the probe really triggers the warnings the argfile silences.
        Command.Result r = probe(false);
        assertTrue(r.stderr().contains("sun.misc.Unsafe"), r.toString());
        assertTrue(r.stderr().contains("restricted method"), r.toString());
    }
}
