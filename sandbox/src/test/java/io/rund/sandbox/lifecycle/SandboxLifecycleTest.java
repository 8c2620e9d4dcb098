package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.rootfs.RootfsMount;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.guest.StreamChunk;
import io.rund.sandbox.guest.ProcessSpec;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Whole sandboxes: real QEMU, guest, virtiofsd, XFS reflink store and cgroupfs. */
@Timeout(600)
class SandboxLifecycleTest {

    private static final Duration T = Duration.ofSeconds(30);
    private static Fixture fx;
    private static SandboxManager manager;
    private static final AtomicInteger EXECS = new AtomicInteger();

    @BeforeAll
    static void setUp() throws Exception {
        fx = new Fixture("life");
        manager = fx.manager();
    }

    @AfterAll
    static void tearDown() throws Exception {
        if (fx != null) {
            fx.close();
        }
    }

    static String run(Sandbox sb, String... args) throws AgentException {
        return runIn(sb, sb.id(), args);
    }

    /** Runs a command in one container of the sandbox: "status:stdout". */
    static String runIn(Sandbox sb, String cid, String... args) throws AgentException {
        return runWith(sb, cid, List.of("CAP_DAC_OVERRIDE"), args);
    }

    /** Runs a command with capabilities {@code caps}: "status:stdout". */
    static String runWith(Sandbox sb, String cid, List<String> caps, String... args) throws AgentException {
        AgentClient agent = sb.agent();
        String exec = "e" + EXECS.incrementAndGet();
        agent.execProcess(cid, exec, ProcessSpec.of(List.of(args), List.of("PATH=/bin"), "/")
                .withCapabilities(new ProcessSpec.Capabilities(caps, caps, caps, List.of(), List.of())));
        agent.startProcess(cid, exec);
        agent.closeStdin(cid, exec);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        StreamChunk c;
        do {
            c = agent.readStdout(cid, exec, 65536, T);
            out.writeBytes(c.data());
        } while (!c.eof());
        int status = agent.waitProcess(cid, exec, T).status();
        agent.deleteProcess(cid, exec);
        return status + ":" + out.toString(StandardCharsets.UTF_8);
    }

    @Test
    void aSandboxRunsShFromTheImageAndItsWritesStayInItsOwnLayer() throws Exception {
        String imageBefore = listing();
        Sandbox sb = manager.start(fx.spec("sb-one", "sh", "-c", "while :; do sleep 1; done"));
        try {
            assertTrue(sb.agent().startProcess("sb-one", "") > 1);
            assertEquals("0:from the top layer\n", run(sb, "cat", "/etc/image-file"));
            assertEquals("0:", run(sb, "sh", "-c", "echo written > /data.txt"));
            assertEquals("0:written\n", run(sb, "cat", "/data.txt"));
            assertEquals("0:sb-one-host\n", run(sb, "hostname"));
            assertTrue(Files.exists(sb.dir().resolve("state.json")));
            assertEquals(List.of(), fx.pool.claimed().get("sb-one") == null ? List.of("missing") : List.of());
            assertTrue(sb.cgroup().pids().contains(sb.vm().pid()), "QEMU must be in the sandbox's cgroup");
        } finally {
            sb.stop(Duration.ofSeconds(5));
        }
        sb.stop(Duration.ofSeconds(5)); // idempotent
        assertEquals(imageBefore, listing(), "the image's layers must be unchanged");
        assertFalse(Files.exists(fx.layerBin.resolve("data.txt")));
        fx.assertNothingLeft();
    }

