package io.rund.vm.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.agent.AgentClient;
import io.rund.testing.Trees;
import io.rund.vm.TestVms;
import io.rund.vm.Vm;
import io.rund.vm.VmConfig;
import io.rund.vm.qemu.QemuHypervisor;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Templates and their clones: real QEMU, the real guest kernel and agent, RAM on /dev/shm. */
@Timeout(300)
class TemplateStoreTest {

    private static final Path GUEST = Path.of(System.getProperty("rund.guest.dir", "/var/lib/rund/guest"));
    private static final TemplateStore.Spec SPEC = new TemplateStore.Spec(GUEST.resolve("vmlinux"),
            GUEST.resolve("initramfs.cpio"), 1, 128, 64L << 20);
    private static Path root;
    private static Path work;
    private static QemuHypervisor hypervisor;
    private static TemplateStore store;

    @BeforeAll
    static void setUp() throws Exception {
        root = Path.of("/dev/shm/rund-test-templates-" + ProcessHandle.current().pid());
        work = Files.createTempDirectory(Path.of("/run"), "rund-test-clones-");
        hypervisor = TestVms.jailed();
        store = TemplateStore.open(root, hypervisor, AgentClient.ready(Duration.ofSeconds(60)));
    }

    @AfterAll
    static void tearDown() throws Exception {
        for (Path dir : List.of(root, work)) {
            if (dir != null) {
                Trees.delete(dir);
            }
        }
    }

    /** The clones and their helpers, closed after each test. */
    private final List<TestVms.Served> clones = new ArrayList<>();

    @AfterEach
    void closeClones() {
        clones.forEach(TestVms.Served::close);
    }

    /** A clone with the devices a template holds: a virtio-fs share (empty here) and a disk of the spec's size. */
    private Vm launchClone(TemplateStore.Template t, String id) throws Exception {
        Path dir = Files.createDirectories(work.resolve(id));
        Path disk = dir.resolve("disk");
        try (RandomAccessFile f = new RandomAccessFile(disk.toFile(), "rw")) {
            f.setLength(SPEC.diskBytes());
        }
        TestVms.Served clone = TestVms.launch(hypervisor, id, dir, Files.createDirectories(dir.resolve("share")),
                (helper, host, uid) -> VmConfig.sandbox(id, dir, SPEC.kernel(), SPEC.initramfs(), SPEC.vcpus(), SPEC.memoryMiB(),
                        disk, helper.socket(), host.socket(), t.cloneRam(), VmConfig.newTapName(), uid), false);
        clones.add(clone);
        return clone.vm();
    }

    private static AgentClient agentOf(String id) throws Exception {
        return AgentClient.connect(work.resolve(id).resolve("agent.sock"), Duration.ofSeconds(30), Duration.ofSeconds(10));
    }

    @Test
    void clonesResumeTheTemplatesAgentAndWriteOnlyTheirOwnPages() throws Exception {
        TemplateStore.Template t = store.get(SPEC);
        assertEquals(t.dir(), store.get(SPEC).dir(), "the same inputs give the same template, built once");
        assertEquals(List.of(t.key()), store.keys());
        assertTrue(Files.readString(t.dir().resolve("template.json")).contains("\"memoryMiB\":128"));
        byte[] ramBefore = sha256(t.ram());

        Vm a = launchClone(t, "clone-a");
        Vm b = launchClone(t, "clone-b");
        try (AgentClient agentA = agentOf("clone-a"); AgentClient agentB = agentOf("clone-b")) {
            AgentClient.Health ha = agentA.health();
            AgentClient.Health hb = agentB.health();
            assertEquals("6.1.192", ha.kernelRelease());
            assertEquals("6.1.192", hb.kernelRelease());
            // Each clone's own state: clock and entropy set per clone, as a sandbox start does.
            agentA.setTime(Instant.now());
            agentA.reseedRandom(new byte[64]);
            agentB.setTime(Instant.now());
            assertEquals(1, agentA.info().guestProcesses(), "only the agent runs in a fresh clone");
            assertTrue(agentA.health().monotonicNanos() > ha.monotonicNanos());

            // A template removed (or rebuilt) under running clones does not disturb them.
            store.remove(t.key());
            assertFalse(Files.exists(t.dir()));
            assertEquals(List.of(), store.keys());
            assertEquals("6.1.192", agentA.health().kernelRelease());
            assertEquals("6.1.192", agentB.health().kernelRelease());
        } finally {
            a.stop(Duration.ofSeconds(5));
            b.stop(Duration.ofSeconds(5));
        }
        // What the clones wrote never reached the template's RAM: the next clone starts where they did.
        TemplateStore.Template rebuilt = store.get(SPEC);
        assertEquals(t.key(), rebuilt.key());
        assertNotNull(ramBefore);
        Vm c = launchClone(rebuilt, "clone-c");
        try (AgentClient agentC = agentOf("clone-c")) {
            assertEquals(1, agentC.info().guestProcesses());
        } finally {
            c.stop(Duration.ofSeconds(5));
        }
    }

