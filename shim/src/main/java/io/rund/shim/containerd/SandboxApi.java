package io.rund.shim.containerd;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.rund.containerd.sandbox.v1.CreateSandboxRequest;
import io.rund.containerd.sandbox.v1.CreateSandboxResponse;
import io.rund.containerd.sandbox.v1.PingRequest;
import io.rund.containerd.sandbox.v1.PingResponse;
import io.rund.containerd.sandbox.v1.PlatformRequest;
import io.rund.containerd.sandbox.v1.PlatformResponse;
import io.rund.containerd.sandbox.v1.SandboxMetricsRequest;
import io.rund.containerd.sandbox.v1.SandboxStatusRequest;
import io.rund.containerd.sandbox.v1.SandboxStatusResponse;
import io.rund.containerd.sandbox.v1.ShutdownSandboxRequest;
import io.rund.containerd.sandbox.v1.ShutdownSandboxResponse;
import io.rund.containerd.sandbox.v1.StartSandboxRequest;
import io.rund.containerd.sandbox.v1.StartSandboxResponse;
import io.rund.containerd.sandbox.v1.StopSandboxRequest;
import io.rund.containerd.sandbox.v1.StopSandboxResponse;
import io.rund.containerd.sandbox.v1.WaitSandboxRequest;
import io.rund.containerd.sandbox.v1.WaitSandboxResponse;
import com.google.protobuf.UnknownFieldSet;
import io.rund.containerd.types.Platform;
import io.rund.rootfs.RootfsMount;
import io.rund.sandbox.Fault;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.sandbox.lifecycle.Pod;
import io.rund.shim.TaskFault;
import io.rund.shim.Timestamps;
import io.rund.shim.oci.OciSpec;
import io.rund.ttrpc.ServiceDefinition;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * containerd.runtime.sandbox.v1.Sandbox for one endpoint: containerd 2.x's CRI, with
 * {@code sandboxer = "shim"} for rund, asks it for the pod's sandbox instead of running a
 * pause container, so no pause image is pulled or unpacked. StartSandbox starts the pod's
 * VM with the pod's namespaces (UTS, IPC, PID) held in the guest by rund's own pause
 * process (a static binary installed beside the jailer, in {@code pause-rootfs/}, that
 * containerd never sees as a task); the pod's containers then come as tasks of this
 * endpoint and join the VM ({@link TaskService}). StopSandbox stops the VM,
 * ShutdownSandbox ends the endpoint.
 *
 * <p>With a pause container, containerd's CRI writes the pod's /etc/hostname, /etc/hosts
 * and /etc/resolv.conf and binds them into each container; with a Sandbox API sandbox it
 * leaves them to the sandbox. rund makes them as CRI does (the hostname and DNS config of
 * the PodSandboxConfig containerd passes as CreateSandbox's options, the host's
 * /etc/hosts) and copies them into each container that joins, unless its spec binds that
 * path itself (the kubelet binds its own /etc/hosts).
 */
final class SandboxApi {

    static final String SERVICE = "containerd.runtime.sandbox.v1.Sandbox";
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Duration STOP_GRACE = Duration.ofSeconds(5);

    private final TaskService tasks;
    private final Path pauseRootfs;
    /** What CreateSandbox was asked, with the pod's hostname and size read from its options once. */
    private record Created(CreateSandboxRequest request, String hostname, java.util.Map<String, String> size) {}

    private volatile Created created;
    /** The VM's end: 0 when StopSandbox or ShutdownSandbox ended it, 137 when it died. */
    private final CompletableFuture<WaitSandboxResponse> ended = new CompletableFuture<>();
    private volatile boolean stopAsked;

    /** For {@code tasks}' endpoint; one a restarted daemon took up has its sandbox already. */
    SandboxApi(TaskService tasks, Path pauseRootfs) {
        this.tasks = tasks;
        this.pauseRootfs = pauseRootfs;
        Pod adopted = tasks.sandboxApi() ? tasks.sandboxOrNull() : null;
        if (adopted != null) {
            watch(adopted);
        }
    }

