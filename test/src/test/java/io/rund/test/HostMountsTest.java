package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import io.rund.testing.Command;
import io.rund.testing.Trees;
import io.rund.test.cri.Mount;
import io.rund.test.cri.MountPropagation;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.PodSandboxConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * Nothing a pod does touches the node's mounts. A host directory is made a shared mount
 * (as / is on a systemd host, and /var/lib/kubelet on every node) with a tmpfs mounted
 * below it; containers bind it under runc and under rund on one containerd (ctr and CRI;
 * read-only and writable; bind and rbind; the daemon killed between), and after each the
 * host's mount table, but for rund's own directories, must be byte for byte what it was.
 * Mounts the host makes below the directory later must reach a container exactly where
 * they reach runc's: by the bind's propagation (rprivate, rslave, rshared) or, without one,
 * the root's (rslave).
 */
@Timeout(900)
class HostMountsTest {

    private static final Duration T = Duration.ofSeconds(120);
    private static final String RUNC = "io.containerd.runc.v2";
    private static final String RUND = "io.containerd.rund.v2";
    /** Outside the test's directory, whose containerd mounts come and go with its tasks. */
    private static final Path HP = Path.of("/tmp/rund-host-mounts");
    private static Containerd ctd;
    private static CriPods pods;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        unmountAll();
        Trees.delete(HP);
        Files.createDirectories(HP);
        sh("mount --bind " + HP + " " + HP + " && mount --make-rshared " + HP + " && mkdir " + HP + "/sub " + HP
                + "/later && mount -t tmpfs -o size=1m rund-test-sub " + HP + "/sub && echo below > " + HP + "/sub/f");
        pods = CriPods.start("hostmounts");
        ctd = pods.ctd();
    }

    @AfterAll
    static void stop() throws Exception {
        try {
            if (pods != null) {
                pods.close();
            }
        } finally {
            unmountAll();
            Trees.delete(HP);
        }
    }

    private static void unmountAll() throws Exception {
        Command.run(T, null, Map.of(), List.of("umount", "-R", "-l", HP.toString()));
    }

    private static void sh(String script) throws Exception {
        Command.Result r = Command.run(T, null, Map.of(), List.of("sh", "-c", script));
        assertEquals(0, r.exitCode(), script + ": " + r);
    }

    /**
     * The host's mount table (this process's mount namespace is the host's), every field of
     * every line, but for mounts at or below rund's state directory and a standby daemon's
     * rehearsal (its store and its state directory, a mount of its own): those are rund's own.
     */
    private static List<String> hostMounts() throws Exception {
        String state = ctd.rundState.toString();
        List<String> lines = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
            String at = line.split(" ")[4];
            if (!at.equals(state) && !at.startsWith(state + "/") && !at.contains("/.rehearsal-")
                    && !at.contains("/rund-rehearsal-")) {
                lines.add(line);
            }
        }
        return lines;
    }

    private static String bind(String options) {
        return "type=bind,src=" + HP + ",dst=/hp,options=" + options;
    }

    private static String shown(Command.Result r) {
        return "exit " + r.exitCode() + "\n" + r.stdout() + r.stderr();
    }

    @Test
    void containersLeaveTheHostsMountsAsTheyWere() throws Exception {
        List<String> before = hostMounts();
        Map<String, String> scripts = new LinkedHashMap<>();
        // (Only the top: runc leaves the mounts below a read-only rbind writable, rund does not; docs/oci.md.)
        scripts.put("rbind:ro", "cat /hp/sub/f; touch /hp/x 2>/dev/null || echo refused");
        scripts.put("rbind:rw", "cat /hp/sub/f; echo w >> /hp/sub/w; cat /hp/sub/w; rm /hp/sub/w");
        scripts.put("bind:ro", "ls -A /hp/sub; ls /hp");
        scripts.put("bind:rw", "ls -A /hp/sub; touch /hp/sub/x; ls -A /hp/sub; rm /hp/sub/x");
        for (var c : scripts.entrySet()) {
            List<String> seen = new ArrayList<>();
            for (String runtime : List.of(RUNC, RUND)) {
                String id = (runtime.equals(RUNC) ? "runc-" : "rund-") + c.getKey().replace(':', '-');
                seen.add(shown(ctd.ctr(T, "run", "--rm", "--mount", bind(c.getKey()), "--runtime", runtime, Containerd.IMAGE,
                        id, "sh", "-c", c.getValue())));
                assertEquals(before, hostMounts(), "the host's mounts after " + id);
            }
            assertEquals(seen.get(0), seen.get(1), c.getKey() + ": under runc (expected) and under rund");
        }
        assertEquals("below\n", Files.readString(HP.resolve("sub/f")), "the host's tmpfs is still there");

        // CRI hostPaths: read-only and private (the kubelet's default), writable and HostToContainer.
        // (A pod each: a pod binding one directory both read-only and writable is issue-noted.)
        List<String> seen = new ArrayList<>();
        for (String handler : List.of("runc", "rund")) {
            for (boolean readOnly : List.of(true, false)) {
                PodSandboxConfig pod = pods.pod("hp-" + handler + (readOnly ? "-ro" : "-rw"), NamespaceMode.POD);
                String podId = pods.runPod(pod, handler);
                String app = pods.createAndStart(podId, pod, "app", "sleep 1000", Mount.newBuilder().setContainerPath("/hp")
                        .setHostPath(HP.toString()).setReadonly(readOnly).setPropagation(readOnly
                                ? MountPropagation.PROPAGATION_PRIVATE : MountPropagation.PROPAGATION_HOST_TO_CONTAINER).build());
                var r = pods.exec(app, "sh", "-c", readOnly ? "cat /hp/sub/f; touch /hp/x 2>/dev/null || echo refused"
                        : "cat /hp/sub/f; echo w > /hp/sub/w && cat /hp/sub/w && rm /hp/sub/w");
                seen.add(r.getExitCode() + "\n" + r.getStdout().toStringUtf8() + r.getStderr().toStringUtf8());
                pods.stopAndRemovePod(podId);
                assertEquals(before, hostMounts(), "the host's mounts after a CRI pod under " + handler);
            }
        }
        assertEquals(List.of("0\nbelow\nrefused\n", "0\nbelow\nw\n"), seen.subList(0, 2), "runc");
        assertEquals(seen.subList(0, 2), seen.subList(2, 4), "CRI hostPaths: under runc (expected) and under rund");

        // A daemon killed while a container binds the directory, and the next one taking over.
        assertEquals(0, ctd.ctr(T, "run", "-d", "--mount", bind("rbind:rw"), "--runtime", RUND, Containerd.IMAGE,
                "rund-across", "sleep", "1000").exitCode());
        ctd.awaitTask("rund-across", "RUNNING");
        ctd.awaitStandby();
        long old = ctd.daemonPid();
        ProcessHandle.of(old).ifPresent(p -> {
            p.destroyForcibly();
            p.onExit().join();
        });
        ctd.awaitNewDaemon(old, Duration.ofSeconds(60));
        Command.Result across = ctd.ctr(T, "task", "exec", "--exec-id", "e1", "rund-across", "cat", "/hp/sub/f");
        assertEquals("below\n", across.stdout(), across.toString());
        ctd.killAndDelete("rund-across");
        assertEquals(before, hostMounts(), "the host's mounts after a container that crossed a daemon's death");
        ctd.awaitNothingLeft();
    }

    @Test
    void laterHostMountsReachAContainerWhereTheyReachRuncs() throws Exception {
        List<String> before = hostMounts();
        List<String> propagations = List.of("", "rprivate", "rslave", "rshared");
        List<String> ids = new ArrayList<>();
        for (String runtime : List.of(RUNC, RUND)) {
            for (String p : propagations) {
                String id = (runtime.equals(RUNC) ? "runc-" : "rund-") + "later-" + (p.isEmpty() ? "default" : p);
                Command.Result r = ctd.ctr(T, "run", "-d", "--mount", bind("rbind:ro" + (p.isEmpty() ? "" : ":" + p)),
                        "--runtime", runtime, Containerd.IMAGE, id, "sleep", "1000");
                assertEquals(0, r.exitCode(), r.toString());
                ids.add(id);
            }
        }
        for (String id : ids) {
            ctd.awaitTask(id, "RUNNING");
        }
        sh("mount -t tmpfs -o size=1m rund-test-later " + HP + "/later && echo after > " + HP + "/later/g");
        Map<String, String> mounted = seenIn(ids, "after");
        sh("umount " + HP + "/later");
        Map<String, String> unmounted = seenIn(ids, "absent");
        Map<String, String> want = Map.of("default", "after", "rprivate", "absent", "rslave", "after", "rshared", "after");
        for (String p : propagations) {
            String key = p.isEmpty() ? "default" : p;
            assertEquals(want.get(key), mounted.get("runc-later-" + key), "runc, " + key + ", once the host mounted");
            assertEquals(mounted.get("runc-later-" + key), mounted.get("rund-later-" + key),
                    key + ", once the host mounted: under runc (expected) and under rund");
            assertEquals("absent", unmounted.get("runc-later-" + key), "runc, " + key + ", once the host unmounted");
            assertEquals("absent", unmounted.get("rund-later-" + key), "rund, " + key + ", once the host unmounted");
        }
        for (String id : ids) {
            ctd.killAndDelete(id);
        }
        assertEquals(before, hostMounts(), "the host's mounts after the containers");
        ctd.awaitNothingLeft();
    }

    /**
     * What each container sees at /hp/later/g ("after", its contents, or "absent"), read
     * again for up to 5 s while it is not {@code expect} (rund's share caches for 1 s).
     */
    private static Map<String, String> seenIn(List<String> ids, String expect) throws Exception {
        Map<String, String> seen = new LinkedHashMap<>();
        int n = 0;
        for (String id : ids) {
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            String got;
            do {
                Command.Result r = ctd.ctr(T, "task", "exec", "--exec-id", "look" + n++, id, "sh", "-c",
                        "cat /hp/later/g 2>/dev/null || echo absent");
                assertNotEquals("", r.stdout(), r.toString());
                got = r.stdout().strip();
            } while (!got.equals(expect) && System.nanoTime() < end);
            seen.put(id, got);
        }
        return seen;
    }
}
