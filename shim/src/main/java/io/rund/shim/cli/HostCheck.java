package io.rund.shim.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import io.rund.control.v1.StatusResponse;
import io.rund.rootfs.StoreException;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.cgroup.CgroupException;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.shim.Version;
import io.rund.shim.control.Daemon;
import io.rund.ttrpc.TtrpcException;
import io.rund.vm.Accelerator;
import io.rund.vm.AcceleratorProbe;
import io.rund.vm.Digests;
import io.rund.vm.qemu.QemuHypervisor;
import io.rund.vm.template.TemplateStore;
import java.io.IOException;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code rund check}: can this host run rund's sandboxes, and how. Each check is a line:
 * {@code ok}, {@code warn} (rund runs, but not as well as it could, or something an operator
 * should know) or {@code fail} (no sandbox can start until it is fixed), with the reason.
 *
 * <p>It works with the daemon down, from what is on disk, and with it up, when the daemon's
 * own answers (the accelerator it chose, its template, its pool) replace what the disk can
 * only predict. It changes nothing: the store's clone probe removes its two files, and
 * nothing is created in the cgroup or template stores. One method per check, in the order
 * of the report.
 */
public final class HostCheck {

    enum Level {
        OK,
        WARN,
        FAIL;

        String word() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    record Line(Level level, String check, String detail) {}

    /** QEMU migrates a vhost-user-fs device, which every template holds, from this major version on. */
    static final int QEMU_TEMPLATE_MAJOR = 10;
    /** Below this much free space in the writable-layer store, say so. */
    static final long STORE_LOW_BYTES = 1L << 30;
    static final String CONTAINERD_CONFIG = "/etc/containerd/config.toml";
    static final String LAUNCHER = "containerd-shim-rund-v2";
    static final String RUNTIME_TYPE = "io.containerd.rund.v2";
    private static final Pattern QEMU_VERSION = Pattern.compile("QEMU emulator version (\\d+)\\.(\\d+)(\\.\\d+)?");
    /** CRI's runtimes table in containerd's config version 2 (1.6, 1.7) and version 3 (2.x). */
    private static final List<String> CRI_PLUGINS = List.of("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime");

    private final Daemon.Config config;
    private final Map<String, String> env;
    private final Path controlSocket;
    private final List<Line> lines = new ArrayList<>();
    /** The daemon's answer, or null when none runs. */
    private StatusResponse daemon;

    private HostCheck(Daemon.Config config, Map<String, String> env, Path controlSocket) {
        this.config = config;
        this.env = env;
        this.controlSocket = controlSocket;
    }

    /** Runs every check; {@code env} gives PATH, RUND_DAEMON and RUND_CONTAINERD_CONFIG. */
    static List<Line> run(Daemon.Config config, Map<String, String> env, Path controlSocket) {
        HostCheck c = new HostCheck(config, env, controlSocket);
        c.daemon();
        c.privileges();
        Accelerator.Kind accel = c.accelerator();
        c.qemu();
        c.confinement();
        boolean guest = c.guest("guest kernel", "vmlinux", "vmlinux_sha256")
                & c.guest("guest initramfs", "initramfs.cpio", "initramfs_sha256");
        c.store();
        c.cgroups();
        c.launcher();
        c.containerdConfig();
        c.templates(accel, guest);
        return List.copyOf(c.lines);
    }

    private void add(Level level, String check, String detail) {
        lines.add(new Line(level, check, detail));
    }

    private void daemon() {
        if (!Files.exists(controlSocket)) {
            add(Level.OK, "daemon", "not running (no " + controlSocket + "); the launcher starts it for containerd's"
                    + " first rund task");
            return;
        }
        try {
            daemon = Cli.status(controlSocket, Duration.ofSeconds(10));
        } catch (IOException | TtrpcException e) {
            add(Level.WARN, "daemon", controlSocket + " exists but no daemon answers (" + e.getMessage()
                    + "); the launcher starts a new one when none holds the lock");
            return;
        }
        String mine = Version.CURRENT.toString();
        if (!daemon.getVersion().equals(mine)) {
            add(Level.WARN, "daemon", "running, pid " + daemon.getPid() + ", rund " + daemon.getVersion()
                    + ", but this command is rund " + mine + ": the daemon serves the build it started with");
        } else {
            add(Level.OK, "daemon", "running, pid " + daemon.getPid() + ", rund " + mine + ", "
                    + daemon.getSandboxesCount() + " sandbox(es)");
        }
    }

