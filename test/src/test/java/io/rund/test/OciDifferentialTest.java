package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
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
 * runc is the reference: the same `ctr run` with runc and with rund on one containerd, and
 * what the container sees compared (exit code, stdout, stderr). Each case prints what one
 * row of docs/oci.md is about; where a VM makes a difference unavoidable (the guest kernel
 * is not the host's, its cgroups are v2), the case prints only what must agree, and says
 * why. Refused settings are tested to fail naming the field.
 */
@Timeout(900)
class OciDifferentialTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUNC = "io.containerd.runc.v2";
    private static final String RUND = "io.containerd.rund.v2";
    private static Containerd ctd;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    /** A host directory the containers bind: a file, a subdirectory, a file only root may read. */
    private static final java.nio.file.Path HOST_DIR = java.nio.file.Path.of("/tmp/rund-oci-host-dir");

    @BeforeAll
    static void start() throws Exception {
        ctd = new Containerd("oci");
        io.rund.testing.Trees.delete(HOST_DIR);
        java.nio.file.Files.createDirectories(HOST_DIR.resolve("sub"));
        java.nio.file.Files.writeString(HOST_DIR.resolve("hello"), "from the host\n");
        java.nio.file.Files.writeString(HOST_DIR.resolve("sub/secret"), "root only\n");
        java.nio.file.Files.setPosixFilePermissions(HOST_DIR.resolve("sub/secret"),
                java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
    }

    @AfterAll
    static void stop() throws Exception {
        if (ctd != null) {
            ctd.close();
        }
        io.rund.testing.Trees.delete(HOST_DIR);
    }

    /** One container: `ctr run` options, and a shell script or a command. */
    record Case(String name, List<String> options, List<String> command) {
        static Case sh(String name, List<String> options, String script) {
            return new Case(name, options, List.of("sh", "-c", script));
        }
    }

    /** Mounts as the container sees them: destination, type and the options both kernels print alike. */
    private static final String MOUNTS = "awk '$2 !~ /^\\/sys\\/fs\\/cgroup/ && $2 !~ /^\\/proc\\/./ && $2 !~ /^\\/sys\\/./ {"
            + " n = split($4, o, \",\"); keep = \"\";"
            + " for (i = 1; i <= n; i++) if (o[i] ~ /^(ro|rw|nosuid|nodev|noexec|mode=.*|size=.*|ptmxmode=.*|gid=5)$/) keep = keep \",\" o[i];"
            + " print $2, ($2 == \"/\" ? \"(root)\" : $3), keep }' /proc/mounts";

    /** Every path containerd masks that this kernel has, printed only if something is readable there. */
    private static final String MASKED = "for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats"
            + " /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do"
            + " [ -e $p ] || continue; if [ -d $p ]; then [ -z \"$(ls -A $p)\" ] || echo leaks $p;"
            + " else [ \"$(head -c 1 $p 2>/dev/null | wc -c)\" = 0 ] || echo leaks $p; fi; done;"
            + " for p in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do"
            + " [ -e $p ] && (grep -q \" $p \" /proc/mounts && echo $p $(grep \" $p \" /proc/mounts | cut -d' ' -f4 | cut -d, -f1)); done";

    static final List<Case> CASES = List.of(
            Case.sh("pid-namespace", List.of(), "echo $$; ps -o comm > /tmp/ps; sort /tmp/ps"),
            Case.sh("read-only-root", List.of("--read-only"), "touch /x 2>&1; echo $?; touch /run/x && echo run-writable"),
            Case.sh("seccomp", List.of("--seccomp"), "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status;"
                    + " unshare -U true 2>/dev/null; echo unshare $?"),
            Case.sh("no-seccomp", List.of(), "grep -E '^Seccomp:' /proc/self/status"),
            Case.sh("capabilities", List.of(), "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status"),
            Case.sh("id", List.of(), "id"),
            Case.sh("env-and-home", List.of("--env", "A=b c"), "env | sort"),
            Case.sh("cwd", List.of("--cwd", "/etc"), "pwd"),
            Case.sh("dev", List.of(), "ls -1 /dev | sort; for l in stdin stdout stderr fd ptmx; do readlink /dev/$l; done;"
                    + " stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty"),
            Case.sh("dev-stderr", List.of(), "echo to-err > /dev/stderr; echo to-out > /dev/stdout"),
            Case.sh("mounts", List.of(), MOUNTS),
            Case.sh("masked-and-read-only-paths", List.of(), MASKED),
            Case.sh("tmpfs-mount", List.of("--mount", "type=tmpfs,destination=/t,options=size=1m:mode=1700"),
                    "grep ' /t ' /proc/mounts | cut -d' ' -f2,3; stat -c %a /t; stat -f -c '%b %S' /t"),
            Case.sh("host-directory-read-only", List.of("--mount", "type=bind,src=/tmp/rund-oci-host-dir,dst=/h,options=rbind:ro"),
                    "ls -R /h; cat /h/hello /h/sub/secret; stat -c '%a %u' /h/sub/secret; touch /h/x 2>&1; echo $?;"
                    + " grep ' /h ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1"),
            Case.sh("devices", List.of(), "mknod /dev/xsda b 8 0 && head -c 1 /dev/xsda > /dev/null; echo $?;"
                    + " head -c 1 /dev/zero | wc -c; mknod /dev/xmem c 1 1 && head -c 1 /dev/xmem > /dev/null; echo $?"),
            Case.sh("network", List.of(), "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"),
            Case.sh("nofile", List.of(), "ulimit -n; ulimit -Hn"),
            Case.sh("hostname", List.of(), "hostname"),
            Case.sh("memory-limit", List.of("--memory-limit", "33554432"),
                    "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null; echo survived"),
            Case.sh("memory-2g", List.of("--memory-limit", "2147483648"),
                    "dd if=/dev/zero of=/dev/null bs=700M count=1 2>/dev/null; echo survived"),
            Case.sh("cpus", List.of("--cpus", "2"), "nproc"),
            Case.sh("exit-code", List.of(), "exit 42"),
            Case.sh("child-killed", List.of(), "sh -c 'kill -9 $$'; echo child $?"),
            Case.sh("init-ignores-kill", List.of(), "kill -9 $$; echo still here"),
            Case.sh("umask", List.of(), "umask; touch /tmp/f; stat -c %a /tmp/f"),
            Case.sh("kernel-log", List.of(), "dmesg > /dev/null 2>&1; echo dmesg $?"),
            // The writable layer's writes are the guest's to cache: none charged to the VM's host
            // cgroup (under rund the host once OOM-killed QEMU here).
            Case.sh("big-write", List.of(), "head -c 200000000 /dev/zero > /big; echo write $?; sync; echo sync $?;"
                    + " ls -l /big | awk '{print $5}'"));

    private static Command.Result run(String runtime, String id, Case c) throws Exception {
        List<String> args = new ArrayList<>(List.of("run", "--rm", "--runtime", runtime));
        args.addAll(c.options());
        args.addAll(List.of(Containerd.IMAGE, id));
        args.addAll(c.command());
        return ctd.ctr(T, args.toArray(String[]::new));
    }

    @Test
    void whatAContainerSeesIsWhatRuncShowsIt() throws Exception {
        List<String> differences = new ArrayList<>();
        // containerd's events as a user sees them: which containers it was told were OOM-killed.
        java.nio.file.Path eventLog = ctd.dir.resolve("oci-events.log");
        Process events = new ProcessBuilder(Containerd.CTR, "-a", ctd.socket.toString(), "events")
                .redirectErrorStream(true).redirectOutput(eventLog.toFile()).start();
        for (Case c : CASES) {
            Command.Result runc = run(RUNC, "runc-" + c.name(), c);
            Command.Result rund = run(RUND, "rund-" + c.name(), c);
            String expected = "exit " + runc.exitCode() + "\n--- stdout\n" + runc.stdout() + "--- stderr\n" + runc.stderr();
            String actual = "exit " + rund.exitCode() + "\n--- stdout\n" + rund.stdout() + "--- stderr\n" + rund.stderr();
            if (!expected.equals(actual)) {
                differences.add("== " + c.name() + " " + c.options() + "\n-- runc:\n" + expected + "\n-- rund:\n" + actual);
            }
        }
        Thread.sleep(1000); // the last events on their way
        events.destroy();
        events.waitFor(10, TimeUnit.SECONDS);
        java.util.Set<String> runcOom = new java.util.TreeSet<>();
        java.util.Set<String> rundOom = new java.util.TreeSet<>();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("/tasks/oom \\{\"container_id\":\"(runc|rund)-([^\"]+)\"")
                .matcher(java.nio.file.Files.readString(eventLog));
        while (m.find()) {
            (m.group(1).equals("runc") ? runcOom : rundOom).add(m.group(2));
        }
        assertTrue(runcOom.contains("memory-limit"), "runc's memory-limit case is OOM-killed: " + runcOom);
        assertEquals(runcOom, rundOom, "the cases containerd heard were OOM-killed: under runc (expected) and under rund");
        assertTrue(differences.isEmpty(), differences.size() + " of " + CASES.size() + " cases differ:\n"
                + String.join("\n", differences));
        // A VM sized for 2 GiB is a clone of its own size's template, not a cold boot.
        String log = java.nio.file.Files.readString(ctd.daemonLog);
        assertTrue(log.matches("(?s).*sandbox=rund-memory-2g: started in [0-9,]+ ms \\([A-Z]+, clone [0-9a-f]{24}\\).*"), log);
    }

    /** Waits (at most a minute) until containerd lists task {@code id} as running. */
    private static void awaitRunning(String id) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!ctd.ctr(T, "task", "ls").stdout().matches("(?s).*" + id + "\\s+\\d+\\s+RUNNING.*")) {
            assertTrue(System.nanoTime() < end, id + " did not start");
            Thread.sleep(100);
        }
    }

    @Test
    void anExecSeesTheContainersNamespacesAndSettings() throws Exception {
        List<String> differences = new ArrayList<>();
        String script = "[ $$ -ne 1 ] && echo not-init; ps -o comm > /tmp/ps; sort /tmp/ps; echo HOME=$HOME;"
                + " grep -E '^(Cap(Eff|Bnd)|Seccomp):' /proc/self/status; hostname; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
        for (String runtime : List.of(RUNC, RUND)) {
            String id = (runtime.equals(RUNC) ? "runc" : "rund") + "-exec";
            var task = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    // One process, so that what ps shows does not depend on when a loop forks.
                    return ctd.ctr(T, "run", "--rm", "--seccomp", "--runtime", runtime, Containerd.IMAGE, id, "sleep",
                            "100000");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            awaitRunning(id);
            Command.Result exec = ctd.ctr(T, "task", "exec", "--exec-id", "e1", id, "sh", "-c", script);
            differences.add("exit " + exec.exitCode() + "\n" + exec.stdout() + exec.stderr());
            // sleep is PID 1 of its namespace, which ignores TERM (as under runc): KILL.
            assertEquals(0, ctd.ctr(T, "task", "kill", "-s", "KILL", id).exitCode());
            assertEquals(137, task.get(60, TimeUnit.SECONDS).exitCode());
        }
        assertEquals(differences.get(0), differences.get(1), "an exec under runc (expected) and under rund");
    }

    @Test
    void whatAVmCannotHonourIsRefusedNamingIt() throws Exception {
        Command.Result hostNet = ctd.ctr(T, "run", "--rm", "--net-host", "--runtime", RUND, Containerd.IMAGE, "rund-nethost",
                "true");
        assertNotEquals(0, hostNet.exitCode(), hostNet.toString());
        assertTrue(hostNet.stderr().contains("network absent"), hostNet.stderr());
        Command.Result device = ctd.ctr(T, "run", "--rm", "--device", "/dev/loop-control", "--runtime", RUND,
                Containerd.IMAGE, "rund-device", "true");
        assertNotEquals(0, device.exitCode(), device.toString());
        assertTrue(device.stderr().contains("/dev/loop-control"), device.stderr());
        assertEquals(0, ctd.ctr(T, "run", "--rm", "--net-host", "--runtime", RUNC, Containerd.IMAGE, "runc-nethost", "true")
                .exitCode(), "runc runs it: the refusal is rund's own");
    }

    /**
     * A read-only host directory laid out as the kubelet lays out a configMap ({@code key ->
     * ..data/key}, {@code ..data -> ..v1}) and updated as it updates one: a new directory, a
     * new {@code ..data} renamed over the old. The container sees the new value, under runc
     * at once, under rund within its share's second of caching.
     */
    @Test
    void aReadOnlyHostDirectoryFollowsTheHostsUpdates() throws Exception {
        String script = "echo first $(cat /h/key); for i in $(seq 150); do"
                + " [ \"$(cat /h/key)\" = v2 ] && { echo updated $(cat /h/key); exit 0; }; sleep 0.2; done; echo never updated";
        List<String> seen = new ArrayList<>();
        for (String runtime : List.of(RUNC, RUND)) {
            String id = (runtime.equals(RUNC) ? "runc" : "rund") + "-configmap";
            java.nio.file.Path d = java.nio.file.Path.of("/tmp/rund-oci-configmap-" + id);
            io.rund.testing.Trees.delete(d);
            java.nio.file.Files.createDirectories(d.resolve("..v1"));
            java.nio.file.Files.writeString(d.resolve("..v1/key"), "v1\n");
            java.nio.file.Files.createSymbolicLink(d.resolve("..data"), java.nio.file.Path.of("..v1"));
            java.nio.file.Files.createSymbolicLink(d.resolve("key"), java.nio.file.Path.of("..data/key"));
            var task = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    return ctd.ctr(T, "run", "--rm", "--mount", "type=bind,src=" + d + ",dst=/h,options=rbind:ro", "--runtime",
                            runtime, Containerd.IMAGE, id, "sh", "-c", script);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            awaitRunning(id);
            Thread.sleep(1000); // past its first read
            java.nio.file.Files.createDirectories(d.resolve("..v2"));
            java.nio.file.Files.writeString(d.resolve("..v2/key"), "v2\n");
            java.nio.file.Files.createSymbolicLink(d.resolve("..data_tmp"), java.nio.file.Path.of("..v2"));
            java.nio.file.Files.move(d.resolve("..data_tmp"), d.resolve("..data"), java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            Command.Result r = task.get(90, TimeUnit.SECONDS);
            seen.add("exit " + r.exitCode() + "\n" + r.stdout() + r.stderr());
            io.rund.testing.Trees.delete(d);
        }
        assertEquals("exit 0\nfirst v1\nupdated v2\n", seen.get(0), "runc");
        assertEquals(seen.get(0), seen.get(1), "under runc (expected) and under rund");
    }

    /** What root of a container does in a host directory bound read-write: the same files, owners and modes on the host. */
    private static final String WRITES_AS_ROOT = "cd /h || exit 1; echo data > new; mkdir -m 750 d; ln -s new lnk; ln new hard;"
            + " mv new moved; echo more >> moved; chmod 0750 moved; chown 1:2 moved; touch -d '2000-01-02 03:04:05' moved;"
            + " mkfifo fifo; mkdir -p a/b/c; echo nested > a/b/c/f; mv a z; cat z/b/c/f; rm hard; rmdir d;"
            + " dd if=/dev/zero of=big bs=65536 count=40 2>/dev/null && stat -c '%n %s' big; truncate -s 1000000 big;"
            + " echo x >> root-file;"
            + " mkdir open; chmod 777 open; mkdir sticky; chmod 1775 sticky; chown 0:7 sticky; mkdir sticky/in;"
            + " echo twice > moved2; mv -f moved2 z/b/c/f; cat z/b/c/f; rm -r z/b; ls -A z;"
            + " ls -ln | awk '{print $1, $3, $4, $5, $9, $10, $11}' | sort; stat -c '%n %a %u %g %s %Y' moved; stat -c '%n %a %u %g' sticky/in";
    /** ... and a user that is not root: what the host's modes allow it, and files it makes are its own. */
    private static final String WRITES_AS_USER = "cd /h || exit 1; echo mine > open/mine; stat -c '%u %g %a' open/mine;"
            + " echo no > root-file 2>&1; echo $?; cat secret 2>&1; echo $?; mkdir not-mine 2>&1; echo $?;"
            + " ls -ln open | tail -n +2 | awk '{print $1, $3, $4, $5, $9}'";

    /** A host directory for one runtime's container, as the tests expect it: a root-only file and a file to append to. */
    private static java.nio.file.Path freshHostDir(String name) throws Exception {
        java.nio.file.Path d = java.nio.file.Path.of("/tmp/rund-oci-rw-" + name);
        io.rund.testing.Trees.delete(d);
        java.nio.file.Files.createDirectories(d);
        java.nio.file.Files.writeString(d.resolve("root-file"), "from the host\n");
        java.nio.file.Files.writeString(d.resolve("secret"), "root only\n");
        java.nio.file.Files.setPosixFilePermissions(d.resolve("secret"),
                java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        return d;
    }

    /** The host's view of a directory: every entry with its type, mode, owner, size and contents' hash. */
    private static String hostView(java.nio.file.Path d) throws Exception {
        Command.Result r = Command.run(java.time.Duration.ofSeconds(30), d, java.util.Map.of(), List.of("sh", "-c",
                "find . -printf '%p %y %m %U %G %s\\n' | sort && find . -type f -exec md5sum {} + | sort -k2"));
        assertEquals(0, r.exitCode(), r.toString());
        return r.stdout();
    }

    @Test
    void aHostDirectoryBoundReadWriteIsWrittenAsRuncWritesIt() throws Exception {
        List<String> seen = new ArrayList<>();
        List<String> onHost = new ArrayList<>();
        for (String runtime : List.of(RUNC, RUND)) {
            String name = runtime.equals(RUNC) ? "runc" : "rund";
            java.nio.file.Path d = freshHostDir(name);
            String mount = "type=bind,src=" + d + ",dst=/h,options=rbind:rw";
            Command.Result root = ctd.ctr(T, "run", "--rm", "--mount", mount, "--runtime", runtime, Containerd.IMAGE,
                    name + "-rw-root", "sh", "-c", WRITES_AS_ROOT);
            // ctr 1.6 has no --user: the image's su runs the script as nobody (65534).
            Command.Result user = ctd.ctr(T, "run", "--rm", "--mount", mount, "--runtime", runtime, Containerd.IMAGE,
                    name + "-rw-user", "su", "-s", "/bin/sh", "nobody", "-c", WRITES_AS_USER);
            seen.add("root: exit " + root.exitCode() + "\n" + root.stdout() + root.stderr() + "user: exit " + user.exitCode()
                    + "\n" + user.stdout() + user.stderr());
            onHost.add(hostView(d));
        }
        assertEquals(seen.get(0), seen.get(1), "what the containers saw: under runc (expected) and under rund");
        assertEquals(onHost.get(0), onHost.get(1), "what the host holds after: under runc (expected) and under rund");
        // The one difference a VM makes: no device nodes on the host (runc's container root may make them).
        java.nio.file.Path d = freshHostDir("rund-mknod");
        Command.Result mknod = ctd.ctr(T, "run", "--rm", "--mount", "type=bind,src=" + d + ",dst=/h,options=rbind:rw",
                "--runtime", RUND, Containerd.IMAGE, "rund-rw-mknod", "sh", "-c", "mknod /h/sda b 8 0");
        assertNotEquals(0, mknod.exitCode(), mknod.toString());
        assertTrue(mknod.stderr().contains("Operation not permitted"), mknod.stderr());
        assertTrue(java.nio.file.Files.notExists(d.resolve("sda")));
        // ... and no set-ID bit on a host file (runc's root keeps 4755 and 2775), docs/oci.md.
        Command.Result setId = ctd.ctr(T, "run", "--rm", "--mount", "type=bind,src=" + d + ",dst=/h,options=rbind:rw",
                "--runtime", RUND, Containerd.IMAGE, "rund-rw-setid", "sh", "-c",
                "cd /h; echo x > s; chmod 4755 s; mkdir g; chmod 2775 g; stat -c '%n %a' s g");
        assertEquals("s 755\ng 775\n", setId.stdout(), setId.toString());
        assertEquals("rwxr-xr-x", java.nio.file.attribute.PosixFilePermissions.toString(
                java.nio.file.Files.getPosixFilePermissions(d.resolve("s"))));
        assertEquals(0755, (Integer) java.nio.file.Files.getAttribute(d.resolve("s"), "unix:mode") & 07777);
        assertEquals(0775, (Integer) java.nio.file.Files.getAttribute(d.resolve("g"), "unix:mode") & 07777);
        for (String name : List.of("runc", "rund", "rund-mknod")) {
            io.rund.testing.Trees.delete(java.nio.file.Path.of("/tmp/rund-oci-rw-" + name));
        }
    }
}
