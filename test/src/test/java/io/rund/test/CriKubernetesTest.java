package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import io.rund.test.cri.Device;
import io.rund.test.cri.ExecSyncResponse;
import io.rund.test.cri.LinuxContainerResources;
import io.rund.test.cri.Mount;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.PodSandboxConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * A pod as Kubernetes makes one, the kubelet played by the test: its volumes laid out as
 * the kubelet lays them out (configMap, secret, projected and downwardAPI directories
 * written by the kubelet's atomic writer and updated by its {@code ..data} swap; hostPath
 * directories; emptyDirs on disk and in memory with a sizeLimit; a subPath), and its size
 * sent as CRI sends it. Every volume check runs in a runc pod and in a rund pod on the
 * same containerd, and what the containers see must be the same.
 */
@Timeout(600)
class CriKubernetesTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static Containerd ctd;
    private static CriClient cri;
    private static CriPods pods;
    /** Host mounts the test made as the kubelet would; undone at the end, last first. */
    private static final List<Path> MOUNTS = new ArrayList<>();

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        pods = CriPods.start("k8s");
        ctd = pods.ctd();
        cri = pods.cri();
    }

    @AfterAll
    static void stop() throws Exception {
        for (Path p : MOUNTS.reversed()) {
            Command.run(T, null, Map.of(), List.of("umount", "-l", p.toString()));
        }
        if (pods != null) {
            pods.close();
        }
    }

    /**
     * What the kubelet's atomic writer does to a configMap, secret, projected or downwardAPI
     * volume: the files in a new timestamped directory, {@code ..data_tmp} pointing at it
     * renamed over {@code ..data}, a symlink {@code key -> ..data/key} per key, and the old
     * directory removed.
     */
    static void kubeletWrite(Path volume, Map<String, String> files, int generation) throws IOException {
        Files.createDirectories(volume);
        Path ts = volume.resolve("..2026_11_28_00_00_0" + generation + ".000000001");
        Files.createDirectory(ts);
        for (var e : files.entrySet()) {
            Files.writeString(ts.resolve(e.getKey()), e.getValue());
        }
        Path data = volume.resolve("..data");
        Path old = Files.isSymbolicLink(data) ? volume.resolve(Files.readSymbolicLink(data)) : null;
        Path tmp = Files.createSymbolicLink(volume.resolve("..data_tmp"), ts.getFileName());
        Files.move(tmp, data, StandardCopyOption.ATOMIC_MOVE); // rename(2) over the old link
        for (String key : files.keySet()) {
            Path link = volume.resolve(key);
            if (!Files.isSymbolicLink(link)) {
                Files.createSymbolicLink(link, Path.of("..data", key));
            }
        }
        if (old != null) {
            try (Stream<Path> s = Files.walk(old)) {
                for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                    Files.delete(p);
                }
            }
        }
    }

    private static void mount(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("mount"));
        cmd.addAll(List.of(args));
        Command.run(T, null, Map.of(), cmd).ok();
        MOUNTS.add(Path.of(args[args.length - 1]));
    }

    private static Mount bind(String containerPath, Path hostPath, boolean readOnly) {
        return Mount.newBuilder().setContainerPath(containerPath).setHostPath(hostPath.toString()).setReadonly(readOnly)
                .build();
    }

    private static String sh(String container, String script) {
        ExecSyncResponse r = pods.exec(container, "sh", "-c", script);
        return r.getStdout().toStringUtf8() + (r.getExitCode() == 0 ? "" : "[exit " + r.getExitCode() + "] "
                + r.getStderr().toStringUtf8().strip());
    }

    /** Polls {@code script} in {@code container} until it prints {@code want}, for at most {@code seconds}. */
    private static String await(String container, String script, String want, int seconds) throws InterruptedException {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        String got = sh(container, script);
        long t0 = System.nanoTime();
        while (!got.equals(want) && System.nanoTime() < end) {
            Thread.sleep(250);
            got = sh(container, script);
        }
        System.out.println("k8s: " + script + " printed " + got.strip() + " after " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        return got;
    }

    /** The volumes of one pod under {@code handler}: what its containers see, in order. */
    private static Map<String, String> volumesUnder(String handler) throws Exception {
        Path pod = Files.createDirectories(ctd.dir.resolve("kubelet/pods/uid-vol-" + handler));
        Path volumes = pod.resolve("volumes");
        Path cfg = volumes.resolve("kubernetes.io~configmap/cfg");
        kubeletWrite(cfg, Map.of("color", "red"), 1);
        Path sec = Files.createDirectories(volumes.resolve("kubernetes.io~secret/sec"));
        mount("-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", sec.toString()); // the kubelet keeps secrets off disk
        kubeletWrite(sec, Map.of("password", "s1"), 1);
        Path token = volumes.resolve("kubernetes.io~projected/kube-api-access");
        kubeletWrite(token, Map.of("token", "t1", "namespace", "default"), 1);
        Path info = volumes.resolve("kubernetes.io~downward-api/podinfo");
        kubeletWrite(info, Map.of("labels", "app=\"web\"\n"), 1);
        Path hostRw = Files.createDirectories(ctd.dir.resolve("host-rw-" + handler));
        Path hostRo = Files.createDirectories(ctd.dir.resolve("host-ro-" + handler));
        Files.writeString(hostRo.resolve("ro-file"), "from-host\n");
        Path mem = Files.createDirectories(volumes.resolve("kubernetes.io~empty-dir/mem"));
        mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", mem.toString()); // medium: Memory, sizeLimit: 16Mi
        Path work = Files.createDirectories(volumes.resolve("kubernetes.io~empty-dir/work"));
        Command.run(T, null, Map.of(), List.of("chmod", "0777", mem.toString(), work.toString())).ok(); // as the kubelet does
        // subPath "sub" of work for container side: the kubelet makes the directory and binds it.
        Files.createDirectories(work.resolve("sub"));
        Path subPath = Files.createDirectories(pod.resolve("volume-subpaths/work/side/0"));
        mount("--bind", work.resolve("sub").toString(), subPath.toString());

        PodSandboxConfig config = pods.pod("vol-" + handler, NamespaceMode.POD);
        String podId = pods.runPod(config, handler);
        String loop = "while :; do sleep 1; done";
        String app = pods.createAndStart(podId, config, CriPods.container("app", loop).addAllMounts(List.of(
                bind("/etc/cfg", cfg, true), bind("/etc/sec", sec, true), bind("/var/run/secrets/token", token, true),
                bind("/etc/podinfo", info, true), bind("/rw", hostRw, false), bind("/ro", hostRo, true),
                bind("/mem", mem, false), bind("/work", work, false))));
        String side = pods.createAndStart(podId, config, CriPods.container("side", loop).addAllMounts(List.of(
                bind("/sub", subPath, false), bind("/mem", mem, false))));

        Map<String, String> seen = new LinkedHashMap<>();
        seen.put("configMap", sh(app, "cat /etc/cfg/color"));
        seen.put("secret", sh(app, "cat /etc/sec/password"));
        seen.put("token", sh(app, "cat /var/run/secrets/token/token /var/run/secrets/token/namespace"));
        seen.put("downwardAPI", sh(app, "cat /etc/podinfo/labels"));
        // The kubelet's updates: a changed key and a new one, a rotated secret and token.
        kubeletWrite(cfg, Map.of("color", "blue", "size", "L"), 2);
        kubeletWrite(sec, Map.of("password", "s2"), 2);
        kubeletWrite(token, Map.of("token", "t2", "namespace", "default"), 2);
        seen.put("configMap updated", await(app, "cat /etc/cfg/color /etc/cfg/size", "blueL", 10));
        seen.put("secret updated", await(app, "cat /etc/sec/password", "s2", 10));
        seen.put("token updated", await(app, "cat /var/run/secrets/token/token", "t2", 10));
        seen.put("configMap read-only", sh(app, "touch /etc/cfg/x 2>/dev/null || echo refused"));

        seen.put("hostPath rw", sh(app, "echo from-ctr > /rw/out && cat /rw/out"));
        assertEquals("from-ctr\n", Files.readString(hostRw.resolve("out")), handler + ": a rw hostPath writes the host's");
        seen.put("hostPath ro", sh(app, "cat /ro/ro-file; touch /ro/x 2>/dev/null || echo refused"));

        seen.put("memory emptyDir", sh(app, "awk '$2==\"/mem\" {print $3}' /proc/mounts; stat -c %a /mem;"
                + " df -k /mem | awk 'NR==2 {print $2}'"));
        seen.put("memory emptyDir full", sh(app, "dd if=/dev/zero of=/mem/big bs=1M count=20 2>&1 | grep -o 'No space left'"
                + "; rm /mem/big; echo shared > /mem/note"));
        seen.put("memory emptyDir shared", sh(side, "cat /mem/note"));
        seen.put("disk emptyDir", sh(app, "stat -c %a /work; echo deep > /work/sub/f"));
        seen.put("subPath", sh(side, "cat /sub/f; ls /sub"));
        if (handler.equals("rund")) {
            // The VM's: its memory volume is the guest's tmpfs, its emptyDir the guest's disk.
            try (Stream<Path> s = Files.list(mem)) {
                assertEquals(List.of(), s.toList(), "rund's memory volume lives in the VM, not in the host's tmpfs");
            }
            assertFalse(Files.exists(work.resolve("sub/f")), "rund's emptyDir lives in the VM, not on the host");
        }
        pods.stopAndRemovePod(podId);
        return seen;
    }

    @Test
    void directoryVolumesFollowTheKubeletAndEmptyDirsKeepTheirMediumAsUnderRunc() throws Exception {
        Map<String, String> runc = volumesUnder("runc");
        Map<String, String> rund = volumesUnder("rund");
        Map<String, String> want = new LinkedHashMap<>();
        want.put("configMap", "red");
        want.put("secret", "s1");
        want.put("token", "t1default");
        want.put("downwardAPI", "app=\"web\"\n");
        want.put("configMap updated", "blueL");
        want.put("secret updated", "s2");
        want.put("token updated", "t2");
        want.put("configMap read-only", "refused\n");
        want.put("hostPath rw", "from-ctr\n");
        want.put("hostPath ro", "from-host\nrefused\n");
        want.put("memory emptyDir", "tmpfs\n777\n16384\n");
        want.put("memory emptyDir full", "No space left\n");
        want.put("memory emptyDir shared", "shared\n");
        want.put("disk emptyDir", "777\n");
        want.put("subPath", "deep\nf\n");
        assertEquals(want, runc, "runc, the reference");
        assertEquals(want, rund, "rund");
        ctd.awaitNothingLeft();
    }

    @Test
    void aPodsVmIsSizedAsDeclaredAndBlockVolumesAreRefusedByName() throws Exception {
        // 512 MiB and 1.5 CPUs for the pod's containers together, as the kubelet sums them.
        PodSandboxConfig plain = pods.pod("sized", NamespaceMode.POD);
        PodSandboxConfig config = plain.toBuilder().setLinux(plain.getLinux().toBuilder().setResources(
                LinuxContainerResources.newBuilder().setMemoryLimitInBytes(512L << 20).setCpuQuota(150_000)
                        .setCpuPeriod(100_000).setCpuShares(1536))).build();
        String podId = pods.runPod(config, "rund");
        String app = pods.createAndStart(podId, config, CriPods.container("app", "while :; do sleep 1; done"));
        assertEquals("2\n", sh(app, "nproc"), "1.5 CPUs need 2 vCPUs");
        long memTotalKiB = Long.parseLong(sh(app, "awk '/MemTotal/ {print $2}' /proc/meminfo").strip());
        // 512 MiB + 64 MiB for the guest, rounded up to 640 MiB; the guest kernel keeps some of it.
        assertTrue(memTotalKiB > 576 * 1024 && memTotalKiB <= 640 * 1024, "MemTotal " + memTotalKiB + " KiB");
        // On the host the VM's cgroup holds the pod: its shares and quota, its RAM and QEMU's.
        Path cpu = Path.of("/sys/fs/cgroup/cpu", ctd.pool, podId);
        assertEquals("1536", Files.readString(cpu.resolve("cpu.shares")).strip());
        assertEquals("150000", Files.readString(cpu.resolve("cpu.cfs_quota_us")).strip());
        assertEquals(String.valueOf((640L + 160) << 20),
                Files.readString(Path.of("/sys/fs/cgroup/memory", ctd.pool, podId, "memory.limit_in_bytes")).strip());

        // volumeDevices: a host block device cannot be handed to a VM. CRI makes the task at
        // StartContainer, and that is where rund says which device it refused.
        Path loop = Stream.of("/dev/loop0", "/dev/loop1", "/dev/loop2").map(Path::of).filter(Files::exists).findFirst()
                .orElseThrow(() -> new AssertionError("no loop device on this host"));
        String block = pods.create(podId, config, CriPods.container("block", "sleep 1").addDevices(Device.newBuilder()
                .setContainerPath("/dev/xvdb").setHostPath(loop.toString()).setPermissions("rwm")));
        CriClient.CriException refused = assertThrows(CriClient.CriException.class, () -> cri.runtime("StartContainer",
                io.rund.test.cri.StartContainerRequest.newBuilder().setContainerId(block).build(),
                io.rund.test.cri.StartContainerResponse.parser()));
        assertTrue(refused.getMessage().contains("devices: /dev/xvdb") && refused.getMessage().contains("not passed into a VM"),
                refused.getMessage());
        assertNotEquals(io.grpc.Status.Code.OK, refused.code);
        assertEquals("2\n", sh(app, "nproc"), "the pod runs on");
        pods.stopAndRemovePod(podId);
        ctd.awaitNothingLeft();
    }

}