    private void privileges() {
        String uid = "?";
        try {
            uid = String.valueOf(Files.getAttribute(Path.of("/proc/self"), "unix:uid"));
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
            // reported as unknown below
        }
        if (uid.equals("0")) {
            add(Level.OK, "privileges", "root, as the daemon runs");
        } else {
            add(Level.WARN, "privileges", "this command runs as uid " + uid + ", the daemon as root: checks of root's"
                    + " files may read less than the daemon sees");
        }
    }

    private Accelerator.Kind accelerator() {
        if (daemon != null) {
            boolean kvm = daemon.getAccelerator().startsWith("kvm");
            add(kvm ? Level.OK : Level.WARN, "accelerator", daemon.getAccelerator() + " (the daemon's choice)"
                    + (kvm ? "" : "; guests run under software emulation, several times slower than KVM"));
            return kvm ? Accelerator.Kind.KVM : Accelerator.Kind.TCG;
        }
        Accelerator a;
        try {
            a = new AcceleratorProbe().choose(config.accelerator());
        } catch (IllegalArgumentException e) {
            add(Level.FAIL, "accelerator", e.getMessage());
            return Accelerator.Kind.TCG;
        }
        if (a.kind() == Accelerator.Kind.KVM) {
            add(Level.OK, "accelerator", a.toString());
        } else if ("tcg".equals(config.accelerator())) {
            add(Level.OK, "accelerator", a.toString());
        } else {
            add(Level.WARN, "accelerator", a + "; guests run under TCG, software emulation, several times slower than KVM");
        }
        return a.kind();
    }

    private void qemu() {
        Path qemu = Daemon.QEMU;
        if (!Files.isExecutable(qemu)) {
            add(Level.FAIL, "qemu", qemu + " is missing (Debian's qemu-system-x86; hack/install-deps test installs"
                    + " QEMU " + QEMU_TEMPLATE_MAJOR + " from backports)");
            return;
        }
        String out;
        try {
            Process p = new ProcessBuilder(qemu.toString(), "--version").redirectErrorStream(true).start();
            p.getOutputStream().close();
            byte[] bytes = p.getInputStream().readNBytes(4096);
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                add(Level.FAIL, "qemu", qemu + " --version did not answer within 10 s");
                return;
            }
            out = new String(bytes, java.nio.charset.StandardCharsets.UTF_8);
        } catch (IOException e) {
            add(Level.FAIL, "qemu", "run " + qemu + " --version: " + e.getMessage());
            return;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            add(Level.FAIL, "qemu", "interrupted");
            return;
        }
        Matcher m = QEMU_VERSION.matcher(out);
        if (!m.find()) {
            add(Level.FAIL, "qemu", qemu + " --version printed no QEMU version: " + firstLine(out));
            return;
        }
        String version = m.group(1) + "." + m.group(2) + (m.group(3) == null ? "" : m.group(3));
        if (Integer.parseInt(m.group(1)) >= QEMU_TEMPLATE_MAJOR) {
            add(Level.OK, "qemu", "QEMU " + version + " at " + qemu);
        } else {
            add(config.templates() == null ? Level.WARN : Level.FAIL, "qemu", "QEMU " + version + " at " + qemu
                    + " is older than " + QEMU_TEMPLATE_MAJOR + ", which templates need (they hold a vhost-user-fs device)"
                    + (config.templates() == null ? "; templates are off" : "; set templates = \"off\" or install QEMU "
                    + QEMU_TEMPLATE_MAJOR + " (bookworm-backports)"));
        }
    }

