package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * The node survives its runtime (DESIGN.md decision 11): with tasks running under rund on
 * a private containerd, the daemon is killed (SIGKILL) with no standby and held down for a
 * while, then comes back (started by the tasks' relays); later it is stopped (SIGTERM, as an
 * upgrade does) and its standby takes over; then that one is killed (SIGKILL) and its own
 * standby takes over. Throughout, containerd must see no task die that did not:
 * every task is still there, a foreground `ctr run` gets all its output and its exit
 * status, output written while no daemon ran is not lost, an exit that happened meanwhile
 * is reported with its real status, and exec, kill, wait and delete work afterwards.
 */
@Timeout(600)
class DaemonRestartTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUNTIME = "io.containerd.rund.v2";
    private static Containerd ctd;
    private static CriClient cri;
    private static CriPods pods;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        pods = CriPods.start("restart");
        ctd = pods.ctd();
        cri = pods.cri();
    }

    @AfterAll
    static void stop() throws Exception {
        if (pods != null) {
            pods.close();
        }
    }

    @Test
    void aKilledOrRestartedDaemonLosesNoTask() throws Exception {
        Path log = ctd.dir.resolve("steady.log");
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, "--log-uri", "file://" + log, Containerd.IMAGE,
                "steady", "sh", "-c", "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.1; done").exitCode());
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "sleeper", "sleep", "1000")
                .exitCode());
        // A CRI pod: its VM holds the sandbox (pause) container and an app that joined it.
        var podConfig = pods.pod("survivor", io.rund.test.cri.NamespaceMode.POD);
        String podId = pods.runPod(podConfig, "rund");
        String app = pods.createAndStart(podId, podConfig, "app", "echo started; sleep 1000");
        // Exits with 7 while no daemon runs.
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "exiter", "sh", "-c",
                "sleep 4; exit 7").exitCode());
        // A foreground run: its Wait is in flight when the daemon dies, and its output crosses the gap.
        List<String> fgArgv = List.of(Containerd.CTR, "-a", ctd.socket.toString(), "run", "--rm", "--runtime", RUNTIME,
                Containerd.IMAGE, "fg", "sh", "-c", "for i in $(seq 1 50); do echo fg$i; sleep 0.2; done; exit 3");
        Process fg = new ProcessBuilder(fgArgv).redirectErrorStream(true).start();
        StringBuffer fgOut = new StringBuffer();
        Thread.ofVirtual().start(() -> {
            try (var in = new java.io.BufferedReader(new java.io.InputStreamReader(fg.getInputStream()))) {
                for (String line; (line = in.readLine()) != null; ) {
                    fgOut.append(line).append('\n');
                }
            } catch (java.io.IOException e) {
                fgOut.append("(read: ").append(e).append(")\n");
            }
        });
        // Its Start answered (it prints): a call in flight when the daemon dies may fail, UNAVAILABLE.
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!fgOut.toString().contains("fg2\n")) {
            assertTrue(System.nanoTime() < end && fg.isAlive(), "fg runs: " + fgOut);
            Thread.sleep(20);
        }
        // No standby this time: the node has no daemon at all until the hold goes.
        ProcessHandle.of(ctd.awaitStandby()).ifPresent(p -> {
            p.destroyForcibly();
            p.onExit().join();
        });
        Files.createFile(ctd.dir.resolve("daemon.hold"));
        long first = ctd.daemonPid();
        ProcessHandle.of(first).ifPresent(ProcessHandle::destroyForcibly);
        ProcessHandle.of(first).ifPresent(p -> p.onExit().join());
        Thread.sleep(6000); // exiter exits; steady and fg write into their pipes
        Files.delete(ctd.dir.resolve("daemon.hold"));
        long second = awaitNewDaemon(first);

        assertTrue(fg.waitFor(90, TimeUnit.SECONDS), "the foreground run ends");
        Thread.sleep(200); // the reader's last line
        String out = fgOut.toString();
        assertEquals(3, fg.exitValue(), out);
        List<String> expected = new ArrayList<>();
        for (int i = 1; i <= 50; i++) {
            expected.add("fg" + i);
        }
        assertEquals(expected, out.lines().toList(), "every line, in order, across the restart");

        String tasks = ctd.ctr(T, "task", "ls").stdout();
        assertTrue(tasks.matches("(?s).*steady\\s+\\d+\\s+RUNNING.*"), tasks);
        assertTrue(tasks.matches("(?s).*sleeper\\s+\\d+\\s+RUNNING.*"), tasks);
        assertTrue(tasks.matches("(?s).*exiter\\s+\\d+\\s+STOPPED.*"), tasks);
        // ctr 1.6 has no task wait: its task delete says the task's status.
        Command.Result exited = ctd.ctr(T, "task", "delete", "exiter");
        assertTrue(exited.stderr().contains("exit with non-zero exit code 7"),
                "the exit that happened while no daemon ran: " + exited);
        Command.Result exec = ctd.ctr(T, "task", "exec", "--exec-id", "e1", "sleeper", "echo", "after-kill");
        assertEquals("after-kill\n", exec.stdout(), exec.toString());
        assertEquals("pod-after-kill\n", pods.exec(app, "echo", "pod-after-kill").getStdout().toStringUtf8(),
                "a pod's joined container is taken up with its VM");
        String daemonLog = Files.readString(ctd.daemonLog);
        assertTrue(daemonLog.contains("sandbox=steady: adopted from a previous daemon"), daemonLog);

        // An upgrade of the same build: the daemon is stopped, and its standby takes over.
        long standby = ctd.awaitStandby();
        ProcessHandle.of(second).ifPresent(ProcessHandle::destroy);
        long third = awaitNewDaemon(second);
        assertEquals(standby, third, "the standby took over");
        Command.Result exec2 = ctd.ctr(T, "task", "exec", "--exec-id", "e2", "sleeper", "echo", "after-upgrade");
        assertEquals("after-upgrade\n", exec2.stdout(), exec2.toString());

        // A kill with a standby waiting: it takes over, and a call made across loses nothing.
        long nextStandby = ctd.awaitStandby();
        // Started (`run -d` returns once Start is answered: a Start the kill met would be answered
        // "unknown", as it is not replayed), then attached: its Wait crosses the kill, or is
        // sent after it and waits for the next daemon; the outcome is the same.
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "fg2", "sh", "-c",
                "sleep 3; echo across; exit 5").exitCode());
        Process fg2 = new ProcessBuilder(Containerd.CTR, "-a", ctd.socket.toString(), "task", "attach", "fg2")
                .redirectErrorStream(true).start();
        Thread.sleep(500); // its Wait on its way
        ProcessHandle.of(third).ifPresent(ProcessHandle::destroyForcibly);
        assertEquals(nextStandby, awaitNewDaemon(third), "the standby took over");
        assertTrue(fg2.waitFor(90, TimeUnit.SECONDS));
        String attached = new String(fg2.getInputStream().readAllBytes());
        assertEquals(5, fg2.exitValue(), attached);
        assertTrue(attached.contains("across"), attached);
        ctd.ctr(T, "task", "delete", "fg2");
        ctd.ctr(T, "container", "delete", "fg2");
        Command.Result exec3 = ctd.ctr(T, "task", "exec", "--exec-id", "e3", "sleeper", "echo", "after-takeover");
        assertEquals("after-takeover\n", exec3.stdout(), exec3.toString());

        // steady's output: every line, none lost or doubled, including those written while no daemon ran.
        ctd.ctr(T, "task", "kill", "-s", "SIGKILL", "steady");
        ctd.awaitTask("steady", "STOPPED");
        Command.Result killed = ctd.ctr(T, "task", "delete", "steady");
        assertTrue(killed.stderr().contains("exit with non-zero exit code 137"), killed.toString());
        List<String> lines = Files.readAllLines(log);
        assertTrue(lines.size() > 60, "steady wrote for over 6 s: " + lines.size());
        for (int i = 0; i < lines.size(); i++) {
            assertEquals("line" + i, lines.get(i), "line " + i + " of " + lines.size());
        }

        assertEquals("pod-after-upgrade\n", pods.exec(app, "echo", "pod-after-upgrade").getStdout().toStringUtf8());
        pods.stopAndRemovePod(podId);
        for (String id : List.of("sleeper", "steady", "exiter")) {
            ctd.ctr(T, "task", "kill", "-s", "SIGKILL", id);
            ctd.ctr(T, "task", "delete", "--force", id);
            ctd.ctr(T, "container", "delete", id);
        }
        ctd.awaitNothingLeft();
    }

    private static long awaitNewDaemon(long old) throws Exception {
        return ctd.awaitNewDaemon(old, Duration.ofSeconds(90));
    }
}
