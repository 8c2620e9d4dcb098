package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.lifecycle.FaultPoints;
import io.rund.testing.Command;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every step of a sandbox's life, broken: at each named fault point ({@link FaultPoints})
 * the daemon dies there (as SIGKILL would; once, then the next daemon runs healthy) or the
 * step fails, on a private containerd. Afterwards nothing is left (process, mount, cgroup
 * outside the pool, store file, task endpoint, relay) and containerd was told the truth,
 * the same whatever the timing: a call that may run twice and was in flight at the kill is
 * answered by the next daemon (Wait, Delete); one that may not (Create, Start) fails as
 * UNAVAILABLE; work of the daemon's own (spares, templates) costs containerd nothing. Then
 * the faults a sandbox meets from outside: its QEMU killed, its virtio-fs back-end killed,
 * its guest frozen (the agent stops answering).
 */
@Timeout(900)
class FaultTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUNTIME = "io.containerd.rund.v2";
    private static final String TYPE = "io.kubernetes.cri.container-type";
    private static final String POD = "io.kubernetes.cri.sandbox-id";
    private static Containerd ctd;
    private static int serial;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        ctd = new Containerd("fault");
    }

    @AfterAll
    static void stop() throws Exception {
        if (ctd != null) {
            ctd.close();
        }
    }

    /**
     * Every point and both actions; {@code -Drund.fault.points=a,b} runs only those points,
     * {@code -Drund.fault.actions=kill} only that action, {@code -Drund.fault.rounds=20} each
     * case that many times in a row (to show an outcome does not depend on the timing).
     */
    static Stream<Arguments> points() {
        List<Arguments> cases = new ArrayList<>();
        String only = System.getProperty("rund.fault.points", "");
        List<String> actions = List.of(System.getProperty("rund.fault.actions", "kill,fail").split(","));
        int rounds = Integer.getInteger("rund.fault.rounds", 1);
        for (int round = 0; round < rounds; round++) {
            for (String point : FaultPoints.POINTS) {
                if (!only.isEmpty() && !List.of(only.split(",")).contains(point)) {
                    continue;
                }
                for (String action : actions) {
                    cases.add(Arguments.of(point, action));
                }
            }
        }
        return cases.stream();
    }

    @ParameterizedTest(name = "{1} at {0}")
    @MethodSource("points")
    void aFaultAtEveryStepLeavesNothing(String point, String action) throws Exception {
        String id = "f" + (++serial);
        boolean kill = action.equals("kill");
        arm(point + "=" + action);
        Command.Result r = reach(point, id, kill);
        arm("");
        switch (point) {
            case "task.exit" -> assertEquals(3, r.exitCode(), "the run ends with its status: " + r);
            case "container.remove" -> {
                if (kill) {
                    assertEquals(0, r.exitCode(), "the Delete in flight is answered by the next daemon: " + r);
                } else {
                    assertNotEquals(0, r.exitCode(), r.toString());
                    assertTrue(r.stderr().contains("fault injected at container.remove"), r.toString());
                }
            }
            case "stop" -> {
                // A kill: the Delete in flight is answered by the next daemon; a failure: the stop goes on.
                assertEquals(0, r.exitCode(), r.toString());
                assertTrue(r.stderr().contains("exit with non-zero exit code 137"), r.toString());
            }
            // The daemon's own work: containerd sees nothing of it (a failed build boots cold).
            case "spare.refill", "template.build" -> assertEquals(0, r.exitCode(), r.toString());
            default -> {
                assertNotEquals(0, r.exitCode(), "what failed is told as failed: " + r);
                assertTrue(r.stderr().contains(kill ? "rund daemon went away" : "fault injected at " + point),
                        r.toString());
            }
        }
        // containerd cleans up what it was told failed; what it still has is deleted as a user would.
        for (String task : List.of(id + "-app", id)) {
            ctd.ctr(T, "task", "kill", "-s", "SIGKILL", task);
            ctd.ctr(T, "task", "delete", "--force", task);
            ctd.ctr(T, "container", "delete", task);
        }
        ctd.awaitNothingLeft();
        assertTrue(ctd.ctr(T, "task", "ls").stdout().lines().noneMatch(l -> l.startsWith(id)),
                ctd.ctr(T, "task", "ls").stdout());
    }

    /** Does what reaches {@code point} with sandbox {@code id}; the result of the step that meets it. */
    private static Command.Result reach(String point, String id, boolean kill) throws Exception {
        return switch (point) {
            case "task.exit" -> ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, id, "sh", "-c", "exit 3");
            case "container.add", "container.remove" -> {
                Command.Result pod = ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, "--annotation", TYPE + "=sandbox",
                        "--annotation", POD + "=" + id, Containerd.IMAGE, id, "sleep", "1000");
                assertEquals(0, pod.exitCode(), pod.toString());
                Command.Result app = ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, "--annotation", TYPE + "=container",
                        "--annotation", POD + "=" + id, Containerd.IMAGE, id + "-app", "sleep", "1000");
                if (point.equals("container.add")) {
                    yield app;
                }
                assertEquals(0, app.exitCode(), app.toString());
                ctd.ctr(T, "task", "kill", "-s", "SIGKILL", id + "-app");
                ctd.awaitTask(id + "-app", "STOPPED");
                yield ctd.ctr(T, "task", "delete", id + "-app");
            }
            case "stop" -> {
                assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, id, "sleep", "1000").exitCode());
                ctd.ctr(T, "task", "kill", "-s", "SIGKILL", id);
                ctd.awaitTask(id, "STOPPED");
                yield ctd.ctr(T, "task", "delete", id);
            }
            case "template.build", "spare.refill" -> {
                if (point.equals("template.build")) {
                    removeTemplates();
                }
                if (kill) {
                    // A daemon refills its spares as soon as it starts (building their template
                    // first): it dies there with no call of containerd's in flight, and the next
                    // one, started by the launcher that found it gone, finishes what it left.
                    ctd.ensureDaemon();
                    Path fired = ctd.rundState.resolve("fault.fired");
                    long end = System.nanoTime() + T.toNanos();
                    while (!Files.exists(fired)) {
                        assertTrue(System.nanoTime() < end, "the daemon did not reach " + point);
                        Thread.sleep(50);
                    }
                }
                yield ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, id, "true");
            }
            default -> ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, id, "sleep", "1000");
        };
    }

    @Test
    void aSandboxThatCannotServeIsFailedAndItsTasksEndKilled() throws Exception {
        for (String id : List.of("qemu-killed", "helper-killed", "guest-frozen")) {
            assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, id, "sleep", "1000").exitCode());
        }
        // Frozen first: its agent needs ~45 s of silence to be given up on.
        ProcessHandle frozen = qemuOf("guest-frozen");
        Command.run(T, null, java.util.Map.of(), List.of("kill", "-STOP", Long.toString(frozen.pid()))).ok();
        qemuOf("qemu-killed").destroyForcibly();
        ProcessHandle helper = helperOf("helper-killed");
        helper.destroyForcibly();
        for (String id : List.of("qemu-killed", "helper-killed", "guest-frozen")) {
            ctd.awaitTask(id, "STOPPED");
            Command.Result deleted = ctd.ctr(T, "task", "delete", id);
            assertTrue(deleted.stderr().contains("exit with non-zero exit code 137"), id + ": " + deleted);
            ctd.ctr(T, "container", "delete", id);
        }
        String log = Files.readString(ctd.daemonLog);
        assertTrue(log.contains("sandbox=helper-killed: failed: helper"), log);
        assertTrue(log.contains("sandbox=guest-frozen: failed: its agent did not answer"), log);
        ctd.awaitNothingLeft();
    }

    @Test
    void aFullStoreFailsWritesAndStartsByNameNotTheNode() throws Exception {
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "full", "sleep", "1000").exitCode());
        // Something beside rund fills the store (its promises hold only against its own layers):
        // two files take what is left of it, to the last block.
        Path filler = ctd.scratch.mount.resolve("filler");
        Path rest = ctd.scratch.mount.resolve("filler-rest");
        Command.run(T, null, java.util.Map.of(), List.of("sh", "-c", "fallocate -l $(($(stat -f -c '%a*%S' "
                + ctd.scratch.mount + ") - 33554432)) " + filler + " && { dd if=/dev/zero of=" + rest
                + " bs=1M 2>/dev/null; true; }")).ok();
        try {
            Command.Result write = ctd.ctr(T, "task", "exec", "--exec-id", "dd", "full", "sh", "-c",
                    "dd if=/dev/zero of=/big bs=1M count=64 conv=fsync 2>&1; echo status=$?");
            assertTrue(write.stdout().contains("status=1"), "the write fails in the container, as under runc: " + write);
            assertEquals("alive\n", ctd.ctr(T, "task", "exec", "--exec-id", "e", "full", "echo", "alive").stdout(),
                    "its VM runs on (QEMU reports the error to the guest; it would pause the VM by default)");
            // A start is refused naming the store, spare VM or not (a spare's disk exists, but its
            // blocks come as the guest writes: it would fail the guest's first writes with EIO).
            Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, "start0", "true");
            assertNotEquals(0, r.exitCode(), r.toString());
            assertTrue(r.stderr().contains("the store is full"), r.toString());
        } finally {
            Files.deleteIfExists(filler);
            Files.deleteIfExists(rest);
        }
        ctd.killAndDelete("full");
        ctd.ctr(T, "container", "delete", "start0");
        // With room again, a start runs.
        assertEquals("ok\n", ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, "start1", "echo", "ok")
                .stdout());
        ctd.awaitNothingLeft();
    }

    @Test
    void aTemplateRemovedUnderItsClonesIsBuiltAgain() throws Exception {
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "clone", "sleep", "1000").exitCode());
        removeTemplates();
        Command.Result exec = ctd.ctr(T, "task", "exec", "--exec-id", "x", "clone", "echo", "alive");
        assertEquals(0, exec.exitCode(), "a clone runs on when its template's files are gone: " + exec);
        // Spares of the removed template are used or dropped; then starts clone a template built again.
        for (int i = 0; i < 4; i++) {
            Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, "after" + i, "echo", "ok");
            assertEquals("ok\n", r.stdout(), r.toString());
        }
        try (Stream<Path> keys = Files.list(Path.of(ctd.rundEnv.get("RUND_TEMPLATES")))) {
            assertEquals(1, keys.count(), "the template was built again");
        }
        ctd.killAndDelete("clone");
        ctd.awaitNothingLeft();
    }

    private static void removeTemplates() throws Exception {
        try (Stream<Path> keys = Files.list(Path.of(ctd.rundEnv.get("RUND_TEMPLATES")))) {
            for (Path t : keys.toList()) {
                io.rund.testing.Trees.delete(t);
            }
        }
    }

    /** Writes the daemon's configuration with {@code fault} armed ("" for none) and has the next daemon read it. */
    private static void arm(String fault) throws Exception {
        java.time.Instant armed = java.time.Instant.now();
        Files.writeString(ctd.rundConfig, fault.isEmpty() ? "" : "fault = \"" + fault + "\"\n");
        Files.deleteIfExists(ctd.rundState.resolve("fault.fired")); // a kill fires once per arming
        stopDaemon(ctd.daemonPid());
        if (fault.isEmpty()) {
            // A node has a daemon: the next one finishes what the dead one left. One that
            // containerd's cleanup started before this (it read the armed configuration) goes.
            // (A standby takes over reading the configuration anew: when it began to serve counts.)
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (true) {
                ctd.ensureDaemon();
                long pid = ctd.daemonPid();
                if (Files.getLastModifiedTime(ctd.rundState.resolve("rund.pid")).toInstant().isAfter(armed)) {
                    return;
                }
                assertTrue(System.nanoTime() < end, "no daemon started serving after the fault was disarmed");
                stopDaemon(pid);
            }
        }
    }

    private static void stopDaemon(long pid) {
        ProcessHandle.of(pid).ifPresent(p -> {
            p.destroy();
            p.onExit().orTimeout(30, TimeUnit.SECONDS).join();
        });
    }


    private static ProcessHandle qemuOf(String id) throws Exception {
        String state = Files.readString(ctd.rundState.resolve("sandboxes").resolve(id).resolve("state.json"));
        var m = java.util.regex.Pattern.compile("\"vmPid\":(\\d+)").matcher(state);
        assertTrue(m.find(), state);
        return ProcessHandle.of(Long.parseLong(m.group(1))).orElseThrow();
    }

    private static ProcessHandle helperOf(String id) throws Exception {
        String state = Files.readString(ctd.rundState.resolve("sandboxes").resolve(id).resolve("state.json"));
        var m = java.util.regex.Pattern.compile("\"helperPid\":(\\d+)").matcher(state);
        assertTrue(m.find(), state);
        return ProcessHandle.of(Long.parseLong(m.group(1))).orElseThrow();
    }
}