    private void watch(Pod pod) {
        pod.vmEnded().whenComplete((v, e) -> ended.complete(WaitSandboxResponse.newBuilder()
                .setExitStatus(stopAsked ? 0 : 137).setExitedAt(Timestamps.of(Instant.now())).build()));
    }

    /** When the sandbox started: its VM's start, which a restarted daemon knows as well. */
    private static Instant startOf(Pod pod) {
        return ProcessHandle.of(pod.vmPid()).flatMap(p -> p.info().startInstant()).orElse(Instant.EPOCH);
    }

    ServiceDefinition definition() {
        return ServiceDefinition.builder(SERVICE)
                .unary("CreateSandbox", CreateSandboxRequest.parser(), (c, r) -> create(r))
                .unary("StartSandbox", StartSandboxRequest.parser(), (c, r) -> start(r))
                .unary("Platform", PlatformRequest.parser(), (c, r) -> {
                    check(r.getSandboxId());
                    return PlatformResponse.newBuilder().setPlatform(Platform.newBuilder().setOs("linux")
                            .setArchitecture("amd64")).build();
                })
                .unary("StopSandbox", StopSandboxRequest.parser(), (c, r) -> stop(r))
                .unary("WaitSandbox", WaitSandboxRequest.parser(), (c, r) -> waitFor(r))
                .unary("SandboxStatus", SandboxStatusRequest.parser(), (c, r) -> status(r))
                .unary("PingSandbox", PingRequest.parser(), (c, r) -> ping(r))
                .unary("ShutdownSandbox", ShutdownSandboxRequest.parser(), (c, r) -> shutdown(r))
                .unary("SandboxMetrics", SandboxMetricsRequest.parser(), (c, r) -> {
                    throw new TaskFault(Fault.UNIMPLEMENTED, "sandbox metrics of rund's sandbox " + r.getSandboxId()
                            + " are not served; each container's are (Task.Stats)");
                })
                .build();
    }

    private void check(String sandboxId) throws TaskFault {
        if (!sandboxId.equals(tasks.id)) {
            throw new TaskFault(Fault.NOT_FOUND, "sandbox " + sandboxId + " (this endpoint serves sandbox " + tasks.id + ")");
        }
    }