    private void confinement() {
        if (!Files.isExecutable(config.jailer())) {
            add(Level.FAIL, "vm confinement", "jailer " + config.jailer() + " is missing (hack/install builds it)");
        } else if (!Files.isExecutable(config.jail().helper())) {
            add(Level.FAIL, "vm confinement", "helper " + config.jail().helper() + " is missing (hack/install builds it)");
        } else {
            add(Level.OK, "vm confinement", "each QEMU as its own uid of " + config.jail() + ", no capabilities,"
                    + " no_new_privs, QEMU's seccomp filter, in PID, network, mount, IPC and UTS namespaces of its own"
                    + " (its root /usr and its own files); its virtio-fs back-ends (rund-helper, one per share) as the"
                    + " same uid, each in mount (its share), network, IPC and UTS namespaces of its own, seccomp"
                    + " allow-list");
        }
        lines.add(ptraceScope(Path.of("/proc/sys/kernel/yama/ptrace_scope")));
    }

    /**
     * The back-ends read the VM's memory with process_vm_readv, which Yama may forbid: scope 1
     * allows it to the processes a VM declares (every VM declares its back-ends), 2 and 3 to
     * none of them.
     */
    static Line ptraceScope(Path scope) {
        String value;
        try {
            value = Files.readString(scope).strip();
        } catch (IOException e) {
            return new Line(Level.OK, "ptrace scope", "no Yama (" + scope + " absent): the back-ends reach their VM's"
                    + " memory as its uid");
        }
        return switch (value) {
            case "0" -> new Line(Level.OK, "ptrace scope", "Yama ptrace_scope 0: the back-ends reach their VM's memory"
                    + " as its uid");
            case "1" -> new Line(Level.OK, "ptrace scope", "Yama ptrace_scope 1: each VM declares its virtio-fs back-ends"
                    + " its ptracers (rund-jail --ptracer), so they reach its memory");
            default -> new Line(Level.FAIL, "ptrace scope", "Yama ptrace_scope " + value + " lets no virtio-fs back-end"
                    + " read its VM's memory (process_vm_readv): every guest's file I/O would fail; set"
                    + " kernel.yama.ptrace_scope to 1 or 0");
        };
    }

    /** One guest artifact: present, its SHA-256, and whether it is the one hack/build-guest recorded. */
    private boolean guest(String check, String file, String recordedKey) {
        Path p = config.guestDir().resolve(file);
        if (!Files.isRegularFile(p)) {
            add(Level.FAIL, check, p + " is missing (hack/build-guest builds and installs it)");
            return false;
        }
        String hash;
        try {
            hash = Digests.sha256(p);
        } catch (IOException e) {
            add(Level.FAIL, check, "read " + p + ": " + e.getMessage());
            return false;
        }
        String recorded = null;
        Path record = config.guestDir().resolve("guest.json");
        try {
            JsonNode n = new ObjectMapper().readTree(record.toFile()).path(recordedKey);
            recorded = n.isTextual() ? n.asText() : null;
        } catch (IOException e) {
            // no record: reported below
        }
        String what = p + " sha256 " + hash.substring(0, 16);
        if (recorded == null) {
            add(Level.WARN, check, what + ", but " + record + " does not record it (not installed by hack/build-guest)");
        } else if (!recorded.equals(hash)) {
            add(Level.WARN, check, what + " differs from " + record + " (" + recorded.substring(0, Math.min(16,
                    recorded.length())) + "): changed since hack/build-guest installed it");
        } else {
            add(Level.OK, check, what + ", as installed by hack/build-guest");
        }
        return true;
    }

    private void store() {
        Path dir = config.scratch();
        if (!Files.isDirectory(dir)) {
            add(Level.FAIL, "layer store", dir + " does not exist (hack/setup-store makes it on a reflink filesystem)");
            return;
        }
        try {
            WritableLayerStore.checkClone(dir);
        } catch (StoreException e) {
            add(Level.FAIL, "layer store", e.getMessage());
            return;
        }
        try {
            FileStore fs = Files.getFileStore(dir);
            long free = fs.getUsableSpace();
            String what = dir + " on " + fs.type() + " clones files (reflink), " + gib(free) + " free";
            add(free < STORE_LOW_BYTES ? Level.WARN : Level.OK, "layer store",
                    free < STORE_LOW_BYTES ? what + ": a sandbox's writes fill it" : what);
        } catch (IOException e) {
            add(Level.WARN, "layer store", dir + " clones files; free space unknown: " + e.getMessage());
        }
    }

