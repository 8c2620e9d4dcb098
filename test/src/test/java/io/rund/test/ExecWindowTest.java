package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.test.cri.ExecSyncResponse;
import io.rund.test.cri.Mount;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.PodSandboxConfig;
import io.rund.testing.Command;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * The agent's window between fork and exec, attacked from inside the pod: container A, root
 * without CAP_SYS_PTRACE, tries PTRACE_SEIZE on every process it sees in the pod's PID
 * namespace (test resource seizer.c, built static here), while container B is exec'd 200
 * times, and stops each it holds to look at its program: one still the runtime's was held
 * between fork and exec, with the agent's descriptors: never, as under runc. That A does
 * seize B's processes once they have exec'd shows the attack is real (and an agent whose
 * children were dumpable was held there, 3 times in 200 on this machine).
 */
@Timeout(900)
class ExecWindowTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final int EXECS = 200;
    private static Containerd ctd;
    private static CriPods pods;
    private static Path tools;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        pods = CriPods.start("execwindow");
        ctd = pods.ctd();
        tools = Files.createDirectories(ctd.dir.resolve("tools"));
        Path source = tools.resolve("seizer.c");
        try (InputStream in = ExecWindowTest.class.getResourceAsStream("/seizer.c")) {
            Files.write(source, in.readAllBytes());
        }
        Command.Result cc = Command.run(T, tools, Map.of(), List.of("gcc", "-static", "-O2", "-o", "seizer", "seizer.c"));
        assertEquals(0, cc.exitCode(), cc.toString());
    }

    @AfterAll
    static void stop() throws Exception {
        if (pods != null) {
            pods.close();
        }
    }

    /** Under {@code handler}: how many processes A seized, and how many of those it held before their exec. */
    private static long[] seizeWhileExecing(String handler) throws Exception {
        PodSandboxConfig pod = pods.pod("seize-" + handler, NamespaceMode.POD);
        String podId = pods.runPod(pod, handler);
        try {
            // Its containers share the pod's PID namespace (CRI's default for a container).
            String a = pods.createAndStart(podId, pod, "a", "exec /tools/seizer /tmp/seized",
                    Mount.newBuilder().setContainerPath("/tools").setHostPath(tools.toString()).setReadonly(true).build());
            String b = pods.createAndStart(podId, pod, "b", "sleep 100000");
            for (int i = 0; i < EXECS; i++) {
                ExecSyncResponse r = pods.exec(b, "sleep", "0.05");
                assertEquals(0, r.getExitCode(), "exec " + i + ": " + r.getStderr().toStringUtf8());
            }
            Thread.sleep(500); // its last round written
            String seized = pods.exec(a, "cat", "/tmp/seized").getStdout().toStringUtf8();
            Matcher m = Pattern.compile("seized (\\d+) held_before_exec (\\d+)\n(last held: .*\n)?").matcher(seized);
            assertTrue(m.matches(), "the seizer wrote " + seized);
            System.out.println("exec window: under " + handler + ", " + EXECS + " execs: " + seized.strip());
            return new long[] {Long.parseLong(m.group(1)), Long.parseLong(m.group(2))};
        } finally {
            pods.stopAndRemovePod(podId);
        }
    }

    @Test
    void noExecdProcessIsSeizedBeforeItsExec() throws Exception {
        // runc beside it, the reference (its init is not dumpable until its exec: 0 held).
        assertEquals(0, seizeWhileExecing("runc")[1], "runc's processes held before their exec");
        long[] rund = seizeWhileExecing("rund");
        assertTrue(rund[0] > 0, "A seized B's processes once they ran: " + rund[0] + " of " + EXECS);
        assertEquals(0, rund[1], "processes held before their exec");
    }
}