    private CreateSandboxResponse create(CreateSandboxRequest r) throws TaskFault {
        check(r.getSandboxId());
        String netns = r.getNetnsPath();
        if (!netns.isEmpty() && (!netns.startsWith("/") || netns.contains("/../"))) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox " + r.getSandboxId() + ": netns_path " + netns
                    + " is not an absolute path");
        }
        if (netns.isEmpty()) {
            // The node's network: a VM has none to share (as for a pause container's spec).
            throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox " + r.getSandboxId() + ": no netns_path: the pod "
                    + "would use the host's network namespace, which a VM cannot share (rund refuses what it cannot honour)");
        }
        Path bundle = Path.of(r.getBundlePath());
        if (!bundle.isAbsolute() || !Files.isDirectory(bundle, LinkOption.NOFOLLOW_LINKS)) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox " + r.getSandboxId() + ": bundle_path "
                    + r.getBundlePath() + " is not a directory");
        }
        if (!Files.isExecutable(pauseRootfs.resolve("pause"))) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + r.getSandboxId() + ": rund's pause "
                    + pauseRootfs.resolve("pause") + " is missing (hack/install puts it beside the jailer)");
        }
        if (created != null) {
            throw new TaskFault(Fault.ALREADY_EXISTS, "sandbox " + r.getSandboxId() + " is created");
        }
        PodConfig pod = podConfig(r.getSandboxId(), r.getOptions());
        String hostname = pod.hostname().isEmpty() ? OciSpec.nodeHostname() : pod.hostname();
        Path files = bundle.resolve("rund-pod");
        writePodFiles(r.getSandboxId(), pod, hostname, files);
        if (!tasks.useSandboxApi(files)) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + r.getSandboxId()
                    + " already has a task of its own or has ended");
        }
        created = new Created(r, hostname, pod.resources());
        return CreateSandboxResponse.getDefaultInstance();
    }

    private StartSandboxResponse start(StartSandboxRequest r) throws Exception {
        check(r.getSandboxId());
        Created c = created;
        if (c == null) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + r.getSandboxId() + " is not created"
                    + (tasks.sandboxOrNull() != null ? " here (it was started, and runs)" : ""));
        }
        Path bundle = holderBundle(c.request(), c.hostname(), c.size());
        ContainerSpec holder = OciSpec.readBundle(tasks.id, bundle, List.of(new RootfsMount("bind",
                pauseRootfs.toString(), List.of("rbind", "ro"))), false);
        Pod pod = tasks.startSandbox(holder);
        watch(pod);
        return StartSandboxResponse.newBuilder().setPid((int) pod.vmPid()).setCreatedAt(Timestamps.of(startOf(pod))).build();
    }

    /**
     * The spec of the pod's pause process, written beside containerd's own for the sandbox
     * (containerd removes the bundle with the sandbox): rund's pause as user 65535, no
     * capabilities, a read-only root, the pod's new UTS, IPC and PID namespaces, its network
     * namespace by path; CRI's annotations from the sandbox spec containerd wrote, if it
     * wrote one, and the pod's size from its PodSandboxConfig ({@code size}), which sizes the VM.
     */
    private static Path holderBundle(CreateSandboxRequest c, String hostname, java.util.Map<String, String> size)
            throws TaskFault {
        Path bundle = Path.of(c.getBundlePath());
        JsonNode given = JSON.createObjectNode();
        Path spec = bundle.resolve("config.json");
        try {
            if (Files.isRegularFile(spec, LinkOption.NOFOLLOW_LINKS) && Files.size(spec) <= (1 << 20)) {
                given = JSON.readTree(spec.toFile());
            }
        } catch (IOException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox " + c.getSandboxId() + ": its spec " + spec
                    + " is not JSON: " + e.getMessage());
        }
        ObjectNode root = JSON.createObjectNode();
        root.put("ociVersion", "1.1.0");
        ObjectNode process = root.putObject("process");
        process.putObject("user").put("uid", 65535).put("gid", 65535);
        process.putArray("args").add("/pause");
        process.putArray("env").add("PATH=/");
        process.put("cwd", "/");
        process.put("noNewPrivileges", true);
        root.putObject("root").put("path", "rootfs").put("readonly", true);
        root.put("hostname", hostname);
        ArrayNode mounts = root.putArray("mounts");
        mounts.addObject().put("destination", "/proc").put("type", "proc").put("source", "proc");
        mounts.addObject().put("destination", "/dev").put("type", "tmpfs").put("source", "tmpfs").putArray("options")
                .add("nosuid").add("strictatime").add("mode=755").add("size=65536k");
        ObjectNode linux = root.putObject("linux");
        ArrayNode ns = linux.putArray("namespaces");
        for (String type : List.of("pid", "ipc", "uts", "mount")) {
            ns.addObject().put("type", type);
        }
        ns.addObject().put("type", "network").put("path", c.getNetnsPath());
        ObjectNode annotations = root.putObject("annotations");
        given.path("annotations").fields().forEachRemaining(e -> {
            if ((e.getKey().startsWith("io.kubernetes.cri.") || e.getKey().equals(OciSpec.WRITABLE_LAYER_MIB))
                    && e.getValue().isTextual()) {
                annotations.put(e.getKey(), e.getValue().asText());
            }
        });
        size.forEach(annotations::put); // the pod's size, as the kubelet sent it
        annotations.put("io.kubernetes.cri.container-type", "sandbox");
        annotations.put(OciSpec.SANDBOX_ID, c.getSandboxId());
        Path dir = bundle.resolve("rund-pod");
        try {
            Files.createDirectories(dir);
            Files.writeString(dir.resolve("config.json"), JSON.writeValueAsString(root));
        } catch (IOException e) {
            throw new TaskFault(Fault.INTERNAL, "sandbox " + c.getSandboxId() + ": write its pause's spec in " + dir
                    + ": " + e.getMessage());
        }
        return dir;
    }

    /**
     * The pod's hostname, DNS and size, from CreateSandbox's options: a CRI PodSandboxConfig.
     * {@code resources} are CRI's sandbox annotations for them (what containerd puts on a
     * pause container's spec): memory, cpu quota, period and shares, those the kubelet sent.
     */
    record PodConfig(String hostname, List<String> servers, List<String> searches, List<String> options,
            java.util.Map<String, String> resources) {}

    /**
     * The fields of a PodSandboxConfig (CRI runtime.v1; hostname 2, dns_config 4 holding
     * servers 1, searches 2, options 3; linux 8 holding resources 5, a LinuxContainerResources
     * of cpu_period 1, cpu_quota 2, cpu_shares 3, memory_limit_in_bytes 4) that make the
     * pod's /etc files and size it; each /etc value a line of its own, so none may hold a
     * line break.
     */
    static PodConfig podConfig(String sandboxId, com.google.protobuf.Any options) throws TaskFault {
        try {
            UnknownFieldSet config = UnknownFieldSet.parseFrom(options.getValue());
            String hostname = first(config, 2);
            UnknownFieldSet dns = message(config, 4);
            java.util.Map<String, String> resources = new java.util.LinkedHashMap<>();
            UnknownFieldSet linux = message(config, 8);
            UnknownFieldSet res = message(linux, 5);
            String[] keys = {null, "io.kubernetes.cri.sandbox-cpu-period", "io.kubernetes.cri.sandbox-cpu-quota",
                    "io.kubernetes.cri.sandbox-cpu-shares", "io.kubernetes.cri.sandbox-memory"};
            for (int f = 1; f <= 4; f++) {
                List<Long> v = res.getField(f).getVarintList();
                if (!v.isEmpty() && v.getLast() > 0) {
                    resources.put(keys[f], Long.toString(v.getLast()));
                }
            }
            PodConfig p = new PodConfig(hostname, strings(dns, 1), strings(dns, 2), strings(dns, 3), resources);
            for (String s : concat(List.of(hostname), p.servers(), p.searches(), p.options())) {
                if (s.indexOf('\n') >= 0 || s.indexOf('\r') >= 0 || s.length() > 1024) {
                    throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox " + sandboxId + ": pod config value "
                            + s.strip() + " cannot be a line of /etc/hostname or /etc/resolv.conf");
                }
            }
            return p;
        } catch (com.google.protobuf.InvalidProtocolBufferException e) {
            throw new TaskFault(Fault.INVALID_ARGUMENT, "sandbox " + sandboxId + ": options " + options.getTypeUrl()
                    + " are not a PodSandboxConfig: " + e.getMessage());
        }
    }

    private static UnknownFieldSet message(UnknownFieldSet set, int field)
            throws com.google.protobuf.InvalidProtocolBufferException {
        List<com.google.protobuf.ByteString> m = set.getField(field).getLengthDelimitedList();
        return m.isEmpty() ? UnknownFieldSet.getDefaultInstance() : UnknownFieldSet.parseFrom(m.getLast());
    }

    @SafeVarargs
    private static List<String> concat(List<String>... lists) {
        return java.util.Arrays.stream(lists).flatMap(List::stream).toList();
    }

    private static String first(UnknownFieldSet set, int field) {
        List<String> all = strings(set, field);
        return all.isEmpty() ? "" : all.getFirst();
    }

    private static List<String> strings(UnknownFieldSet set, int field) {
        return set.getField(field).getLengthDelimitedList().stream().map(com.google.protobuf.ByteString::toStringUtf8)
                .toList();
    }

    /** The pod's /etc/hostname, /etc/hosts and /etc/resolv.conf, made as containerd's CRI makes them for a pause container. */
    private static void writePodFiles(String sandboxId, PodConfig p, String hostname, Path dir) throws TaskFault {
        StringBuilder resolv = new StringBuilder();
        if (!p.searches().isEmpty()) {
            resolv.append("search ").append(String.join(" ", p.searches())).append('\n');
        }
        p.servers().forEach(s -> resolv.append("nameserver ").append(s).append('\n'));
        if (!p.options().isEmpty()) {
            resolv.append("options ").append(String.join(" ", p.options())).append('\n');
        }
        try {
            Files.createDirectories(dir);
            Files.writeString(dir.resolve("hostname"), hostname + "\n");
            Files.copy(Path.of("/etc/hosts"), dir.resolve("hosts"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            if (resolv.isEmpty()) {
                Files.copy(Path.of("/etc/resolv.conf"), dir.resolve("resolv.conf"),
                        java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            } else {
                Files.writeString(dir.resolve("resolv.conf"), resolv);
            }
        } catch (IOException e) {
            throw new TaskFault(Fault.INTERNAL, "sandbox " + sandboxId + ": write the pod's files in " + dir + ": "
                    + e.getMessage());
        }
    }

    /** {@code spec} with the pod's /etc files from {@code dir} bound in, where its own spec binds nothing at that path. */
    static ContainerSpec withPodFiles(ContainerSpec spec, Path dir) throws TaskFault {
        java.util.Set<String> bound = new java.util.HashSet<>();
        spec.files().forEach(f -> bound.add(f.destination()));
        spec.dirs().forEach(d -> bound.add(d.destination()));
        java.util.List<ContainerSpec.FileMount> more = new java.util.ArrayList<>();
        for (String name : List.of("hostname", "hosts", "resolv.conf")) {
            if (!bound.contains("/etc/" + name)) {
                try {
                    more.add(new ContainerSpec.FileMount("/etc/" + name, Files.readAllBytes(dir.resolve(name)), false));
                } catch (IOException e) {
                    throw new TaskFault(Fault.INTERNAL, "container " + spec.id() + ": the pod's /etc/" + name + " in " + dir
                            + ": " + e.getMessage());
                }
            }
        }
        return spec.withFiles(more);
    }

    private StopSandboxResponse stop(StopSandboxRequest r) throws TaskFault {
        check(r.getSandboxId());
        Pod pod = tasks.sandboxOrNull();
        if (pod != null) {
            stopAsked = true;
            pod.stop(r.getTimeoutSecs() > 0 ? Duration.ofSeconds(r.getTimeoutSecs()) : STOP_GRACE);
        }
        return StopSandboxResponse.getDefaultInstance();
    }

    private WaitSandboxResponse waitFor(WaitSandboxRequest r) throws Exception {
        check(r.getSandboxId());
        if (tasks.sandboxOrNull() == null) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + r.getSandboxId() + " is not started");
        }
        try {
            CompletableFuture.anyOf(ended, tasks.leaving).get();
            if (!ended.isDone()) {
                throw new TaskFault(Fault.NOT_RUN, "the daemon is stopping: wait for sandbox " + r.getSandboxId()
                        + " goes on with the next one");
            }
            return ended.get();
        } catch (ExecutionException e) {
            throw new TaskFault(Fault.INTERNAL, "sandbox " + r.getSandboxId() + ": " + e.getCause());
        }
    }

    private SandboxStatusResponse status(SandboxStatusRequest r) throws TaskFault {
        check(r.getSandboxId());
        Pod pod = tasks.sandboxOrNull();
        SandboxStatusResponse.Builder b = SandboxStatusResponse.newBuilder().setSandboxId(r.getSandboxId());
        boolean running = pod != null && !ended.isDone();
        b.setState(running ? "SANDBOX_READY" : "SANDBOX_NOTREADY");
        if (pod != null) {
            b.setPid((int) pod.vmPid()).setCreatedAt(Timestamps.of(startOf(pod)));
            if (ended.isDone()) {
                b.setExitedAt(ended.join().getExitedAt());
            }
        }
        return b.build();
    }

    private PingResponse ping(PingRequest r) throws TaskFault {
        check(r.getSandboxId());
        Pod pod = tasks.sandboxOrNull();
        if (pod == null || ended.isDone()) {
            throw new TaskFault(Fault.FAILED_PRECONDITION, "sandbox " + r.getSandboxId() + "'s VM is not running");
        }
        return PingResponse.getDefaultInstance();
    }

    private ShutdownSandboxResponse shutdown(ShutdownSandboxRequest r) throws TaskFault {
        check(r.getSandboxId());
        stopAsked = true;
        // After the answer has gone out: the endpoint ends, stopping the VM if it still runs.
        CompletableFuture.delayedExecutor(100, TimeUnit.MILLISECONDS).execute(tasks::close);
        return ShutdownSandboxResponse.getDefaultInstance();
    }
}
