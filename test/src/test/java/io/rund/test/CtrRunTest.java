package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
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
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
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
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

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
        // The container's init is PID 1 of its own PID namespace (a SIGKILL it sends itself is ignored, as under runc): a child dies.
        assertEquals(137, run("exit137", "sh", "-c", "sh -c 'kill -9 $$'; exit $?").exitCode());
        String log = Files.readString(ctd.daemonLog);
        assertTrue(log.matches("(?s).*sandbox=exit3: started in [0-9,]+ ms \\([A-Z]+, clone [0-9a-f]{24}( \\(spare\\))?\\).*"),
                "the VM was cloned from a template:\n" + log);
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
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(5)
    void badIdsAreRefusedClearly() throws Exception {
        Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, "a..b/../x", "true");
        assertNotEquals(0, r.exitCode());
        ctd.awaitNothingLeft();
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
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(7)
    void eventsArriveInTheOrderContainerdRequires() throws Exception {
        List<String> argv = List.of(Containerd.CTR, "-a", ctd.socket.toString(), "events");
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
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(9)
    void theLaunchersDeleteCleansUpWhenTheDaemonAndTheRelayWereKilled() throws Exception {
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "orphan", "sleep", "1000")
                .exitCode());
        long daemon = ctd.daemonPid();
        ProcessHandle.of(daemon).ifPresent(ProcessHandle::destroyForcibly);
        ProcessHandle.of(daemon).ifPresent(p -> p.onExit().join());
        // The relay is what containerd sees as the task's shim: with it gone, the task is lost.
        List<Long> relays = ctd.relays();
        assertEquals(1, relays.size(), "one relay, the task's: " + relays);
        ProcessHandle.of(relays.get(0)).ifPresent(p -> {
            p.destroyForcibly();
            p.onExit().join();
        });
        // What containerd runs for a task whose shim died: the launcher's delete. With no
        // daemon it starts one, which cleans what the dead one left, and answers.
        Process delete = launcherDelete("default", "orphan");
        byte[] out = delete.getInputStream().readAllBytes();
        String err = new String(delete.getErrorStream().readAllBytes());
        assertTrue(delete.waitFor(90, TimeUnit.SECONDS));
        assertEquals(0, delete.exitValue(), err);
        io.rund.containerd.task.v2.DeleteResponse response = io.rund.containerd.task.v2.DeleteResponse.parseFrom(out);
        assertEquals(137, response.getExitStatus(), "a task that died with its daemon ends as killed");
        assertTrue(response.getExitedAt().getSeconds() > 0);
        ctd.awaitNothingLeft();
        // containerd's own bookkeeping, then a run on the new daemon.
        ctd.ctr(T, "task", "delete", "--force", "orphan");
        ctd.ctr(T, "container", "delete", "orphan");
        assertEquals("after\n", run("after-crash", "echo", "after").stdout());
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(10)
    void aBinaryLoggerGetsBothStreamsAndABadOneIsRefused() throws Exception {
        Path logs = Files.createDirectories(ctd.dir.resolve("logs"));
        Path logger = ctd.dir.resolve("logger.sh");
        // Closes fd 5 (ready) first: children started after would hold it open.
        Files.writeString(logger, """
                #!/bin/sh
                exec 5>&-
                echo "$CONTAINER_ID $CONTAINER_NAMESPACE $1" > "$2/env"
                cat <&3 > "$2/out" &
                cat <&4 > "$2/err"
                wait
                """);
        Files.setPosixFilePermissions(logger, java.nio.file.attribute.PosixFilePermissions.fromString("rwx------"));
        Command.Result r = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, "--log-uri",
                "binary://" + logger + "?dir=" + logs, Containerd.IMAGE, "logged", "sh", "-c",
                "echo to-out; echo to-err >&2; exit 5");
        assertEquals(5, r.exitCode(), r.toString());
        assertEquals("", r.stdout(), "output goes to the logger, not to ctr");
        assertEquals("to-out\n", Files.readString(logs.resolve("out")));
        assertEquals("to-err\n", Files.readString(logs.resolve("err")));
        assertEquals("logged default dir\n", Files.readString(logs.resolve("env")));

        Command.Result bad = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, "--log-uri", "binary:///no/such/logger",
                Containerd.IMAGE, "badlog", "true");
        assertNotEquals(0, bad.exitCode());
        assertTrue(bad.stderr().contains("/no/such/logger is not an executable file"), bad.toString());
        ctd.ctr(T, "container", "delete", "badlog");
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(11)
    void theContainersOfAPodRunInItsVm() throws Exception {
        String loop = "while :; do sleep 1; done";
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, "--annotation", TYPE + "=sandbox",
                "--annotation", POD + "=pod1", Containerd.IMAGE, "pod1", "sh", "-c", "echo pod > /who; " + loop)
                .exitCode());
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, "--annotation", TYPE + "=container",
                "--annotation", POD + "=pod1", Containerd.IMAGE, "app1", "sh", "-c", loop).exitCode());
        String tasks = ctd.ctr(T, "task", "ls").stdout();
        assertEquals(taskPid(tasks, "pod1"), taskPid(tasks, "app1"), "one VM serves both: " + tasks);
        List<String> vms = ctd.sandboxProcesses().stream().filter(c -> c.split(" ")[0].endsWith("/qemu-system-x86_64")).toList();
        assertEquals(1, vms.size(), "VMs: " + vms);

        Command.Result own = ctd.ctr(T, "task", "exec", "--exec-id", "x1", "app1", "sh", "-c", "cat /who; echo app > /who2; cat /who2");
        assertEquals("app\n", own.stdout(), "app1 has its own rootfs: " + own);
        Command.Result ps = ctd.ctr(T, "task", "ps", "app1");
        assertEquals(0, ps.exitCode(), ps.toString());

        Command.Result stray = ctd.ctr(T, "run", "--rm", "--runtime", RUNTIME, "--annotation", TYPE + "=container",
                "--annotation", POD + "=nopod", Containerd.IMAGE, "stray", "true");
        assertNotEquals(0, stray.exitCode());
        assertTrue(stray.stderr().contains("nopod"), "the error names the missing pod: " + stray);
        ctd.ctr(T, "container", "delete", "stray");

        assertEquals(0, ctd.ctr(T, "task", "kill", "-s", "KILL", "app1").exitCode());
        awaitStopped("app1");
        assertKilled(ctd.ctr(T, "task", "delete", "app1"));
        Command.Result still = ctd.ctr(T, "task", "exec", "--exec-id", "x2", "pod1", "cat", "/who");
        assertEquals("pod\n", still.stdout(), "the pod outlives its container: " + still);

        assertEquals(0, ctd.ctr(T, "task", "kill", "-s", "KILL", "pod1").exitCode());
        awaitStopped("pod1");
        assertKilled(ctd.ctr(T, "task", "delete", "pod1"));
        ctd.ctr(T, "container", "delete", "pod1", "app1");
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(12)
    void theSameIdInAnotherNamespaceIsRefusedWithoutHarmingTheFirst() throws Exception {
        ctd.ctr(T, "-n", "other", "images", "import", ctd.dir.resolve("busybox.tar").toString()).ok();
        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "dup", "sleep", "1000")
                .exitCode());
        Command.Result second = ctd.ctr(T, "-n", "other", "run", "--rm", "--runtime", RUNTIME, Containerd.IMAGE, "dup",
                "true");
        assertNotEquals(0, second.exitCode());
        assertTrue(second.stderr().contains("dup"), second.toString());
        // containerd runs the launcher's delete for other/dup when its shim connection closes,
        // maybe before our endpoint has gone; run it once more, after, as containerd may.
        Thread.sleep(300);
        assertEquals(0, launcherDelete("other", "dup").waitFor());
        // default/dup must not have been cleaned for it.
        Command.Result alive = ctd.ctr(T, "task", "exec", "--exec-id", "x1", "dup", "echo", "alive");
        assertEquals("alive\n", alive.stdout(), alive.toString());
        ctd.ctr(T, "-n", "other", "container", "delete", "dup");
        assertEquals(0, ctd.ctr(T, "task", "kill", "-s", "KILL", "dup").exitCode());
        awaitStopped("dup");
        assertKilled(ctd.ctr(T, "task", "delete", "dup"));
        ctd.ctr(T, "container", "delete", "dup");
        ctd.awaitNothingLeft();
    }

    @Test
    @Order(13)
    void rundStatusSaysHowVmsStartAndTemplateBuildRemovesOldTemplates() throws Exception {
        // A template of a key nothing uses any more (its guest was rebuilt): build removes it.
        Path store = Path.of(ctd.rundEnv.get("RUND_TEMPLATES"));
        Path stale = Files.createDirectories(store.resolve("0123456789abcdef01234567"));
        Files.writeString(stale.resolve("ram"), "old");
        Files.writeString(stale.resolve("state"), "old");
        Command.Result build = ctd.rund(T, "template", "build");
        assertEquals(0, build.exitCode(), build.toString());
        Matcher built = Pattern.compile("template ([0-9a-f]{24}): exists, " + Pattern.quote(store.toString()) + "/\\1\n")
                .matcher(build.stdout());
        assertTrue(built.find(), "the e2e daemon has cloned from it since the first test: " + build);
        String key = built.group(1);
        assertTrue(build.stdout().contains("template 0123456789abcdef01234567: removed\n"), build.toString());
        assertFalse(Files.exists(stale));
        assertTrue(Files.isRegularFile(store.resolve(key).resolve("ram")));

        // The daemon refills its spare VMs between starts; a start takes one.
        awaitStatus("spare VMs    2 ready of 2");
        assertEquals("spare\n", run("from-spare", "echo", "spare").stdout());
        String log = Files.readString(ctd.daemonLog);
        assertTrue(log.contains("sandbox=from-spare: takes spare VM .spare-"), log);
        assertTrue(log.matches("(?s).*sandbox=from-spare: started in [0-9,]+ ms \\([A-Z]+, clone " + key
                + " \\(spare\\)\\).*"), log);
        // Its start is kept after the sandbox is gone: `rund trace` shows each step the daemon took.
        Command.Result trace = ctd.rund(T, "trace", "from-spare");
        assertEquals(0, trace.exitCode(), trace.toString());
        assertTrue(trace.stdout().contains("\nboot     clone " + key + " (spare)\nresult   started\n"), trace.stdout());
        List<String> steps = new ArrayList<>();
        double sum = 0;
        double total = -1;
        for (String line : trace.stdout().split("\n")) {
            Matcher step = Pattern.compile("  (\\S.*\\S) +([0-9]+\\.[0-9]) ms").matcher(line);
            if (step.matches()) {
                if (step.group(1).equals("total")) {
                    total = Double.parseDouble(step.group(2));
                } else {
                    steps.add(step.group(1));
                    sum += Double.parseDouble(step.group(2));
                }
            }
        }
        assertEquals(List.of("wait for its turn", "check the store's room", "take a spare VM", "create its state directory", "record its state",
                "claim a cgroup", "prepare the shares", "resume the spare VM", "wake the agent",
                "create the container", "record it running"), steps, trace.stdout());
        // The steps cover the start: their sum is its total but for rounding (0.05 ms each).
        assertTrue(total > 0 && Math.abs(total - sum) <= 0.05 * (steps.size() + 1), sum + " ms of steps, total " + total);
        // Within "create the container", the agent's own steps, on the guest's clock, in its order;
        // they fit inside the host's step that holds them.
        Matcher create = Pattern.compile("(?s).*\n  create the container +([0-9.]+) ms\n((?:    guest: .*? +[0-9.]+ ms\n)+)"
                + "  record it running.*").matcher(trace.stdout());
        assertTrue(create.matches(), trace.stdout());
        List<String> guest = new ArrayList<>();
        double guestSum = 0;
        for (String line : create.group(2).split("\n")) {
            Matcher g = Pattern.compile("    guest: (\\S.*\\S) +([0-9]+\\.[0-9]) ms").matcher(line);
            assertTrue(g.matches(), line);
            guest.add(g.group(1));
            guestSum += Double.parseDouble(g.group(2));
        }
        assertEquals(List.of("check the request", "mount the image share", "mount the writable layer",
                "prepare the upper layer and mounts", "make its cgroup", "open its stdio",
                "fork its init and set up its rootfs", "keep its namespaces"), guest, trace.stdout());
        assertTrue(guestSum <= Double.parseDouble(create.group(1)) + 0.05 * guest.size(), trace.stdout());
        assertTrue(ctd.rund(T, "trace").stdout().matches("(?s).*\nfrom-spare +\\S+ +[0-9.]+ ms +clone " + key
                + " \\(spare\\) +started\n.*"), "the list of kept starts names it");

        assertEquals(0, ctd.ctr(T, "run", "-d", "--runtime", RUNTIME, Containerd.IMAGE, "st", "sleep", "1000")
                .exitCode());
        Command.Result status = ctd.rund(T, "status");
        assertEquals(0, status.exitCode(), status.toString());
        assertTrue(status.stdout().matches("(?s).*\naccelerator  (kvm|tcg) \\(.+\\)\n.*"), status.stdout());
        assertTrue(status.stdout().contains("templates    " + store + ", current " + key + "\n"), status.stdout());
        assertTrue(status.stdout().matches("(?s).*\nst +running +clone " + key + " +[1-9][0-9]* +\\S+ +default/st\n.*"),
                status.stdout());
        // The VM's QEMU runs as a uid of its own, with no capabilities, no_new_privs and its own
        // seccomp filter (-sandbox): no exec, no privilege changes.
        Matcher vmPid = Pattern.compile("(?m)^st +running +clone " + key + " +([1-9][0-9]*) ").matcher(status.stdout());
        assertTrue(vmPid.find(), status.stdout());
        String qemuStatus = Files.readString(Path.of("/proc", vmPid.group(1), "status"));
        assertTrue(qemuStatus.contains("\nSeccomp:\t2\n"), qemuStatus);
        assertTrue(qemuStatus.contains("\nNoNewPrivs:\t1\n"), qemuStatus);
        for (String caps : List.of("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")) {
            assertTrue(qemuStatus.contains("\n" + caps + ":\t0000000000000000\n"), caps + " in " + qemuStatus);
        }
        Matcher uid = Pattern.compile("\nUid:\t(\\d+)\t(\\d+)\t(\\d+)\t(\\d+)\n").matcher(qemuStatus);
        assertTrue(uid.find(), qemuStatus);
        int vmUid = Integer.parseInt(uid.group(1));
        assertTrue(vmUid > 2_000_000 && vmUid <= 2_000_000 + 1024, "a uid of the VM range: " + vmUid);
        for (int k = 2; k <= 4; k++) {
            assertEquals(vmUid, Integer.parseInt(uid.group(k)), "real, effective, saved and fs uid agree");
        }
        assertTrue(qemuStatus.contains("\nGid:\t2000000\t2000000\t2000000\t2000000\n"), qemuStatus);
        assertHelperConfined("st", vmPid.group(1), vmUid);
        assertVmInNamespacesOfItsOwn(vmPid.group(1), vmUid);
        assertEquals("in\n", ctd.ctr(T, "task", "exec", "--exec-id", "e1", "st", "echo", "in").stdout(),
                "the sandbox still serves its container");
        assertEquals(0, ctd.ctr(T, "task", "kill", "-s", "KILL", "st").exitCode());
        awaitStopped("st");
        assertKilled(ctd.ctr(T, "task", "delete", "st"));
        ctd.ctr(T, "container", "delete", "st");
        ctd.awaitNothingLeft();
        assertFalse(ctd.rund(T, "status").stdout().contains("\nst "), "a deleted sandbox is not listed");

        Command.Result untraced = ctd.rund(T, "trace", "never-started");
        assertEquals(1, untraced.exitCode(), untraced.toString());
        assertTrue(untraced.stderr().contains("NOT_FOUND: no start of sandbox never-started is kept"), untraced.toString());
        Command.Result bad = ctd.rund(T, "template", "bild");
        assertEquals(2, bad.exitCode(), bad.toString());
        assertTrue(bad.stderr().contains("unknown command: template bild"), bad.toString());
        Path nowhere = ctd.dir.resolve("no-daemon.sock");
        Command.Result none = Containerd.rund(T, java.util.Map.of("RUND_CONTROL_SOCKET", nowhere.toString()), "status");
        assertEquals(1, none.exitCode(), none.toString());
        assertTrue(none.stderr().contains("no daemon answers on " + nowhere), none.toString());
    }

    /**
     * The sandbox's helpers (its virtio-fs back-ends, which parse what the guest writes), one
     * per share, run as its VM's uid, no_new_privs and their seccomp filters, in the VM's
     * cgroup (the sandbox's), each in a mount namespace of its own whose root is its share:
     * the image share's with dac_read_search alone, the host-directory share's with the
     * capabilities writing as the guest's root takes but fsetid, and nothing in its share here (the
     * container binds no host directory read-write).
     */
    private static void assertHelperConfined(String sandbox, String vmPid, int vmUid) throws Exception {
        // The sandbox's cgroup holds its VM and its helpers, nothing else (the containers run in the guest).
        String memory = Files.readAllLines(Path.of("/proc", vmPid, "cgroup")).stream()
                .filter(l -> l.split(":")[1].equals("memory") || l.split(":")[1].isEmpty()).findFirst().orElseThrow()
                .split(":")[2];
        Path procs = Path.of("/sys/fs/cgroup/memory" + memory, "cgroup.procs");
        if (!Files.exists(procs)) {
            procs = Path.of("/sys/fs/cgroup" + memory, "cgroup.procs");
        }
        List<String> helpers = new ArrayList<>(Files.readAllLines(procs));
        assertTrue(helpers.remove(vmPid), "the VM in its sandbox's cgroup " + procs + ": " + helpers);
        // ... with its jailer, which waits for it (QEMU is pid 1 of a PID namespace of its own).
        String jailer = Files.readString(Path.of("/proc", vmPid, "stat")).replaceFirst(".*\\) \\S+ (\\d+) .*\\n?", "$1");
        assertTrue(helpers.remove(jailer), "the VM's jailer " + jailer + " in its cgroup too: " + helpers);
        assertTrue(Files.readSymbolicLink(Path.of("/proc", jailer, "exe")).toString().endsWith("/rund-jail"), jailer);
        assertEquals(2, helpers.size(), "two helpers beside the VM of sandbox " + sandbox + ": " + helpers);
        int writable = 0;
        for (String pid : helpers) {
            Path helper = Path.of("/proc", pid);
            assertTrue(Files.readSymbolicLink(helper.resolve("exe")).toString().endsWith("/rund-helper"),
                    "the other processes are the sandbox's helpers");
            boolean hostDirs = Files.readString(helper.resolve("cmdline")).contains("--writable");
            writable += hostDirs ? 1 : 0;
            String status = Files.readString(helper.resolve("status"));
            assertTrue(status.contains("\nUid:\t" + vmUid + "\t" + vmUid + "\t" + vmUid + "\t" + vmUid + "\n"),
                    "the helper runs as its VM's uid: " + status);
            // chown, dac_override, dac_read_search, fowner: bits 0-3 (no fsetid, bit 4); dac_read_search: bit 2.
            String caps = hostDirs ? "000000000000000f" : "0000000000000004";
            assertTrue(status.contains("\nCapEff:\t" + caps + "\n") && status.contains("\nCapPrm:\t" + caps + "\n")
                    && status.contains("\nCapAmb:\t0000000000000000\n"), "capabilities " + caps + " alone: " + status);
            assertTrue(status.contains("\nNoNewPrivs:\t1\n") && status.contains("\nSeccomp:\t2\n")
                    && status.contains("\nSeccomp_filters:\t2\n"), "its allow-list and the pin to its VM: " + status);
            assertEquals(Files.readString(Path.of("/proc", vmPid, "cgroup")), Files.readString(helper.resolve("cgroup")),
                    "the helper is charged to the sandbox's cgroups in every hierarchy, as its VM is");
            for (String ns : List.of("mnt", "net", "ipc", "uts")) {
                assertFalse(Files.readSymbolicLink(helper.resolve("ns/" + ns)).equals(Files.readSymbolicLink(Path.of("/proc/self/ns/" + ns))),
                        "a " + ns + " namespace of its own");
            }
            // Its VM is below the PID namespace it is in: it names that VM's process to reach its memory.
            assertEquals(Files.readSymbolicLink(Path.of("/proc/self/ns/pid")), Files.readSymbolicLink(helper.resolve("ns/pid")));
            Command.Result links = Command.run(T, Path.of("/"), java.util.Map.of(), List.of("nsenter", "-t", pid, "-n", "--",
                    "ip", "-o", "link"));
            assertEquals(List.of("lo"), interfaces(links), "no interface but lo: " + links);
            List<String> mounts = Files.readAllLines(helper.resolve("mountinfo"));
            assertEquals("/", mounts.getFirst().split(" ")[4], "the share is its root: " + mounts);
            if (hostDirs) {
                assertEquals(1, mounts.size(), "its share alone, nothing of the host: " + mounts);
            } else {
                assertEquals(2, mounts.size(), "the share and its one image, nothing of the host: " + mounts);
                assertTrue(mounts.get(1).split(" ")[4].startsWith("/" + sandbox + ".")
                        && mounts.get(1).split(" ")[5].startsWith("ro,"), "the image, read-only: " + mounts);
            }
        }
        assertEquals(1, writable, "one helper of each share: " + helpers);
    }

    /**
     * QEMU runs in network, mount, PID, IPC and UTS namespaces of its own (Firecracker's
     * jailer is the model): from a process in its namespaces and as its uid, a listener on
     * the host's 127.0.0.1 cannot be reached, /etc/passwd is not there, lo is the only
     * interface and the host's name is not known. The same process in the host's namespaces,
     * as the same uid, reaches all three: what the namespaces take away is real.
     */
    private static void assertVmInNamespacesOfItsOwn(String vmPid, int vmUid) throws Exception {
        for (String ns : List.of("mnt", "net", "pid", "ipc", "uts")) {
            assertFalse(Files.readSymbolicLink(Path.of("/proc", vmPid, "ns", ns)).equals(Files.readSymbolicLink(
                    Path.of("/proc/self/ns/" + ns))), "QEMU in a " + ns + " namespace of its own");
        }
        try (java.net.ServerSocket listener = new java.net.ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress())) {
            String probe = "if echo > /dev/tcp/127.0.0.1/" + listener.getLocalPort() + "; then echo connected; fi 2>/dev/null;"
                    + " if test -e /etc/passwd; then echo passwd; fi; hostname; ip -o link";
            List<String> asVm = List.of("setpriv", "--reuid", Integer.toString(vmUid), "--regid", "2000000", "--clear-groups",
                    "--no-new-privs", "/usr/bin/bash", "-c", probe);
            List<String> inside = new ArrayList<>(List.of("nsenter", "-t", vmPid, "-n", "-m", "-p", "-i", "-u", "--"));
            inside.addAll(asVm);
            Command.Result host = Command.run(T, Path.of("/"), java.util.Map.of(), asVm);
            Command.Result vm = Command.run(T, Path.of("/"), java.util.Map.of(), inside);
            assertTrue(host.stdout().startsWith("connected\npasswd\n") && interfaces(host).size() > 1,
                    "the probe, as the VM's uid in the host's namespaces, reaches them: " + host);
            assertEquals(0, vm.exitCode(), vm.toString());
            assertTrue(vm.stdout().startsWith("rund-vm\n"), "not the listener, not /etc/passwd, not the host's name: " + vm);
            assertEquals(List.of("lo"), interfaces(vm), "no interface but lo: " + vm);
        }
    }

    /** The interface names `ip -o link` printed. */
    private static List<String> interfaces(Command.Result ipLink) {
        return ipLink.stdout().lines().filter(l -> l.matches("\\d+: .*")).map(l -> l.split(":")[1].trim().split("@")[0])
                .toList();
    }

    @Test
    @Order(14)
    void rundCheckPassesWithTheDaemonUpAndDownAndBothNameTheSameTemplate() throws Exception {
        // What containerd sees: the launcher on its PATH, its configuration with rund's and runc's entries.
        java.util.Map<String, String> env = new java.util.HashMap<>(ctd.rundEnv);
        env.put("PATH", ctd.launcher.getParent() + ":" + System.getenv("PATH"));
        env.put("RUND_CONTAINERD_CONFIG", ctd.dir.resolve("config.toml").toString());
        Command.Result up = Containerd.rund(T, env, "check");
        assertEquals(0, up.exitCode(), up.toString());
        assertTrue(up.stdout().matches("(?s)ok    daemon           running, pid [1-9][0-9]*, rund \\S+ \\(commit .*"), up.stdout());
        for (String check : List.of("qemu", "vm confinement", "guest kernel", "guest initramfs", "layer store", "cgroups", "cgroup pool",
                "launcher", "daemon command", "containerd")) {
            assertTrue(Pattern.compile("(?m)^ok    " + Pattern.quote(check) + " ").matcher(up.stdout()).find(),
                    check + " ok in:\n" + up.stdout());
        }
        Matcher daemonsKey = Pattern.compile("(?m)^ok    templates        \\S+, current ([0-9a-f]{24}) built \\(the daemon's\\)$")
                .matcher(up.stdout());
        assertTrue(daemonsKey.find(), up.stdout());
        assertTrue(up.stdout().endsWith("\nrund can run sandboxes on this host (1 warning(s) above)\n")
                || up.stdout().endsWith("\nrund can run sandboxes on this host\n"), "at most TCG's warning:\n" + up.stdout());

        // With no daemon the check reads the disk, and computes the same template key the daemon uses.
        env.put("RUND_CONTROL_SOCKET", ctd.dir.resolve("no-daemon.sock").toString());
        Command.Result down = Containerd.rund(T, env, "check");
        assertEquals(0, down.exitCode(), down.toString());
        assertTrue(down.stdout().startsWith("ok    daemon           not running"), down.stdout());
        assertTrue(down.stdout().contains("\nok    templates        " + ctd.rundEnv.get("RUND_TEMPLATES") + ", current "
                + daemonsKey.group(1) + " built\n"), down.stdout());
        assertTrue(Pattern.compile("(?m)^ok    cgroup pool      pool " + ctd.pool + " \\(4 configured\\): \\d+ free, 0 claimed")
                .matcher(down.stdout()).find(), down.stdout());
    }

    @Test
    @Order(15)
    void theLauncherAndRundPrintTheSameBuild() throws Exception {
        Command.Result v = Command.run(T, null, java.util.Map.of(), List.of(ctd.launcher.toString(), "-v"));
        assertEquals(0, v.exitCode(), v.toString());
        Matcher launcher = Pattern.compile("""
                containerd-shim-rund-v2:
                  Version:    (\\S+)
                  Revision:   ([0-9a-f]{12})(-dirty)?
                  Build date: \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ
                """).matcher(v.stdout());
        assertTrue(launcher.matches(), v.stdout());
        assertEquals(v.stdout(), Command.run(T, null, java.util.Map.of(), List.of(ctd.launcher.toString(), "--version")).stdout());
        Command.Result rund = ctd.rund(T, "version");
        assertEquals(0, rund.exitCode(), rund.toString());
        assertTrue(rund.stdout().contains("  Version:    " + launcher.group(1) + "\n"), rund.stdout());
        assertTrue(rund.stdout().contains("  Revision:   " + launcher.group(2)), rund.stdout());
        assertTrue(rund.stdout().matches("(?s).*\n  Daemon:     " + Pattern.quote(launcher.group(1)) + " \\(commit "
                + launcher.group(2) + ".*, pid [1-9][0-9]*\n"), rund.stdout());

        Command.Result bad = Command.run(T, null, java.util.Map.of(), List.of(ctd.launcher.toString(), "strat"));
        assertEquals(2, bad.exitCode(), bad.toString());
        assertTrue(bad.stderr().startsWith("containerd-shim-rund-v2: unknown verb: strat\nusage: "), bad.toString());
    }

    /** Polls `rund status` until its output holds {@code line} (a minute at most). */
    private static void awaitStatus(String line) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        Command.Result r;
        while (!(r = ctd.rund(T, "status")).stdout().contains(line)) {
            assertTrue(System.nanoTime() < end, "rund status never said " + line + ":\n" + r);
            Thread.sleep(200);
        }
    }

    /** What containerd runs when it lost a task's shim connection: the launcher's delete. */
    private static Process launcherDelete(String namespace, String id) throws Exception {
        List<String> argv = List.of(ctd.launcher.toString(), "-namespace", namespace, "-address",
                ctd.socket.toString(), "-publish-binary", "/usr/bin/containerd", "-id", id, "-bundle",
                ctd.dir.resolve("state/io.containerd.runtime.v2.task/" + namespace + "/" + id).toString(), "delete");
        ProcessBuilder pb = new ProcessBuilder(argv).redirectOutput(ProcessBuilder.Redirect.PIPE);
        pb.environment().putAll(ctd.rundEnv);
        return pb.start();
    }

    private static final String TYPE = "io.kubernetes.cri.container-type";
    private static final String POD = "io.kubernetes.cri.sandbox-id";

    private static String taskPid(String taskLs, String id) {
        return taskLs.lines().filter(l -> l.startsWith(id + " ")).map(l -> l.split("\\s+")[1]).findFirst()
                .orElseThrow(() -> new AssertionError("no task " + id + " in " + taskLs));
    }

    /** ctr's task delete succeeds and warns with the exit status: SIGKILL's 137. */
    private static void assertKilled(Command.Result delete) {
        assertEquals(0, delete.exitCode(), delete.toString());
        assertTrue(delete.stderr().contains("non-zero exit code 137"), delete.toString());
    }

    private static void awaitStopped(String id) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!ctd.ctr(T, "task", "ls").stdout().matches("(?s).*" + id + "\\s+\\d+\\s+STOPPED.*")) {
            assertTrue(System.nanoTime() < end, id + " did not stop");
            Thread.sleep(100);
        }
    }
}