    private void cgroups() {
        CgroupLayout layout;
        try {
            layout = CgroupLayout.detect(config.cgroupPool());
        } catch (CgroupException e) {
            add(Level.FAIL, "cgroups", e.getMessage());
            return;
        }
        add(Level.OK, "cgroups", layout.version() == CgroupLayout.Version.V1
                ? "v1, one hierarchy per controller: " + String.join(", ", new java.util.TreeSet<>(layout.roots().keySet()))
                : "v2 at " + layout.roots().get("").getParent() + ", controllers " + String.join(" ",
                new java.util.TreeSet<>(layout.controllers())));
        String pool = "pool " + config.cgroupPool() + " (" + config.poolSize() + " configured)";
        if (daemon != null) {
            add(Level.OK, "cgroup pool", pool + ": " + daemon.getCgroupPool() + " (the daemon's)");
            return;
        }
        try {
            CgroupPool.Census c = CgroupPool.census(layout, config.stateDir().resolve("cgroup-claims"));
            add(Level.OK, "cgroup pool", c.exists() ? pool + ": " + c.free() + " free, " + c.claimed()
                    + " claimed on disk; the daemon fills it at start" : pool + ": not created yet; the daemon creates it at start");
        } catch (CgroupException e) {
            add(Level.FAIL, "cgroup pool", e.getMessage());
        }
    }

    /** containerd finds the launcher on its PATH; the launcher finds the daemon's start script. */
    private void launcher() {
        Path found = null;
        for (String dir : env.getOrDefault("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")) {
            Path p = Path.of(dir.isEmpty() ? "." : dir, LAUNCHER);
            if (Files.isExecutable(p)) {
                found = p;
                break;
            }
        }
        if (found == null) {
            add(Level.FAIL, "launcher", LAUNCHER + " is not on PATH: containerd cannot start rund tasks (hack/install)");
        } else {
            add(Level.OK, "launcher", found.toString());
        }
        Path start = Path.of(env.getOrDefault("RUND_DAEMON", "/usr/local/lib/rund/rund-daemon").split(" ")[0]);
        if (Files.isExecutable(start)) {
            add(Level.OK, "daemon command", start.toString());
        } else {
            add(daemon != null ? Level.WARN : Level.FAIL, "daemon command", start + " is missing: the launcher cannot start"
                    + " a daemon" + (daemon != null ? " when this one exits" : "") + " (hack/install)");
        }
    }

    private void containerdConfig() {
        Path path = Path.of(env.getOrDefault("RUND_CONTAINERD_CONFIG", CONTAINERD_CONFIG));
        if (!Files.exists(path)) {
            add(Level.WARN, "containerd", "no " + path + ": containerd runs with its defaults; `ctr run --runtime "
                    + RUNTIME_TYPE + "` works, but CRI (Kubernetes) has no runtime handler rund (docs/kubernetes.md)");
            return;
        }
        JsonNode root;
        try {
            root = new TomlMapper().readTree(path.toFile());
        } catch (IOException e) {
            add(Level.FAIL, "containerd", path + " does not parse as TOML, containerd will not start: " + e.getMessage());
            return;
        }
        JsonNode runtimes = null;
        for (String plugin : CRI_PLUGINS) {
            JsonNode n = root.path("plugins").path(plugin).path("containerd").path("runtimes");
            if (n.isObject()) {
                runtimes = n;
            }
        }
        if (runtimes == null) {
            add(Level.WARN, "containerd", path + " has no CRI runtimes table: `ctr run --runtime " + RUNTIME_TYPE
                    + "` works, CRI (Kubernetes) has no runtime handler rund (docs/kubernetes.md)");
            return;
        }
        String rund = runtimes.path("rund").path("runtime_type").asText("");
        if (!rund.equals(RUNTIME_TYPE)) {
            add(Level.WARN, "containerd", path + ": CRI has no runtime handler rund with runtime_type " + RUNTIME_TYPE
                    + (rund.isEmpty() ? "" : " (it has " + rund + ")") + "; `ctr run --runtime` works (docs/kubernetes.md)");
        } else if (!runtimes.has("runc")) {
            add(Level.WARN, "containerd", path + " lists rund but not runc: a runtimes table replaces containerd's"
                    + " built-in one, and CRI does not load without its default runtime runc");
        } else {
            add(Level.OK, "containerd", path + " has CRI runtime handlers rund (" + RUNTIME_TYPE + ") and runc");
        }
    }

