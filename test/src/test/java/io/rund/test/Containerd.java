package io.rund.test;

import io.rund.testing.XfsLoop;
import io.rund.testing.Command;
import io.rund.testing.Trees;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * A real containerd (Debian's 1.6) of the test's own: private root, state and sockets,
 * with rund's launcher on its PATH and the launcher pointed at a daemon of the test's own
 * (state dir, cgroup pool, store on a loop XFS, log). The daemon runs from this JVM's
 * classpath, so it is exactly the code under test. {@link #close} stops both and removes
 * what containerd's runc shim and ctr leave under /run/containerd.
 */
final class Containerd implements AutoCloseable {

    static final String IMAGE = "docker.io/rund/busybox:latest";
    /** The pods' sandbox image (hack/make-image --pause). */
    static final String PAUSE = "docker.io/rund/pause:latest";
    /** The namespace where containerd's CRI plugin keeps its images and containers. */
    static final String CRI_NAMESPACE = "k8s.io";
    static final Path REPO = Path.of("").toAbsolutePath().getParent();
    /**
     * The containerd under test: the directory holding its containerd, ctr and runc shim
     * (rund.containerd; the system's, /usr/bin, by default; hack/install-deps unpacks 1.7
     * and 2.x from Debian's archive beside it), and its version as it says.
     */
    static final Path BIN = Path.of(System.getProperty("rund.containerd", "/usr/bin"));
    static final String CTR = BIN.resolve("ctr").toString();
    static final String VERSION = version();
    /**
     * How containerd 2.x's CRI makes rund's pods (rund.cri.sandboxer): "" or "podsandbox"
     * runs a pause container with rund, "shim" asks rund's Sandbox API for the pod's VM.
     */
    static final String SANDBOXER = System.getProperty("rund.cri.sandboxer", "");

    private static String version() {
        try {
            String out = Command.run(Duration.ofSeconds(30), null, Map.of(),
                    List.of(BIN.resolve("containerd").toString(), "--version")).ok().stdout();
            java.util.regex.Matcher m = java.util.regex.Pattern.compile(" v?(\\d+\\.\\d+\\.\\d+)").matcher(out);
            return m.find() ? m.group(1) : out.strip();
        } catch (Exception e) {
            throw new AssertionError("containerd in " + BIN + " does not say its version: " + e, e);
        }
    }

    /** Whether the containerd under test is {@code major} or later. */
    static boolean atLeast(int major, int minor) {
        String[] v = VERSION.split("\\.");
        int ma = Integer.parseInt(v[0]);
        return ma > major || (ma == major && Integer.parseInt(v[1]) >= minor);
    }

    /** The daemon's spare VMs (the default). */
    static final int SPARES = 2;

    final Path dir;
    final Path socket;
    final Path rundState;
    /** Templates of the tests' own; kept between runs, as a node keeps its (keyed by kernel and size). */
    static final Path TEMPLATES = Path.of("/var/lib/rund-test/templates");
    final Path daemonLog;
    /** The daemon's configuration file (RUND_CONFIG): absent, unless a test writes it. */
    final Path rundConfig;
    final String pool;
    final XfsLoop scratch;
    final Path launcher;
    final Map<String, String> rundEnv = new HashMap<>();
    /** The pods' network: a bridge of the test's own (CNI bridge + host-local), its subnet and gateway. */
    final String bridge;
    final String podSubnet;
    final String podGateway;
    private final Process containerd;

    Containerd(String name) throws Exception {
        this(name, Map.of());
    }

    /** A containerd whose daemon also gets {@code rundSettings} (RUND_* variables, over the defaults here). */
    Containerd(String name, Map<String, String> rundSettings) throws Exception {
        dir = Files.createTempDirectory(Path.of("/tmp"), "rund-e2e-");
        socket = dir.resolve("containerd.sock");
        rundState = dir.resolve("rund");
        daemonLog = dir.resolve("rund-daemon.log");
        rundConfig = dir.resolve("rund.toml");
        pool = "rund-e2e-" + name + "-" + ProcessHandle.current().pid();
        scratch = new XfsLoop(16384); // sparse: room to promise ~60 layers of 256 MiB

        Path bin = Files.createDirectories(dir.resolve("bin"));
        Command.run(Duration.ofMinutes(2), REPO.resolve("shim/launcher"), Map.of(),
                List.of("make", "-s", "OUT=" + bin)).ok();
        Command.run(Duration.ofMinutes(2), REPO.resolve("vm-template/jailer"), Map.of(),
                List.of("make", "-s", "OUT=" + bin)).ok();
        Command.run(Duration.ofMinutes(2), REPO.resolve("rootfs/helper"), Map.of(),
                List.of("make", "-s", "OUT=" + bin)).ok(); // rund-helper, beside the jailer as installed
        Path pause = Files.createDirectories(bin.resolve("pause-rootfs")); // rund's pause, beside the jailer too
        Files.createDirectories(pause.resolve("proc"));
        Files.createDirectories(pause.resolve("dev"));
        Command.run(Duration.ofMinutes(2), REPO, Map.of(), List.of("gcc", "-O2", "-static", "-o",
                pause.resolve("pause").toString(), "hack/pause/pause.c")).ok();
        Path daemon = dir.resolve("rund-daemon");
        // A test holds the daemon down (a relay restarting it waits) while daemon.hold exists.
        Files.writeString(daemon, "#!/bin/sh\nwhile [ -e '" + dir.resolve("daemon.hold") + "' ]; do sleep 0.05; done\nexec "
                + Path.of(System.getProperty("java.home"), "bin", "java")
                + " @" + System.getProperty("rund.jvm.argfile") + " -cp '" + System.getProperty("java.class.path")
                + "' io.rund.shim.control.Main\n");
        Files.setPosixFilePermissions(daemon, PosixFilePermissions.fromString("rwxr-xr-x"));

        // Pod networking as a node has it: Debian's CNI plugins, a bridge with the gateway on it.
        int net = (int) (ProcessHandle.current().pid() % 200) + 20;
        bridge = "rundbr" + ProcessHandle.current().pid() % 100000;
        podSubnet = "10.203." + net + ".0/24";
        podGateway = "10.203." + net + ".1";
        Path cniConf = Files.createDirectories(dir.resolve("cni/net.d"));
        Files.writeString(cniConf.resolve("10-pods.conflist"), """
                {"cniVersion": "1.0.0", "name": "rund-test-pods", "plugins": [
                  {"type": "bridge", "bridge": "%s", "isGateway": true, "ipMasq": false,
                   "ipam": {"type": "host-local", "dataDir": "%s", "ranges": [[{"subnet": "%s", "gateway": "%s"}]],
                            "routes": [{"dst": "0.0.0.0/0"}]}}]}
                """.formatted(bridge, dir.resolve("cni/ipam"), podSubnet, podGateway));
        Path config = dir.resolve("config.toml");
        Files.writeString(config, """
                version = 2
                root = "%1$s/root"
                state = "%1$s/state"
                [grpc]
                  address = "%1$s/containerd.sock"
                [ttrpc]
                  address = "%1$s/containerd.sock.ttrpc"
                [plugins."io.containerd.grpc.v1.cri"]
                  disable_cgroup = false
                  sandbox_image = "%2$s"
                  # runc pods: this host's root lacks CAP_SYS_RESOURCE, so runc cannot set CRI's -998.
                  restrict_oom_score_adj = true
                [plugins."io.containerd.grpc.v1.cri".cni]
                  bin_dir = "/usr/lib/cni"
                  conf_dir = "%1$s/cni/net.d"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                  runtime_type = "io.containerd.runc.v2"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rund]
                  runtime_type = "io.containerd.rund.v2"
                """.formatted(dir, PAUSE) + (SANDBOXER.isEmpty() ? "" : "  sandboxer = \"" + SANDBOXER + "\"\n"));
        ProcessBuilder pb = new ProcessBuilder(BIN.resolve("containerd").toString(), "--config", config.toString())
                .redirectErrorStream(true).redirectOutput(dir.resolve("containerd.log").toFile());
        Map<String, String> env = pb.environment();
        // Its own runc shim first: containerd finds shims on PATH.
        env.put("PATH", bin + ":" + BIN + ":" + env.getOrDefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
        env.put("RUND_DAEMON", daemon.toString());
        env.put("RUND_CONTROL_SOCKET", rundState.resolve("rund.sock").toString());
        env.put("RUND_STATE_DIR", rundState.toString());
        env.put("RUND_LOG", daemonLog.toString());
        env.put("RUND_SCRATCH", scratch.mount.resolve("scratch").toString());
        env.put("RUND_CGROUP_POOL", pool);
        env.put("RUND_POOL_SIZE", "4");
        // Templates of the tests' own; kept between runs, as a node keeps its (keyed by kernel and size).
        // Nested as a node's (/var/lib/rund/templates), under a parent closed as older rund left it:
        // VMs run as uids of their own and must still reach the templates' RAM.
        Path templates = TEMPLATES;
        if (!Files.exists(templates.getParent())) {
            Files.createDirectory(templates.getParent(), PosixFilePermissions.asFileAttribute(
                    PosixFilePermissions.fromString("rwx------")));
        }
        env.put("RUND_TEMPLATES", templates.toString());
        env.put("RUND_CONFIG", rundConfig.toString()); // not the machine's /etc/rund
        env.put("RUND_JAILER", bin.resolve("rund-jail").toString()); // VMs and helpers as uids of their own
        env.putAll(rundSettings);
        for (String k : env.keySet()) {
            if (k.startsWith("RUND_")) {
                rundEnv.put(k, env.get(k));
            }
        }
        launcher = bin.resolve("containerd-shim-rund-v2");
        System.out.println("containerd " + VERSION + " (" + BIN + ") for " + name);
        containerd = pb.start();
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(socket)) {
            if (!containerd.isAlive() || System.nanoTime() > end) {
                throw new AssertionError("containerd did not start: " + Files.readString(dir.resolve("containerd.log")));
            }
            Thread.sleep(20);
        }
        Path image = dir.resolve("busybox.tar");
        Command.run(Duration.ofMinutes(1), REPO, Map.of(), List.of("hack/make-image", image.toString(), IMAGE)).ok();
        ctr(Duration.ofMinutes(1), "images", "import", image.toString()).ok();
    }

    /** Imports the busybox and pause images where CRI finds them (offline: they are built here). */
    void importCriImages() throws IOException, InterruptedException {
        Path pause = dir.resolve("pause.tar");
        Command.run(Duration.ofMinutes(1), REPO, Map.of(), List.of("hack/make-image", "--pause", pause.toString(), PAUSE)).ok();
        ctr(Duration.ofMinutes(1), "-n", CRI_NAMESPACE, "images", "import", pause.toString()).ok();
        ctr(Duration.ofMinutes(1), "-n", CRI_NAMESPACE, "images", "import", dir.resolve("busybox.tar").toString()).ok();
    }

    Command.Result ctr(Duration bound, String... args) throws IOException, InterruptedException {
        List<String> argv = new ArrayList<>(List.of(CTR, "-a", socket.toString()));
        argv.addAll(List.of(args));
        return Command.run(bound, null, Map.of(), argv);
    }

    /** Like {@link #ctr} with stdin fed from {@code input}. */
    Command.Result ctrWithInput(Duration bound, String input, String... args) throws Exception {
        Path in = Files.writeString(dir.resolve("stdin-" + System.nanoTime()), input);
        List<String> argv = new ArrayList<>(List.of(CTR, "-a", socket.toString()));
        argv.addAll(List.of(args));
        Process p = new ProcessBuilder(argv).redirectInput(in.toFile()).start();
        var out = Command.drain(p.getInputStream());
        var err = Command.drain(p.getErrorStream());
        if (!p.waitFor(bound.toMillis(), TimeUnit.MILLISECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("ctr did not finish within " + bound);
        }
        return new Command.Result(argv, p.exitValue(), out.join(), err.join());
    }

    /** A test class's watcher that prints {@link #diagnostics} of its containerd when a test fails. */
    static TestWatcher dumpOnFailure(Supplier<Containerd> of) {
        return new TestWatcher() {
            @Override
            public void testFailed(ExtensionContext context, Throwable cause) {
                Containerd ctd = of.get();
                if (ctd != null) {
                    System.err.println("=== " + context.getDisplayName() + " failed\n" + ctd.diagnostics());
                }
            }
        };
    }

    /** Everything that explains a failure: containerd's log, the daemon's log. */
    String diagnostics() {
        StringBuilder b = new StringBuilder();
        for (Path p : List.of(dir.resolve("containerd.log"), daemonLog)) {
            b.append("--- ").append(p).append('\n');
            try {
                String s = Files.readString(p);
                b.append(s.length() > 20000 ? s.substring(s.length() - 20000) : s);
            } catch (IOException e) {
                b.append('<').append(e).append(">\n");
            }
        }
        return b.toString();
    }

    /** Runs the `rund` command (this JVM's classes) against the test's daemon. */
    Command.Result rund(Duration bound, String... args) throws IOException, InterruptedException {
        return rund(bound, rundEnv, args);
    }

    /** Runs the `rund` command with {@code env} as the RUND_* settings. */
    static Command.Result rund(Duration bound, Map<String, String> env, String... args)
            throws IOException, InterruptedException {
        List<String> argv = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "@" + System.getProperty("rund.jvm.argfile"), "-cp", System.getProperty("java.class.path"),
                "io.rund.shim.cli.Cli"));
        argv.addAll(List.of(args));
        return Command.run(bound, null, env, argv);
    }

    /**
     * No sandbox, task endpoint, VM, mount or claimed cgroup is left. The daemon's spare VMs
     * (paused clones in sandboxes/.spare-N, at most {@link #SPARES}) are not leftovers:
     * their QEMUs are told apart by the pids in their state files.
     */
    /**
     * {@link #assertNothingLeft}, given 30 s: cleanups run on after containerd's calls
     * return (a relay's exit, a released cgroup, a helper's end).
     */
    void awaitNothingLeft() throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            try {
                assertNothingLeft();
                return;
            } catch (AssertionError e) {
                if (System.nanoTime() > end) {
                    throw e;
                }
                Thread.sleep(200);
            }
        }
    }

    void assertNothingLeft() throws Exception {
        Path sandboxes = rundState.resolve("sandboxes");
        if (Files.exists(sandboxes)) {
            try (Stream<Path> s = Files.list(sandboxes)) {
                List<Path> left = s.filter(p -> !p.getFileName().toString().startsWith(".spare-")).toList();
                if (!left.isEmpty()) {
                    throw new AssertionError("sandboxes left: " + left);
                }
            }
        }
        List<Long> sparePids = sparePids();
        if (sparePids.size() > SPARES) {
            throw new AssertionError("more spare VMs than the daemon keeps: " + sparePids);
        }
        try (Stream<Path> s = Files.list(rundState.resolve("t"))) {
            List<Path> left = s.toList();
            if (!left.isEmpty()) {
                throw new AssertionError("task endpoints left: " + left);
            }
        }
        // A spare VM's shares are mounted while it waits (its helpers serve them); nothing else may be.
        List<String> mounts = Files.readAllLines(Path.of("/proc/self/mountinfo")).stream()
                .map(l -> l.split(" ")[4])
                .filter(m -> m.startsWith(rundState + "/"))
                .filter(m -> !m.matches(java.util.regex.Pattern.quote(rundState.toString()) + "/sandboxes/\\.spare-[^/]+/(shared|hostdirs)"))
                .toList();
        if (!mounts.isEmpty()) {
            throw new AssertionError("mounts left under " + rundState + ": " + mounts);
        }
        List<String> vms = sandboxProcesses();
        if (!vms.isEmpty()) {
            throw new AssertionError("processes left: " + vms);
        }
        List<String> helpers = strayHelpers();
        if (!helpers.isEmpty()) {
            throw new AssertionError("helpers left: " + helpers);
        }
        List<Long> relays = relays();
        if (!relays.isEmpty()) {
            throw new AssertionError("relays left: " + relays);
        }
        // A template build's VM runs in a directory of the temporary directory; the builds are done.
        List<String> builds = ProcessHandle.allProcesses().map(p -> cwd(p) + " " + p.info().commandLine().orElse(""))
                .filter(c -> c.startsWith(System.getProperty("java.io.tmpdir") + "/rund-template-")).toList();
        if (!builds.isEmpty()) {
            throw new AssertionError("template builds left: " + builds);
        }
        try (Stream<Path> s = Files.list(scratch.mount.resolve("scratch"))) {
            // (A standby daemon rehearsing its start has a store of its own there for a moment.)
            // Its images, one per layer size a test asked for, and the disks of the templates
            // there are (each named by its template's link); no layer is ever named.
            List<String> files = s.filter(p -> !io.rund.vm.template.TemplateStore.holdsDisk(TEMPLATES, p)).map(p -> p.getFileName().toString())
                    .filter(n -> !n.startsWith(".rehearsal-")).filter(n -> !n.matches("ext4-[0-9]+M\\.img")).toList();
            if (!files.isEmpty()) {
                throw new AssertionError("store holds " + files);
            }
        }
        for (String hierarchy : List.of("memory", "cpu", "pids", "cpuacct")) {
            Path root = Path.of("/sys/fs/cgroup", hierarchy, pool);
            if (Files.isDirectory(root)) {
                try (Stream<Path> s = Files.list(root)) {
                    List<String> claimed = s.filter(Files::isDirectory).map(p -> p.getFileName().toString())
                            .filter(n -> !n.startsWith("free-")).toList();
                    if (!claimed.isEmpty()) {
                        throw new AssertionError("cgroups outside the pool in " + root + ": " + claimed);
                    }
                }
            }
        }
    }

    /** The pids of the daemon's spare VMs, from their state files. */
    List<Long> sparePids() throws IOException {
        List<Long> pids = new ArrayList<>();
        Path sandboxes = rundState.resolve("sandboxes");
        if (!Files.exists(sandboxes)) {
            return pids;
        }
        try (Stream<Path> s = Files.list(sandboxes)) {
            for (Path p : s.filter(d -> d.getFileName().toString().startsWith(".spare-")).toList()) {
                try {
                    var m = java.util.regex.Pattern.compile("\"vmPid\":(\\d+)").matcher(Files.readString(p.resolve("state.json")));
                    if (m.find()) {
                        pids.add(Long.parseLong(m.group(1)));
                    }
                } catch (IOException gone) {
                    // taken by a sandbox, or not written yet
                }
            }
        }
        return pids;
    }

    /**
     * The command lines of the processes of the daemon's sandboxes: those naming its state,
     * except the spare VMs, whose command lines name a spare's directory that is still one
     * (a spare being launched has no pid in its state file yet; a spare a sandbox took has
     * had its directory renamed to the sandbox's).
     */
    List<String> sandboxProcesses() throws IOException {
        Path sandboxes = rundState.resolve("sandboxes");
        var spareDir = java.util.regex.Pattern.compile(java.util.regex.Pattern.quote(sandboxes + "/") + "(\\.spare-[0-9-]+)(/|$)");
        // A jailed QEMU's command line names no path of the state: it runs in its VM's directory.
        return ProcessHandle.allProcesses().map(p -> p.info().commandLine().orElse("") + " (cwd " + cwd(p) + "/)")
                .filter(c -> c.contains(sandboxes + "/"))
                .filter(c -> {
                    var m = spareDir.matcher(c);
                    return !(m.find() && Files.isDirectory(sandboxes.resolve(m.group(1))));
                }).toList();
    }

    /**
     * The helpers (rund-helper, this fixture's build) that belong to no waiting spare VM: a
     * spare's helper is named after its directory, which a sandbox taking it renames.
     */
    List<String> strayHelpers() {
        Path sandboxes = rundState.resolve("sandboxes");
        String exe = dir.resolve("bin/rund-helper").toString();
        return ProcessHandle.allProcesses().filter(p -> {
            try {
                return Files.readSymbolicLink(Path.of("/proc", Long.toString(p.pid()), "exe")).toString().equals(exe);
            } catch (IOException | UnsupportedOperationException e) {
                return false;
            }
        }).map(p -> p.info().commandLine().orElse("pid " + p.pid())).filter(c -> {
            var m = java.util.regex.Pattern.compile("--name (\\.spare-[0-9-]+) ").matcher(c + " ");
            return !(m.find() && Files.isDirectory(sandboxes.resolve(m.group(1))));
        }).toList();
    }

    /** The pids of this fixture's task relays (forked by its launcher, whose binary they run). */
    List<Long> relays() {
        return running(launcher.toString());
    }

    /** The pids of the processes running binary {@code exe}. */
    static List<Long> running(String exe) {
        return ProcessHandle.allProcesses().filter(p -> {
            try {
                return Files.readSymbolicLink(Path.of("/proc", Long.toString(p.pid()), "exe")).toString().equals(exe);
            } catch (IOException | UnsupportedOperationException e) {
                return false;
            }
        }).map(ProcessHandle::pid).toList();
    }

    /** Waits (two minutes at most) until `ctr task ls` shows task {@code id} in {@code status}, e.g. RUNNING. */
    void awaitTask(String id, String status) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < end) {
            if (ctr(Duration.ofSeconds(60), "task", "ls").stdout().matches("(?s).*\\b" + id + "\\s+\\d+\\s+" + status + ".*")) {
                return;
            }
            Thread.sleep(100);
        }
        throw new AssertionError("task " + id + " is not " + status + ": " + ctr(Duration.ofSeconds(60), "task", "ls").stdout());
    }

    /**
     * Kills task {@code id} and deletes it and its container, as a user would (a delete while
     * the kill is on its way is refused, by containerd or rund, as running: again); the task
     * delete's result.
     */
    Command.Result killAndDelete(String id) throws Exception {
        Duration bound = Duration.ofSeconds(300);
        ctr(bound, "task", "kill", "-s", "SIGKILL", id);
        long end = System.nanoTime() + bound.toNanos();
        Command.Result deleted;
        while ((deleted = ctr(bound, "task", "delete", id)).stderr().matches("(?s).*(still running|must be stopped).*")) {
            if (System.nanoTime() > end) {
                throw new AssertionError(deleted.toString());
            }
            Thread.sleep(50);
        }
        Command.Result removed = ctr(bound, "container", "delete", id);
        if (removed.exitCode() != 0) {
            throw new AssertionError(removed.toString());
        }
        return deleted;
    }

    /**
     * Has a daemon run, as containerd would: the launcher's delete of a task that never was
     * starts one when none answers (and the daemon finishes what a dead one left).
     */
    void ensureDaemon() throws Exception {
        ProcessBuilder pb = new ProcessBuilder(launcher.toString(), "-namespace", "default", "-address", socket.toString(),
                "-publish-binary", "/usr/bin/containerd", "-id", "no-such-task", "-bundle", dir.toString(), "delete")
                .redirectErrorStream(true);
        pb.environment().putAll(rundEnv);
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(90, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new AssertionError("the launcher's delete: " + out);
        }
    }

    /** The standby daemon's pid, from its pid file, once one waits (0 before, or when it took over). */
    long standbyPid() throws IOException {
        try {
            long pid = Long.parseLong(Files.readString(rundState.resolve("standby.pid")).trim());
            return ProcessHandle.of(pid).isPresent() ? pid : 0;
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
    }

    /** Waits until a standby daemon waits (the serving one starts it 2 s after it is ready, then it rehearses). */
    long awaitStandby() throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        long pid;
        while ((pid = standbyPid()) == 0 || !Files.readString(daemonLog).contains("standby: pid " + pid + " rehearsed")) {
            if (System.nanoTime() > end) {
                throw new AssertionError("no standby daemon waits:\n" + diagnostics());
            }
            Thread.sleep(100);
        }
        return pid;
    }

    /** Waits, {@code within} at most, until a daemon other than {@code old} serves (a standby, or one a relay started). */
    long awaitNewDaemon(long old, Duration within) throws Exception {
        long end = System.nanoTime() + within.toNanos();
        while (System.nanoTime() < end) {
            long now = daemonPid();
            if (now != old && now != 0 && ProcessHandle.of(now).isPresent()) {
                return now;
            }
            Thread.sleep(50);
        }
        throw new AssertionError("no new daemon after " + old + ":\n" + diagnostics());
    }

    /** The daemon's pid, from its pid file (0 when there is none). */
    long daemonPid() throws IOException {
        Path pid = rundState.resolve("rund.pid");
        try {
            return Long.parseLong(Files.readString(pid).trim());
        } catch (IOException | NumberFormatException e) {
            return 0; // none yet
        }
    }

    private static String cwd(ProcessHandle p) {
        try {
            return Files.readSymbolicLink(Path.of("/proc", Long.toString(p.pid()), "cwd")).toString();
        } catch (IOException | UnsupportedOperationException e) {
            return "";
        }
    }

    @Override
    public void close() throws Exception {
        stopPods();
        containerd.destroy();
        containerd.waitFor(10, TimeUnit.SECONDS);
        containerd.destroyForcibly().waitFor();
        // Relays outlive containerd and restart a daemon that goes: they go first.
        for (long relay : relays()) {
            ProcessHandle.of(relay).ifPresent(p -> {
                p.destroyForcibly();
                p.onExit().orTimeout(10, TimeUnit.SECONDS).exceptionally(t -> null).join();
            });
        }
        // A standby daemon takes over from a stopped one: each is stopped, the standby first,
        // until neither runs (a daemon may start a standby meanwhile).
        for (int i = 0; i < 5; i++) {
            boolean any = false;
            for (String file : List.of("standby.pid", "rund.pid")) {
                Path pid = rundState.resolve(file);
                if (!Files.exists(pid)) {
                    continue;
                }
                var process = ProcessHandle.of(Long.parseLong(Files.readString(pid).trim()));
                any |= process.isPresent();
                process.ifPresent(d -> {
                    d.destroy();
                    d.onExit().orTimeout(20, TimeUnit.SECONDS).exceptionally(t -> null).join();
                    d.destroyForcibly();
                });
            }
            if (!any) {
                break;
            }
        }
        // The daemon makes its state directory a private mount of its own.
        io.rund.rootfs.Syscalls.unmountAll(rundState);
        for (String hierarchy : List.of("memory", "cpu", "pids", "cpuacct")) {
            Path root = Path.of("/sys/fs/cgroup", hierarchy, pool);
            if (Files.isDirectory(root)) {
                try (Stream<Path> s = Files.list(root)) {
                    for (Path d : s.filter(Files::isDirectory).toList()) {
                        // A failed test may leave a sandbox's processes: kill them first.
                        for (String left : Files.readAllLines(d.resolve("cgroup.procs"))) {
                            ProcessHandle.of(Long.parseLong(left.trim())).ifPresent(p -> {
                                p.destroyForcibly();
                                p.onExit().orTimeout(10, TimeUnit.SECONDS).exceptionally(t -> null).join();
                            });
                        }
                        for (int i = 0; i < 100 && Files.exists(d); i++) {
                            try {
                                Files.deleteIfExists(d);
                            } catch (IOException busy) {
                                Thread.sleep(50);
                            }
                        }
                    }
                }
                Files.deleteIfExists(root);
            }
        }
        Command.run(Duration.ofSeconds(30), null, Map.of(), List.of("sh", "-c",
                "! ip link show " + bridge + " >/dev/null 2>&1 || ip link del " + bridge));
        // runc leaves CRI's cgroup parent behind, empty: rmdir takes only an empty one.
        Command.run(Duration.ofSeconds(30), null, Map.of(), List.of("sh", "-c",
                "for d in /sys/fs/cgroup/*/k8s.io; do [ -d \"$d\" ] && rmdir \"$d\" 2>/dev/null; done; true"));
        // containerd's own leftovers (DESIGN.md's quirks).
        for (String leftover : List.of("/run/containerd/fifo", "/run/containerd/s", "/run/containerd/runc")) {
            Trees.delete(Path.of(leftover));
        }
        Command.run(Duration.ofSeconds(30), null, Map.of(), List.of("sh", "-c",
                "grep ' " + dir + "/' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l"));
        scratch.close();
        Trees.delete(dir);
    }

    /**
     * Stops and removes every CRI pod still there, as a draining kubelet would: a test that
     * failed half-way must not leave pods' processes, network namespaces, veths or CNI
     * results behind (containerd's runc shims outlive containerd itself).
     */
    private void stopPods() {
        try (CriClient cri = new CriClient(socket)) {
            for (var pod : cri.runtime("ListPodSandbox", io.rund.test.cri.ListPodSandboxRequest.getDefaultInstance(),
                    io.rund.test.cri.ListPodSandboxResponse.parser()).getItemsList()) {
                try {
                    cri.runtime("StopPodSandbox", io.rund.test.cri.StopPodSandboxRequest.newBuilder()
                            .setPodSandboxId(pod.getId()).build(), io.rund.test.cri.StopPodSandboxResponse.parser());
                    cri.runtime("RemovePodSandbox", io.rund.test.cri.RemovePodSandboxRequest.newBuilder()
                            .setPodSandboxId(pod.getId()).build(), io.rund.test.cri.RemovePodSandboxResponse.parser());
                } catch (CriClient.CriException e) {
                    System.err.println("containerd teardown: pod " + pod.getId() + ": " + e.getMessage());
                }
            }
        } catch (CriClient.CriException | InterruptedException e) {
            System.err.println("containerd teardown: list pods: " + e.getMessage());
        }
    }
}
