package io.rund.test;

import io.rund.test.cri.LinuxContainerResources;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.PodSandboxConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;

/**
 * What an idle pod costs the host, for a RuntimeClass's {@code overhead.podFixed}: N pods
 * of one busybox {@code sleep} each through CRI, under rund (the default size, and sized
 * for 512 MiB) and runc on the same containerd; then the PSS of each pod's host processes
 * (rund: its VM and helpers, the processes of its cgroup, and its relay; runc: its shim and
 * everything below it), medians. Run by `hack/bench pod-overhead`; prints Markdown.
 *
 * <p>Argument: pods per kind (default 5).
 */
public final class PodOverheadBench {

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 5;
        try (Containerd ctd = new Containerd("podcost"); CriClient cri = new CriClient(ctd.socket)) {
            ctd.importCriImages();
            CriPods pods = new CriPods(ctd, cri);
            System.out.println("| runtime | pod | pods | PSS per pod, median KiB | of which VM (QEMU) | helpers | relay or shim |");
            System.out.println("|---|---|---|---|---|---|---|");
            for (String kind : List.of("runc", "rund", "rund-512Mi")) {
                List<String> ids = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    PodSandboxConfig pod = pods.pod(kind.toLowerCase() + "-" + i, NamespaceMode.POD);
                    if (kind.endsWith("512Mi")) {
                        pod = pod.toBuilder().setLinux(pod.getLinux().toBuilder().setResources(
                                LinuxContainerResources.newBuilder().setMemoryLimitInBytes(512L << 20))).build();
                    }
                    String id = pods.runPod(pod, kind.startsWith("rund") ? "rund" : "runc");
                    pods.createAndStart(id, pod, "sleep", "exec sleep 100000");
                    ids.add(id);
                }
                Thread.sleep(10_000); // guests settle, spares refill
                long[][] parts = new long[n][];
                for (int i = 0; i < n; i++) {
                    parts[i] = kind.startsWith("rund") ? rund(ctd, ids.get(i)) : runc(ids.get(i));
                }
                System.out.printf("| %s | %s | %d | %d | %d | %d | %d |%n", kind.startsWith("rund") ? "rund" : "runc",
                        kind.endsWith("512Mi") ? "memory limit 512 MiB" : "no limits", n, median(parts, 0),
                        median(parts, 1), median(parts, 2), median(parts, 3));
                for (String id : ids) {
                    pods.stopAndRemovePod(id);
                }
            }
        }
    }

    /** Total, QEMU, helpers, relay: the processes of the pod's cgroup and its relay. */
    private static long[] rund(Containerd ctd, String podId) throws IOException {
        List<Long> procs = Files.readAllLines(Path.of("/sys/fs/cgroup/memory", ctd.pool, podId, "cgroup.procs")).stream()
                .filter(l -> !l.isBlank()).map(Long::parseLong).toList();
        long qemu = 0;
        long helpers = 0;
        for (long p : procs) {
            if (cmdline(p).contains("qemu-system")) {
                qemu += pss(p);
            } else {
                helpers += pss(p);
            }
        }
        long relay = 0;
        try (Stream<Path> s = Files.list(ctd.rundState.resolve("t"))) {
            for (Path record : s.filter(f -> f.toString().endsWith(".json")).toList()) {
                String json = Files.readString(record);
                if (json.contains("\"id\":\"" + podId + "\"")) {
                    var m = java.util.regex.Pattern.compile("\"relayPid\":(\\d+)").matcher(json);
                    relay = m.find() ? pss(Long.parseLong(m.group(1))) : 0;
                }
            }
        }
        return new long[] {qemu + helpers + relay, qemu, helpers, relay};
    }

    /** Total, 0, 0, shim: runc's shim for the pod and every process below it. */
    private static long[] runc(String podId) throws IOException {
        long total = 0;
        long shim = 0;
        for (ProcessHandle p : ProcessHandle.allProcesses().toList()) {
            String cmd = cmdline(p.pid());
            if (cmd.contains("containerd-shim-runc-v2") && cmd.contains(podId)) {
                shim = pss(p.pid());
                total = shim + p.descendants().mapToLong(d -> pss(d.pid())).sum();
            }
        }
        return new long[] {total, 0, 0, shim};
    }

    private static String cmdline(long pid) {
        try {
            return new String(Files.readAllBytes(Path.of("/proc/" + pid + "/cmdline"))).replace('\0', ' ');
        } catch (IOException e) {
            return "";
        }
    }

    private static long pss(long pid) {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/" + pid + "/smaps_rollup"))) {
                if (l.startsWith("Pss:")) {
                    return Long.parseLong(l.replaceAll("\\D", ""));
                }
            }
        } catch (IOException | NumberFormatException e) {
            // gone
        }
        return 0;
    }

    private static long median(long[][] rows, int column) {
        long[] v = Arrays.stream(rows).mapToLong(r -> r[column]).sorted().toArray();
        return v[(v.length - 1) / 2];
    }
}
