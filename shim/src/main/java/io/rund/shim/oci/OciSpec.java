package io.rund.shim.oci;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.rund.rootfs.RootfsMount;
import io.rund.rootfs.Syscalls;
import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.GuestMount;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.shim.TaskFault;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * What rund takes from an OCI runtime spec: the process (for the init process from the
 * bundle's config.json, for an exec from the JSON in ExecProcessRequest.spec), the
 * hostname, the resources, the binds it brings into the VM and the pod network. Every
 * field is checked; errors name the field and value. The result is the daemon's own
 * records ({@link ContainerSpec}, {@link ProcessSpec}).
 */
public final class OciSpec {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** The largest host file a bind brings into the VM (the agent's limit). */
    static final int MAX_FILE_BIND = 1 << 20;

    /** The spec's binds of host files and directories, sorted by what their sources are. */
    record Binds(List<ContainerSpec.FileMount> files, List<ContainerSpec.HostDir> dirs) {}

    /**
     * The spec's binds of regular host files (CRI's /etc/hosts, /etc/resolv.conf,
     * /etc/hostname, the kubelet's termination log): their contents now, copied into the
     * VM. Later changes on the host are not seen, nor writes in the container on the host.
     */
    static List<ContainerSpec.FileMount> files(String what, JsonNode mounts) throws TaskFault {
        return binds(what, mounts).files();
    }

    /**
     * The spec's binds of host files ({@link #files}) and of host directories, which come
     * into the VM through one of the sandbox's shares (read-only ones beside the images,
     * read-write ones on the host-directory share, written by its own helper); each source is
     * opened once. emptyDirs ({@link #volumes}) and CRI's pod /dev/shm ({@link #POD_SHM}) are
     * not among them; a source that is neither a regular file nor a directory is refused.
     */
    static Binds binds(String what, JsonNode mounts) throws TaskFault {
        List<ContainerSpec.FileMount> files = new ArrayList<>();
        List<ContainerSpec.HostDir> dirs = new ArrayList<>();
        for (JsonNode m : mounts) {
            String source = m.path("source").asText("");
            List<String> options = strings(what + " options", m.path("options"));
            if (!isBind(m, options) || !source.startsWith("/") || isEmptyDir(source) || isPodShm(source)) {
                continue;
            }
            // Read once, by descriptor: a symlink is not followed, a FIFO or device never opened,
            // and what is read is what was checked (a /proc file reports size 0 and may be endless).
            Syscalls.HostFile file;
            try {
                file = Syscalls.readNoFollow(Path.of(source), MAX_FILE_BIND);
            } catch (Syscalls.SyscallException e) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": bind source " + source + ": " + e.getMessage());
            }
            int type = file.stat().type();
            if (type == Syscalls.S_IFDIR) {
                dirs.add(new ContainerSpec.HostDir(Path.of(source), destination(what, m, "directory " + source), options));
                continue;
            }
            if (type != Syscalls.S_IFREG) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": bind source " + source + " is "
                        + (type == Syscalls.S_IFLNK ? "a symlink (name the file it points to)" : "not a regular file or directory"
                        + " (mode 0" + Integer.toOctalString(file.stat().mode()) + ")") + ", which rund does not bring into a VM");
            }
            String destination = destination(what, m, "file " + source);
            if (file.bytes().length > MAX_FILE_BIND) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": file " + source + " of more than "
                        + MAX_FILE_BIND + " bytes is larger than " + MAX_FILE_BIND + ", the most rund copies into a VM");
            }
            files.add(new ContainerSpec.FileMount(destination, file.bytes(), options.contains("ro")));
        }
        return new Binds(files, dirs);
    }

    /** Whether a spec mount is a bind: of type bind, or with a bind or rbind option. */
    private static boolean isBind(JsonNode m, List<String> options) {
        return m.path("type").asText("").equals("bind") || options.contains("bind") || options.contains("rbind");
    }

    /** A mount's destination, refused unless it is an absolute path without "..": {@code of} says whose. */
    private static String destination(String what, JsonNode m, String of) throws TaskFault {
        String destination = m.path("destination").asText("");
        if (!destination.startsWith("/") || destination.contains("/../") || destination.endsWith("/..")) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": mount destination " + destination + " of " + of
                    + " is not an absolute path");
        }
        return destination;
    }

    /** The network namespace the spec joins (a path), or null when it has none or makes a new one. */
    static Path netns(String what, JsonNode namespaces) throws TaskFault {
        for (JsonNode ns : namespaces) {
            if (ns.path("type").asText("").equals("network") && !ns.path("path").asText("").isEmpty()) {
                String path = ns.path("path").asText();
                if (!path.startsWith("/") || path.contains("/../")) {
                    throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": network namespace path " + path
                            + " is not an absolute path");
                }
                return Path.of(path);
            }
        }
        return null;
    }

    /** Where the kubelet keeps a pod's emptyDir volumes: {@code …/volumes/kubernetes.io~empty-dir/<name>}. */
    static final String EMPTY_DIR = "/volumes/kubernetes.io~empty-dir/";
    private static final java.util.regex.Pattern VOLUME_NAME = java.util.regex.Pattern.compile("[a-z0-9]([a-z0-9.-]{0,62})");

    /**
     * kubelet's binds of a volume's subPath: {@code <kubelet>/pods/<uid>/volume-subpaths/<volume>/<container>/<n>},
     * a bind mount of the directory below the volume.
     */
    private static final java.util.regex.Pattern SUBPATH = java.util.regex.Pattern.compile(
            "(/.+/pods/[^/]+)/volume-subpaths/([a-z0-9][a-z0-9.-]{0,62})/[^/]+/[0-9]+");
    /** How far below an emptyDir's root a subPath is looked for, and among how many entries. */
    private static final int SUBPATH_DEPTH = 16;
    private static final int SUBPATH_ENTRIES = 10_000;

    /**
     * The kubelet emptyDir a bind source names: the volume's {@code name} and host directory
     * {@code dir}, and for a subPath bind the bound directory {@code subPathSource} (null for
     * the whole volume); null when the source is no emptyDir's.
     */
    record EmptyDirSource(String name, Path dir, Path subPathSource) {}

    static EmptyDirSource emptyDir(String source) {
        int at = source.indexOf(EMPTY_DIR);
        if (at >= 0) {
            return new EmptyDirSource(source.substring(at + EMPTY_DIR.length()), Path.of(source), null);
        }
        java.util.regex.Matcher m = SUBPATH.matcher(source);
        if (!m.matches()) {
            return null;
        }
        Path dir = Path.of(m.group(1) + EMPTY_DIR + m.group(2));
        return Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS) ? new EmptyDirSource(m.group(2), dir, Path.of(source)) : null;
    }

    /** Whether a bind source is an emptyDir or a subPath of one: it lives in the VM. */
    static boolean isEmptyDir(String source) {
        return emptyDir(source) != null;
    }

    /**
     * The spec's emptyDir volumes: bind mounts of a kubelet emptyDir directory, or of a
     * subPath of one, which live in the pod's VM instead of on the host: on its disk, or
     * for {@code medium: Memory} (the kubelet mounted a tmpfs there) in a tmpfs of the
     * guest's, as large as the host's (sizeLimit). Files the spec binds in come through
     * {@link #files}; host directories through {@link #binds}.
     */
    static List<ContainerSpec.Volume> volumes(String what, JsonNode mounts) throws TaskFault {
        List<ContainerSpec.Volume> volumes = new ArrayList<>();
        String mountinfo = null;
        for (JsonNode m : mounts) {
            String source = m.path("source").asText("");
            EmptyDirSource e = emptyDir(source);
            if (e == null) {
                continue;
            }
            String name = e.name();
            Path dir = e.dir();
            String subPath = e.subPathSource() == null ? "" : subPathOf(what, dir, e.subPathSource());
            if (!VOLUME_NAME.matcher(name).matches()) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": emptyDir volume " + source
                        + " is not named like a Kubernetes volume");
            }
            String destination = destination(what, m, "volume " + name);
            if (mountinfo == null) {
                mountinfo = readMountinfo();
            }
            long size = tmpfsSize(dir.toString(), mountinfo);
            volumes.add(new ContainerSpec.Volume(name, destination,
                    strings(what + " options", m.path("options")).contains("ro"), size >= 0, Math.max(size, 0), subPath));
        }
        return volumes;
    }

    private static String readMountinfo() throws TaskFault {
        try {
            return Files.readString(Path.of("/proc/self/mountinfo"));
        } catch (IOException e) {
            throw new TaskFault(Fault.INTERNAL, "read /proc/self/mountinfo: " + e.getMessage());
        }
    }

    /**
     * Whether {@code dir} is a tmpfs mount point in {@code mountinfo} (the last mount there
     * wins): its size in bytes (0 when it has tmpfs's default size), or -1 when it is not.
     */
    static long tmpfsSize(String dir, String mountinfo) {
        long size = -1;
        for (String line : mountinfo.split("\n")) {
            String[] f = line.split(" ");
            int dash = java.util.Arrays.asList(f).indexOf("-");
            if (f.length < 5 || dash < 0 || dash + 3 >= f.length || !Syscalls.mountinfoPath(f[4]).equals(dir)) {
                continue;
            }
            if (!f[dash + 1].equals("tmpfs")) {
                size = -1;
                continue;
            }
            size = 0;
            for (String o : f[dash + 3].split(",")) {
                if (o.startsWith("size=")) {
                    size = tmpfsBytes(o.substring(5));
                }
            }
        }
        return size;
    }

    /** A tmpfs size option ("65536k", "1g", "4096") in bytes; 0 when it does not parse. */
    private static long tmpfsBytes(String v) {
        if (v.isEmpty()) {
            return 0;
        }
        char unit = Character.toLowerCase(v.charAt(v.length() - 1));
        int shift = switch (unit) {
            case 'k' -> 10;
            case 'm' -> 20;
            case 'g' -> 30;
            default -> 0;
        };
        try {
            return Long.parseLong(shift == 0 ? v : v.substring(0, v.length() - 1)) << shift;
        } catch (NumberFormatException e) {
            return 0;
        }
    }

    /**
     * Where below the emptyDir {@code dir} a subPath bind {@code source} points: kubelet made
     * the directory on the host (it is empty there: the volume's content is in the VM) and
     * bound it, so the directory with the source's device and inode is the one. Looked for
     * without following symlinks, within {@link #SUBPATH_DEPTH} levels and
     * {@link #SUBPATH_ENTRIES} entries.
     */
    static String subPathOf(String what, Path dir, Path source) throws TaskFault {
        Object want;
        try {
            var a = Files.readAttributes(source, java.nio.file.attribute.BasicFileAttributes.class);
            if (!a.isDirectory()) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": subPath bind " + source + " of emptyDir " + dir
                        + " is not a directory; an emptyDir's files live in the VM");
            }
            want = a.fileKey();
        } catch (IOException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": subPath bind " + source + ": " + e.getMessage());
        }
        int[] seen = {0};
        Path[] found = {null};
        try {
            Files.walkFileTree(dir, java.util.Set.of(), SUBPATH_DEPTH, new java.nio.file.SimpleFileVisitor<>() {
                @Override
                public java.nio.file.FileVisitResult preVisitDirectory(Path d, java.nio.file.attribute.BasicFileAttributes a) {
                    if (++seen[0] > SUBPATH_ENTRIES) {
                        return java.nio.file.FileVisitResult.TERMINATE;
                    }
                    if (want != null && want.equals(a.fileKey()) && !d.equals(dir)) {
                        found[0] = d;
                        return java.nio.file.FileVisitResult.TERMINATE;
                    }
                    return java.nio.file.FileVisitResult.CONTINUE;
                }

                @Override
                public java.nio.file.FileVisitResult visitFile(Path f, java.nio.file.attribute.BasicFileAttributes a) {
                    return ++seen[0] > SUBPATH_ENTRIES ? java.nio.file.FileVisitResult.TERMINATE
                            : java.nio.file.FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": subPath bind " + source + ": look in " + dir + ": "
                    + e.getMessage());
        }
        if (found[0] == null) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, what + ": subPath bind " + source + " is no directory of emptyDir "
                    + dir + " (looked " + SUBPATH_DEPTH + " levels deep, at most " + SUBPATH_ENTRIES + " entries)");
        }
        return dir.relativize(found[0]).toString();
    }

    /** The LinuxResources JSON of an Update call. */
    public static ResourceLimits resources(byte[] json) throws TaskFault {
        try {
            return OciLinux.resources("update resources", JSON.readTree(json), false);
        } catch (IOException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "resources are not JSON: " + e.getMessage());
        }
    }

    private OciSpec() {}

    /** containerd's CRI plugin marks each container of a pod with these annotations. */
    static final String CONTAINER_TYPE = "io.kubernetes.cri.container-type";
    public static final String SANDBOX_ID = "io.kubernetes.cri.sandbox-id";

    /** A container that joins the pod {@code sandboxId}, whose sandbox container made the VM. */
    public record PodMember(String sandboxId) {}

    /**
     * The pod a bundle's container joins, from its CRI annotations: present only for
     * container-type "container" (the sandbox container, type "sandbox", makes the pod).
     * A bundle that cannot be read is no pod member; Create reports what is wrong with it.
     */
    /** The pod a parsed spec's container joins; null for none. */
    static PodMember podMember(JsonNode root) {
        JsonNode a = root.path("annotations");
        if ("container".equals(a.path(CONTAINER_TYPE).asText()) && !a.path(SANDBOX_ID).asText().isEmpty()) {
            return new PodMember(a.path(SANDBOX_ID).asText());
        }
        return null;
    }

    public static PodMember podMember(Path bundle) {
        try {
            String text = Files.readString(bundle.resolve("config.json"));
            if (!text.contains(SANDBOX_ID)) {
                return null; // most tasks: no need to parse the spec here, Create does
            }
            return podMember(JSON.readTree(text));
        } catch (IOException | RuntimeException e) {
            // not readable as a spec: no pod
        }
        return null;
    }

    /**
     * Container {@code id} of the bundle at {@code bundle}, on containerd's {@code rootfs}
     * mounts, with a terminal when containerd asked for one. Every field of the spec is
     * honoured, translated, or refused here naming it (docs/oci.md); labels that only say
     * how the host would confine are accepted, and said once in the daemon's log.
     */
    public static ContainerSpec readBundle(String id, Path bundle, List<RootfsMount> rootfs, boolean terminal)
            throws TaskFault {
        Path config = bundle.resolve("config.json");
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(config));
        } catch (IOException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "read " + config + ": " + e.getMessage());
        }
        if (root == null || !root.isObject()) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, config + " is not a JSON object");
        }
        List<String> warnings = new ArrayList<>();
        OciLinux.refuseUnknown(config.toString(), root);
        refuseTopLevel(config.toString(), root);
        ProcessSpec process = process(config + " process", root.path("process"), warnings).withTerminal(terminal);
        JsonNode linux = root.path("linux");
        String where = config + " linux";
        OciLinux.refuseTheRest(where, linux, warnings);
        ContainerConfig.Namespaces ns = OciLinux.namespaces(where + ".namespaces", linux.path("namespaces"),
                podMember(root) != null);
        JsonNode mounts = root.path("mounts");
        ContainerConfig cc = new ContainerConfig(guestMounts(config + " mounts", mounts),
                strings(where + ".maskedPaths", linux.path("maskedPaths")),
                strings(where + ".readonlyPaths", linux.path("readonlyPaths")),
                root.path("root").path("readonly").asBoolean(false),
                OciLinux.sysctls(where + ".sysctl", linux.path("sysctl"), ns), ns,
                linux.path("rootfsPropagation").asText(""), OciLinux.resources(where + ".resources", linux.path("resources"), true),
                OciLinux.seccomp(where + ".seccomp", linux.path("seccomp")));
        for (String w : warnings) {
            LOG.log(System.Logger.Level.WARNING, "container {0}: {1}", id, w);
        }
        Binds binds = binds(config + " mounts", mounts);
        return new ContainerSpec(id, rootfs, hostname(root), process, cc,
                volumes(config + " mounts", mounts), binds.files(), binds.dirs(),
                netns(where + ".namespaces", linux.path("namespaces")), vmResources(config + " annotations", root, cc),
                writableLayerMiB(config + " annotations", root));
    }

    /** The size of the sandbox's writable layer (its disk, in MiB) a container asks for; 0 for the default. */
    public static final String WRITABLE_LAYER_MIB = "io.rund.writable-layer-mib";

    static int writableLayerMiB(String where, JsonNode root) throws TaskFault {
        Long mib = annotation(where, root.path("annotations"), WRITABLE_LAYER_MIB);
        if (mib == null) {
            return 0;
        }
        if (mib < io.rund.rootfs.WritableLayerStore.MIN_MIB || mib > io.rund.rootfs.WritableLayerStore.MAX_MIB) {
            throw OciLinux.refuse(where, WRITABLE_LAYER_MIB + "=" + mib, "is outside "
                    + io.rund.rootfs.WritableLayerStore.MIN_MIB + ".." + io.rund.rootfs.WritableLayerStore.MAX_MIB);
        }
        return mib.intValue();
    }

    /** CRI's annotations on a pod's sandbox container: what all of the pod's containers are allowed together. */
    static final String SANDBOX_MEMORY = "io.kubernetes.cri.sandbox-memory";
    static final String SANDBOX_CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota";
    static final String SANDBOX_CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period";
    static final String SANDBOX_CPU_SHARES = "io.kubernetes.cri.sandbox-cpu-shares";

    /**
     * What the VM must hold: for a pod's sandbox container, the pod's total from CRI's
     * annotations (kubelet 1.23 and later send them; none: the default size); for any
     * other container that makes a VM, its own limits.
     */
    static ResourceLimits vmResources(String where, JsonNode root, ContainerConfig cc) throws TaskFault {
        JsonNode a = root.path("annotations");
        if (!"sandbox".equals(a.path(CONTAINER_TYPE).asText())) {
            return cc.resources();
        }
        Long shares = annotation(where, a, SANDBOX_CPU_SHARES);
        if (shares != null && shares != 0 && (shares < 2 || shares > 262144)) {
            throw OciLinux.refuse(where, SANDBOX_CPU_SHARES + "=" + shares, "is outside 2..262144");
        }
        return new ResourceLimits(annotation(where, a, SANDBOX_MEMORY), null, null, shares == null || shares == 0 ? null : shares,
                annotation(where, a, SANDBOX_CPU_QUOTA), annotation(where, a, SANDBOX_CPU_PERIOD), null, null, null,
                List.of());
    }

    private static Long annotation(String where, JsonNode annotations, String key) throws TaskFault {
        String v = annotations.path(key).asText("");
        if (v.isEmpty()) {
            return null;
        }
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw OciLinux.refuse(where, key + "=" + v, "is not a number");
        }
    }

    private static final System.Logger LOG = System.getLogger(OciSpec.class.getName());

    /**
     * The spec's hostname; without one, the host's: runc's new UTS namespace starts as a copy
     * of the host's, so a container that sets none sees the host's name, and so it does here.
     */
    static String hostname(JsonNode root) {
        String name = root.path("hostname").asText("");
        return name.isEmpty() ? nodeHostname() : name;
    }

    /** This node's hostname ("" when it cannot be read). */
    public static String nodeHostname() {
        try {
            return Files.readString(Path.of("/proc/sys/kernel/hostname")).strip();
        } catch (IOException e) {
            return "";
        }
    }

    /** The spec's fields outside process and linux: hooks cannot run in a VM, other platforms' objects do not apply. */
    private static void refuseTopLevel(String where, JsonNode root) throws TaskFault {
        var hooks = root.path("hooks").fields();
        while (hooks.hasNext()) {
            var h = hooks.next();
            if (h.getValue().size() > 0) {
                throw OciLinux.refuse(where + " hooks", h.getKey(), "hooks would run on the host, outside the VM");
            }
        }
        for (String other : List.of("solaris", "windows", "vm", "zos")) {
            if (root.has(other) && !root.path(other).isNull()) {
                throw OciLinux.refuse(where, other, "is not a Linux container's");
            }
        }
        if (!root.path("domainname").asText("").isEmpty()) {
            throw OciLinux.refuse(where, "domainname " + root.path("domainname").asText(), "is not set in rund's guest");
        }
    }

    /** Mount types the guest makes itself; a bind names the host and goes through {@link #files} and {@link #volumes}. */
    private static final java.util.Set<String> GUEST_TYPES = java.util.Set.of("proc", "sysfs", "tmpfs", "devpts",
            "mqueue", "cgroup", "cgroup2");

    /** Where the guest keeps a pod's shared /dev/shm: a tmpfs the agent mounts when a container first binds it. */
    static final String POD_SHM = "/run/rund/pod-shm";

    /** CRI's per-pod /dev/shm on the host: {@code <state>/io.containerd.grpc.v1.cri/sandboxes/<id>/shm}. */
    static boolean isPodShm(String source) {
        return source.contains("/io.containerd.grpc.v1.cri/sandboxes/") && source.endsWith("/shm");
    }

    /** The spec's mounts that name nothing on the host, in order, for the guest to make. */
    static List<GuestMount> guestMounts(String where, JsonNode mounts) throws TaskFault {
        List<GuestMount> out = new ArrayList<>();
        for (JsonNode m : mounts) {
            String type = m.path("type").asText("");
            List<String> options = strings(where + " options", m.path("options"));
            boolean bind = isBind(m, options);
            if (bind && isPodShm(m.path("source").asText(""))) {
                // CRI's /dev/shm of the pod: a tmpfs of the pod in the VM, as CRI's is one on the host.
                out.add(new GuestMount(destination(where, m, "the pod's /dev/shm"), "bind", POD_SHM, options));
                continue;
            }
            if (bind) {
                continue;
            }
            String destination = m.path("destination").asText("");
            if (!GUEST_TYPES.contains(type)) {
                throw OciLinux.refuse(where, destination + " of type " + (type.isEmpty() ? "(none)" : type),
                        "only proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2 and binds are made in a VM");
            }
            out.add(new GuestMount(destination(where, m, "type " + type), type, m.path("source").asText(type), options));
        }
        return out;
    }

    public static ProcessSpec execProcess(byte[] json) throws TaskFault {
        try {
            List<String> warnings = new ArrayList<>();
            ProcessSpec p = process("exec spec", JSON.readTree(json), warnings);
            for (String w : warnings) {
                LOG.log(System.Logger.Level.WARNING, "exec: {0}", w);
            }
            return p;
        } catch (IOException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "exec spec is not JSON: " + e.getMessage());
        }
    }

    private static ProcessSpec process(String where, JsonNode p, List<String> warnings) throws TaskFault {
        if (!p.isObject()) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, where + " is missing");
        }
        for (String f : List.of("ioPriority", "scheduler", "execCPUAffinity", "commandLine")) {
            if (p.has(f) && !p.path(f).isNull()) {
                throw OciLinux.refuse(where, f + " " + p.path(f), "is not applied in rund's guest");
            }
        }
        for (String label : List.of("apparmorProfile", "selinuxLabel")) {
            if (!p.path(label).asText("").isEmpty()) {
                warnings.add(where + "." + label + " " + p.path(label).asText() + " is not applied: it says how the host"
                        + " would confine the process; in rund the VM confines it, and the guest has no such policy");
            }
        }
        JsonNode oom = p.path("oomScoreAdj");
        JsonNode umask = p.path("user").path("umask");
        List<String> args = strings(where + ".args", p.path("args"));
        if (args.isEmpty()) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, where + ".args is empty");
        }
        JsonNode user = p.path("user");
        List<Integer> gids = new ArrayList<>();
        for (JsonNode g : user.path("additionalGids")) {
            gids.add(uint(where + ".user.additionalGids", g));
        }
        List<ProcessSpec.Rlimit> rlimits = new ArrayList<>();
        for (JsonNode r : p.path("rlimits")) {
            rlimits.add(new ProcessSpec.Rlimit(r.path("type").asText(), r.path("soft").asLong(), r.path("hard").asLong()));
        }
        JsonNode caps = p.path("capabilities");
        ProcessSpec.Capabilities capabilities = new ProcessSpec.Capabilities(
                strings(where + ".capabilities.bounding", caps.path("bounding")),
                strings(where + ".capabilities.effective", caps.path("effective")),
                strings(where + ".capabilities.permitted", caps.path("permitted")),
                strings(where + ".capabilities.inheritable", caps.path("inheritable")),
                strings(where + ".capabilities.ambient", caps.path("ambient")));
        return new ProcessSpec(args, strings(where + ".env", p.path("env")), p.path("cwd").asText("/"),
                uint(where + ".user.uid", user.path("uid")), uint(where + ".user.gid", user.path("gid")), gids, rlimits,
                p.path("noNewPrivileges").asBoolean(false), capabilities, p.path("terminal").asBoolean(false),
                umask.isMissingNode() || umask.isNull() ? null : uint(where + ".user.umask", umask),
                oom.isMissingNode() || oom.isNull() ? null : oom.asInt());
    }

    private static int uint(String where, JsonNode n) throws TaskFault {
        if (n.isMissingNode() || n.isNull()) {
            return 0;
        }
        if (!n.canConvertToLong() || n.asLong() < 0 || n.asLong() > 0xFFFF_FFFFL) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, where + " " + n + " is not a uid/gid");
        }
        return (int) n.asLong();
    }

    static List<String> strings(String where, JsonNode n) throws TaskFault {
        List<String> out = new ArrayList<>();
        if (n.isMissingNode() || n.isNull()) {
            return out;
        }
        if (!n.isArray()) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, where + " is not a list: " + n);
        }
        for (JsonNode e : n) {
            if (!e.isTextual()) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, where + " has a non-string entry " + e);
            }
            out.add(e.asText());
        }
        return out;
    }
}