    private void templates(Accelerator.Kind accel, boolean guest) {
        if (config.templates() == null) {
            add(Level.OK, "templates", "off: every VM boots cold");
            return;
        }
        Path root = config.templates();
        String fs = fsType(root);
        if (fs.equals("tmpfs") || fs.equals("hugetlbfs")) {
            add(Level.WARN, "template store", root + " is on " + fs + ": a clone's reads of template pages its template"
                    + " never touched allocate pages there, charged to the clone's memory cgroup and never reclaimed (a"
                    + " container's big write can get its QEMU killed by the host); put templates on a disk file system");
        }
        if (daemon != null) {
            add(daemon.getTemplateBuilt() ? Level.OK : Level.WARN, "templates", root + ", current " + daemon.getTemplateKey()
                    + (daemon.getTemplateBuilt() ? " built" : notBuilt()) + " (the daemon's)");
            return;
        }
        if (!guest) {
            add(Level.WARN, "templates", root + ": cannot tell which template the guest needs while it is missing");
            return;
        }
        try {
            TemplateStore.Spec spec = new TemplateStore.Spec(config.guestDir().resolve("vmlinux"),
                    config.guestDir().resolve("initramfs.cpio"), Daemon.VM_VCPUS, Daemon.VM_MEMORY_MIB,
                    (long) config.writableLayerMiB() << 20,
                    io.rund.rootfs.WritableLayerStore.imagePath(config.scratch(), config.writableLayerMiB()));
            // The machine as the daemon's QEMU would start it: the same key the daemon computes.
            String key = TemplateStore.key(spec, new QemuHypervisor(Daemon.QEMU, new Accelerator(accel, "rund check")));
            Path dir = root.resolve(key);
            // Its guest's disk too, when it mounted one (the link is there): without it the template is rebuilt.
            boolean built = Files.isRegularFile(dir.resolve("ram")) && Files.isRegularFile(dir.resolve("state"))
                    && (!Files.isSymbolicLink(dir.resolve("disk")) || Files.isRegularFile(dir.resolve("disk")));
            add(built ? Level.OK : Level.WARN, "templates", root + ", current " + key + (built ? " built" : notBuilt()));
        } catch (IOException e) {
            add(Level.WARN, "templates", "cannot compute the template key: " + e.getMessage());
        }
    }

    private static String notBuilt() {
        return " not built yet: the first sandbox builds it, or `rund template build` now";
    }

    /** The filesystem type of {@code p} or of its nearest existing ancestor. */
    private static String fsType(Path p) {
        for (Path q = p; q != null; q = q.getParent()) {
            if (Files.exists(q)) {
                try {
                    return Files.getFileStore(q).type();
                } catch (IOException e) {
                    return "an unknown filesystem (" + e.getMessage() + ")";
                }
            }
        }
        return "an unknown filesystem";
    }

    private static String gib(long bytes) {
        return String.format(java.util.Locale.ROOT, "%.1f GiB", bytes / (double) (1L << 30));
    }

    private static String firstLine(String s) {
        String t = s.strip();
        int nl = t.indexOf('\n');
        return nl < 0 ? t : t.substring(0, nl);
    }
}