    @Test
    void containersOfAPodShareItsVmButNotTheirImagesOrWrites() throws Exception {
        Path other = fx.base.resolve("layers/other");
        io.rund.sandbox.agent.TestGuest.installBusybox(other);
        Files.createDirectories(other.resolve("etc"));
        Files.writeString(other.resolve("etc/image-file"), "from the other image\n");
        List<RootfsMount> otherImage = List.of(new RootfsMount("bind", other.toString(), List.of("rbind", "ro")));
        String loop = "while :; do sleep 1; done";
        Sandbox sb = manager.start(fx.spec("pod-a", "sh", "-c", loop));
        try {
            sb.agent().startProcess("pod-a", "");
            sb.addContainer(Fixture.member("app", otherImage, "not-the-pods", "sh", "-c", loop));
            assertTrue(sb.agent().startProcess("app", "") > 1);
            // A pod's containers share its UTS and IPC namespaces: the first container's hostname holds.
            assertEquals("0:pod-a-host\n", runIn(sb, "app", "hostname"));
            assertEquals(runIn(sb, "pod-a", "readlink", "/proc/self/ns/ipc"), runIn(sb, "app", "readlink", "/proc/self/ns/ipc"));
            assertEquals(runIn(sb, "pod-a", "readlink", "/proc/self/ns/uts"), runIn(sb, "app", "readlink", "/proc/self/ns/uts"));
            assertNotEquals(runIn(sb, "pod-a", "readlink", "/proc/self/ns/mnt"), runIn(sb, "app", "readlink", "/proc/self/ns/mnt"));
            assertEquals(Set.of("pod-a", "app"), sb.containers());
            assertEquals("0:from the other image\n", runIn(sb, "app", "cat", "/etc/image-file"));
            assertEquals("0:from the top layer\n", runIn(sb, "pod-a", "cat", "/etc/image-file"));
            assertEquals("0:", runIn(sb, "app", "sh", "-c", "echo app > /data.txt"));
            assertEquals("0:app\n", runIn(sb, "app", "cat", "/data.txt"));
            assertTrue(runIn(sb, "pod-a", "cat", "/data.txt").startsWith("1:"), "the pod's first container sees app's write");
            assertTrue(mountinfo().contains(sb.dir().resolve("shared") + "/app."), "app's image is on the share");

            SandboxException dup = assertThrows(SandboxException.class, () -> sb.addContainer(Fixture.container("app",
                    otherImage, "", "true")));
            assertEquals(Fault.ALREADY_EXISTS, dup.kind());
            SandboxException bad = assertThrows(SandboxException.class, () -> sb.addContainer(Fixture.container("bad",
                    List.of(new RootfsMount("bind", "/no/such/layer", List.of())), "", "true")));
            assertEquals(Fault.INVALID_ARGUMENT, bad.kind());
            assertTrue(bad.getMessage().contains("/no/such/layer"), bad.getMessage());
            SandboxException first = assertThrows(SandboxException.class, () -> sb.removeContainer("pod-a"));
            assertEquals(Fault.INVALID_ARGUMENT, first.kind());

            sb.removeContainer("app");
            assertEquals(Set.of("pod-a"), sb.containers());
            assertFalse(mountinfo().contains(sb.dir().resolve("shared") + "/app."), "app's image left the share");
            try (var left = Files.list(sb.dir().resolve("shared"))) {
                assertEquals(List.of("pod-a.1"), left.map(p -> p.getFileName().toString()).toList());
            }
            SandboxException gone = assertThrows(SandboxException.class, () -> sb.removeContainer("app"));
            assertEquals(Fault.NOT_FOUND, gone.kind());

            // The same id again, on the first image: its files, and none of the old app's writes.
            sb.addContainer(Fixture.container("app", fx.image(), "", "sh", "-c", loop));
            sb.agent().startProcess("app", "");
            assertEquals("0:from the top layer\n", runIn(sb, "app", "cat", "/etc/image-file"));
            assertTrue(runIn(sb, "app", "cat", "/data.txt").startsWith("1:"), "a removed container's writes are gone");
        } finally {
            sb.stop(Duration.ofSeconds(5));
        }
        fx.assertNothingLeft();
    }

    private static String mountinfo() throws Exception {
        return Files.readString(Path.of("/proc/self/mountinfo"));
    }

    @Test
    void fiftyStartsAndStopsLeaveNothingBehind() throws Exception {
        for (int i = 0; i < 50; i++) {
            Sandbox sb = manager.start(fx.spec("cycle-" + i, "true"));
            try {
                assertEquals("0:ok\n", run(sb, "echo", "ok"));
            } finally {
                sb.stop(Duration.ofSeconds(5));
            }
        }
        fx.assertNothingLeft();
    }

    @Test
    void aBadImageIsRefusedNamingItAndLeavesNothing() throws Exception {
        ContainerSpec bad = Fixture.container("sb-bad", List.of(new io.rund.rootfs.RootfsMount("overlay", "overlay",
                List.of("lowerdir=/no/such/layer"))), "", "true");
        SandboxException e = assertThrows(SandboxException.class, () -> manager.start(bad));
        assertEquals(Fault.INVALID_ARGUMENT, e.kind());
        assertTrue(e.getMessage().contains("/no/such/layer"), e.getMessage());
        assertTrue(e.getMessage().contains("sandbox=sb-bad"), e.getMessage());
        SandboxException badId = assertThrows(SandboxException.class, () -> manager.start(fx.spec("../x", "true")));
        assertEquals(Fault.INVALID_ARGUMENT, badId.kind());
        fx.assertNothingLeft();
    }

    private static String listing() throws Exception {
        try (var s = Files.walk(fx.base.resolve("layers"))) {
            return String.join("\n", s.map(p -> fx.base.relativize(p).toString()).sorted().toList());
        }
    }
}