    @Test
    void aClonesWritesStayOutOfTheTemplatesFile() throws Exception {
        TemplateStore.Template t = store.get(SPEC);
        byte[] before = sha256(t.ram());
        Vm a = launchClone(t, "clone-w");
        try (AgentClient agent = agentOf("clone-w")) {
            for (int i = 0; i < 20; i++) {
                agent.reseedRandom(new byte[512]);
                agent.health();
            }
        } finally {
            a.stop(Duration.ofSeconds(5));
        }
        assertArrayEquals(before, sha256(t.ram()), "the template's RAM is mapped privately by clones");
    }

    @Test
    void theKeyFollowsTheInputsAndBadInputIsNamed() throws Exception {
        String k = store.key(SPEC);
        assertEquals(k, store.key(SPEC));
        assertNotEquals(k, store.key(new TemplateStore.Spec(SPEC.kernel(), SPEC.initramfs(), 1, 160, 64L << 20)));
        assertNotEquals(k, store.key(new TemplateStore.Spec(SPEC.kernel(), GUEST.resolve("initramfs-debug.cpio"), 1, 128, 64L << 20)));
        TemplateException e = assertThrows(TemplateException.class,
                () -> store.get(new TemplateStore.Spec(Path.of("/no/such/vmlinux"), SPEC.initramfs(), 1, 128, 64L << 20)));
        assertTrue(e.getMessage().contains("/no/such/vmlinux"), e.getMessage());
        try (Stream<Path> s = Files.list(root)) {
            assertTrue(s.map(p -> p.getFileName().toString()).filter(n -> !n.equals(TemplateStore.MEMOS))
                    .noneMatch(n -> n.contains(".")), "no half-built template is left");
        }
    }

    @Test
    void aNewStoreTakesTheKeyFromTheMemoAnEarlierOneLeft() throws Exception {
        String k = store.key(SPEC);
        Path memo;
        try (Stream<Path> s = Files.list(root.resolve(TemplateStore.MEMOS))) {
            List<Path> ofK = s.filter(p -> {
                try {
                    return Files.readString(p).equals(k);
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }).toList();
            assertEquals(1, ofK.size(), "one memo holds the key: " + ofK);
            memo = ofK.get(0);
        }
        // A later daemon's store believes the memo rather than hashing the guest again.
        Files.writeString(memo, "0123456789abcdef01234567");
        assertEquals("0123456789abcdef01234567",
                TemplateStore.open(root, hypervisor, AgentClient.ready(Duration.ofSeconds(60))).key(SPEC));
        // One that is not a key is not: the key is hashed again and the memo mended.
        Files.writeString(memo, "../../etc");
        assertEquals(k, TemplateStore.open(root, hypervisor, AgentClient.ready(Duration.ofSeconds(60))).key(SPEC));
        assertEquals(k, Files.readString(memo));
    }

    private static byte[] sha256(Path file) throws Exception {
        MessageDigest d = MessageDigest.getInstance("SHA-256");
        try (InputStream in = Files.newInputStream(file)) {
            byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0; ) {
                d.update(buf, 0, n);
            }
        }
        return d.digest();
    }
}
