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
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * `ctr run --runtime io.containerd.rund.v2` against Debian's containerd 1.6: the launcher
 * starts the daemon, the daemon boots a microVM per task. containerd's and the daemon's
 * logs are printed when a test fails.
 */
@Timeout(600)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class CtrRunTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUNTIME = "io.containerd.rund.v2";
    private static Containerd ctd;

    @RegisterExtension
    static final TestWatcher DUMP = new TestWatcher() {
        @Override
        public void testFailed(ExtensionContext context, Throwable cause) {
            if (ctd != null) {
                System.err.println("=== " + context.getDisplayName() + " failed\n" + ctd.diagnostics());
            }
        }
    };

    @BeforeAll
    static void start() throws Exception {
        ctd = new Containerd("ctr");
    }

    @AfterAll
    static void stop() throws Exception {
        if (ctd != null) {
            ctd.close();
        }
    }

    private static Command.Result run(String id, String... cmd) throws Exception {
        List<String> args = new ArrayList<>(List.of("run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, id));
        args.addAll(List.of(cmd));
        return ctd.ctr(T, args.toArray(String[]::new));
    }

    @Test
    @Order(1)
    void exitCodesComeBackAndTheGuestKernelIsNotTheHosts() throws Exception {
        Command.Result ok = run("exit0", "sh", "-c", "uname -r");
        assertEquals(0, ok.exitCode(), ok.toString());
        assertEquals("6.1.192", ok.stdout().strip(), "the container runs on rund's guest kernel");
        assertNotEquals(Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip(), ok.stdout().strip());
        assertEquals(3, run("exit3", "sh", "-c", "exit 3").exitCode());
        assertEquals(137, run("exit137", "sh", "-c", "kill -9 $$").exitCode());
    }

    @Test
    @Order(2)
    void stdoutAndStderrStaySeparateAndStdinFlowsIn() throws Exception {
        Command.Result r = run("streams", "sh", "-c", "echo to-out; echo to-err >&2");
        assertEquals(0, r.exitCode(), r.toString());
        assertEquals("to-out\n", r.stdout());
        assertEquals("to-err\n", r.stderr());
        Command.Result in = ctd.ctrWithInput(T, "line one\nline two\n", "run", "--rm", "--runtime", RUNTIME,
                Containerd.IMAGE, "stdin", "sh", "-c", "wc -l; cat >/dev/null");
        assertEquals(0, in.exitCode(), in.toString());
        assertEquals("2", in.stdout().strip());
    }

    @Test
    @Order(3)
    void execKillPsPauseResumeOnARunningTask() throws Exception {
        // ctr 1.6 has no `task wait`: a foreground `ctr run` waits, and returns the exit code.
        CompletableFuture<Command.Result> svc = CompletableFuture.supplyAsync(() -> {
            try {
                return run("svc", "sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 1; done");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        try {
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (!ctd.ctr(T, "task", "ls").stdout().matches("(?s).*svc\\s+\\d+\\s+RUNNING.*")) {
                assertTrue(System.nanoTime() < end, "svc did not start");
                Thread.sleep(100);
            }
            Command.Result exec = ctd.ctr(T, "task", "exec", "--exec-id", "x1", "svc", "sh", "-c", "echo from-exec; exit 4");
            assertEquals(4, exec.exitCode(), exec.toString());
            assertEquals("from-exec\n", exec.stdout());
            Command.Result ps = ctd.ctr(T, "task", "ps", "svc");
            assertEquals(0, ps.exitCode(), ps.toString());
            assertTrue(ps.stdout().lines().count() >= 2, ps.stdout());
            assertEquals(0, ctd.ctr(T, "task", "pause", "svc").exitCode());
            assertTrue(ctd.ctr(T, "task", "ls").stdout().contains("PAUSED"));
            assertEquals(0, ctd.ctr(T, "task", "resume", "svc").exitCode());
            assertTrue(ctd.ctr(T, "task", "ls").stdout().contains("RUNNING"));
            Command.Result metrics = ctd.ctr(T, "task", "metrics", "svc");
            assertEquals(0, metrics.exitCode(), metrics.toString());
            assertTrue(metrics.stdout().contains("memory.usage_in_bytes"), metrics.stdout());
            assertEquals(0, ctd.ctr(T, "task", "kill", "-s", "TERM", "svc").exitCode());
            Command.Result done = svc.get(60, TimeUnit.SECONDS);
            assertEquals(7, done.exitCode(), "the TERM trap's exit code: " + done);
            assertEquals("ready\n", done.stdout());
        } finally {
            if (!svc.isDone()) {
                ctd.ctr(T, "task", "kill", "-s", "KILL", "svc");
                svc.get(60, TimeUnit.SECONDS);
            }
        }
    }

    @Test
    @Order(4)
    void sequentialAndConcurrentRunsLeaveNothingBehind() throws Exception {
        for (int i = 0; i < 20; i++) {
            Command.Result r = run("seq-" + i, "echo", "n" + i);
            assertEquals("n" + i + "\n", r.stdout(), r.toString());
        }
        List<CompletableFuture<Command.Result>> runs = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            String id = "par-" + i;
            runs.add(CompletableFuture.supplyAsync(() -> {
                try {
                    return run(id, "echo", id);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }));
        }
        for (int i = 0; i < runs.size(); i++) {
            Command.Result r = runs.get(i).get(180, TimeUnit.SECONDS);
            assertEquals(0, r.exitCode(), r.toString());
            assertEquals("par-" + i + "\n", r.stdout());
        }
        ctd.assertNothingLeft();
    }

    @Test
    @Order(5)
    void badIdsAreRefusedClearly() throws Exception {
        Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, "a..b/../x", "true");
        assertNotEquals(0, r.exitCode());
        ctd.assertNothingLeft();
    }

    @Test
    @Order(6)
    void aMalformedConfigIsRefusedNamingTheField() throws Exception {
        Path spec = ctd.dir.resolve("bad-config.json");
        Files.writeString(spec, "{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[],\"cwd\":\"/\"},"
                + "\"root\":{\"path\":\"rootfs\"}}");
        Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, "--config", spec.toString(), "badcfg");
        assertNotEquals(0, r.exitCode());
        assertTrue(r.stderr().contains("process.args is empty"), r.toString());
        ctd.ctr(T, "container", "delete", "badcfg");
        ctd.assertNothingLeft();
    }

    @Test
    @Order(7)
    void eventsArriveInTheOrderContainerdRequires() throws Exception {
        List<String> argv = List.of("ctr", "-a", ctd.socket.toString(), "events");
        Process events = new ProcessBuilder(argv).start();
        var out = Command.drain(events.getInputStream());
        try {
            Thread.sleep(500);
            assertEquals(0, run("evt", "true").exitCode());
            Thread.sleep(1000);
        } finally {
            events.destroy();
            events.waitFor(10, TimeUnit.SECONDS);
        }
        List<String> topics = out.get(10, TimeUnit.SECONDS).lines()
                .filter(l -> l.contains("\"evt\"") || l.contains("container_id:\"evt\"") || l.contains("evt"))
                .map(l -> l.replaceAll(".*?(/tasks/[a-z-]+).*", "$1"))
                .filter(t -> t.startsWith("/tasks/"))
                .toList();
        assertEquals(List.of("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"), topics,
                "events of task evt");
    }

    @Test
    @Order(8)
    void aTerminalSessionWorks() throws Exception {
        // ctr -t wants a terminal on its stdin: script(1) gives it one.
        Command.Result r = Command.run(T, null, java.util.Map.of(), List.of("script", "-qec",
                "ctr -a " + ctd.socket + " run --rm -t --runtime " + RUNTIME + " " + Containerd.IMAGE
                        + " tty sh -c 'tty; echo done'", "/dev/null"));
        assertEquals(0, r.exitCode(), r.toString());
        assertTrue(r.stdout().contains("/dev/pts/0"), "the init's terminal is the container's own: " + r);
        assertTrue(r.stdout().contains("done"), r.toString());
        ctd.assertNothingLeft();
    }

    @Test
    @Order(9)
    void theLaunchersDeleteCleansUpWhenTheDaemonWasKilled() throws Exception {
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "orphan", "sleep", "1000")
                .exitCode());
        long daemon = Long.parseLong(Files.readString(ctd.rundState.resolve("rund.pid")).trim());
        ProcessHandle.of(daemon).ifPresent(ProcessHandle::destroyForcibly);
        ProcessHandle.of(daemon).ifPresent(p -> p.onExit().join());
        // What containerd runs for a task whose shim died: the launcher's delete. With no
        // daemon it starts one, which cleans what the dead one left, and answers.
        List<String> argv = List.of(ctd.launcher.toString(), "-namespace", "default", "-address",
                ctd.socket.toString(), "-publish-binary", "/usr/bin/containerd", "-id", "orphan", "-bundle",
                ctd.dir.resolve("state/io.containerd.runtime.v2.task/default/orphan").toString(), "delete");
        ProcessBuilder pb = new ProcessBuilder(argv);
        pb.environment().putAll(ctd.rundEnv);
        Process delete = pb.start();
        byte[] out = delete.getInputStream().readAllBytes();
        String err = new String(delete.getErrorStream().readAllBytes());
        assertTrue(delete.waitFor(90, TimeUnit.SECONDS));
        assertEquals(0, delete.exitValue(), err);
        io.rund.containerd.task.v2.DeleteResponse response = io.rund.containerd.task.v2.DeleteResponse.parseFrom(out);
        assertEquals(137, response.getExitStatus(), "a task that died with its daemon ends as killed");
        assertTrue(response.getExitedAt().getSeconds() > 0);
        ctd.assertNothingLeft();
        // containerd's own bookkeeping, then a run on the new daemon.
        ctd.ctr(T, "task", "delete", "--force", "orphan");
        ctd.ctr(T, "container", "delete", "orphan");
        assertEquals("after\n", run("after-crash", "echo", "after").stdout());
        ctd.assertNothingLeft();
    }
}
