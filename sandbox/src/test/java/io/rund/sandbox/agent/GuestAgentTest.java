package io.rund.sandbox.agent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.agent.v1.CreateContainerRequest;
import io.rund.agent.v1.Rootfs;
import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ContainerStats;
import io.rund.sandbox.guest.GuestContainer;
import io.rund.sandbox.guest.StreamChunk;
import io.rund.sandbox.guest.ProcessExit;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.guest.TestContainers;
import io.rund.ttrpc.Frame;
import io.rund.ttrpc.FrameReader;
import io.rund.ttrpc.wire.Request;
import io.rund.ttrpc.wire.Response;
import java.io.ByteArrayOutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * rund-agent in a real guest: the trimmed kernel and initramfs from hack/build-guest,
 * booted by QEMU under TCG, with a container whose rootfs is an overlay of a virtio-fs
 * lower layer and an ext4 upper layer on virtio-blk. One guest serves the whole class;
 * each test uses its own container or processes. The serial console, QEMU's and
 * QEMU's output are printed when a test fails.
 */
@Timeout(180)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class GuestAgentTest {

    private static final String C = "c1";
    private static final Duration T = Duration.ofSeconds(30);

    private static TestGuest guest;
    private static AgentClient agent;
    private static final AtomicInteger EXECS = new AtomicInteger();

    @RegisterExtension
    static final TestWatcher DUMP_ON_FAILURE = new TestWatcher() {
        @Override
        public void testFailed(ExtensionContext context, Throwable cause) {
            if (guest != null) {
                System.err.println("=== " + context.getDisplayName() + " failed; guest output:\n" + guest.diagnostics());
            }
        }
    };

    @BeforeAll
    static void bootAndCreateContainer() throws Exception {
        guest = TestGuest.boot("agent");
        try {
            agent = guest.connect();
            agent.createContainer(container(C, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"));
            assertTrue(agent.startProcess(C, "") > 1);
        } catch (Throwable t) {
            System.err.println("guest did not come up:\n" + guest.diagnostics());
            throw t;
        }
    }

    @AfterAll
    static void shutDown() throws Exception {
        if (agent != null) {
            agent.close();
        }
        if (guest != null) {
            guest.close();
        }
    }

    static ProcessSpec process(boolean terminal, String... args) {
        return TestContainers.process(terminal, args);
    }

    static GuestContainer container(String id, String... args) {
        return new GuestContainer(id, "", "/" + id, id + "-host", TestContainers.config(), process(false, args), "");
    }

    /** Runs a process to its end: its exit, its stdout and its stderr. */
    record Run(int status, String out, String err) {}

    static String newExec() {
        return "e" + EXECS.incrementAndGet();
    }

    static String readAll(String exec, boolean stderr) throws AgentException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        while (true) {
            StreamChunk c = stderr ? agent.readStderr(C, exec, 65536, T) : agent.readStdout(C, exec, 65536, T);
            out.writeBytes(c.data());
            if (c.eof()) {
                return out.toString(StandardCharsets.UTF_8);
            }
        }
    }

    static Run run(String... args) throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, process(false, args));
        agent.startProcess(C, exec);
        agent.closeStdin(C, exec);
        String out = readAll(exec, false);
        String err = readAll(exec, true);
        ProcessExit exit = agent.waitProcess(C, exec, T);
        agent.deleteProcess(C, exec);
        return new Run(exit.status(), out, err);
    }

    @Test
    @Order(1)
    void healthNamesTheAgentAndTheGuestKernel() throws Exception {
        AgentClient.Health h = agent.health();
        assertEquals("rund-agent 0.1.0", h.version());
        assertTrue(h.kernelRelease().startsWith("6.1."), h.kernelRelease());
        assertTrue(h.monotonicNanos() > 0);
    }

    @Test
    @Order(2)
    void stdinComesBackOnStdoutThroughCat() throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, process(false, "cat"));
        agent.startProcess(C, exec);
        byte[] hello = "hello through the guest\n".getBytes(StandardCharsets.UTF_8);
        assertEquals(hello.length, agent.writeStdin(C, exec, hello));
        agent.closeStdin(C, exec);
        assertEquals("hello through the guest\n", readAll(exec, false));
        assertEquals(0, agent.waitProcess(C, exec, T).status());
        agent.deleteProcess(C, exec);
    }

    @Test
    @Order(3)
    void exitCodesAndStreamsComeBackSeparately() throws Exception {
        assertEquals(0, run("true").status());
        assertEquals(1, run("sh", "-c", "exit 1").status());
        assertEquals(137, run("sh", "-c", "kill -9 $$").status());
        Run both = run("sh", "-c", "echo to-out; echo to-err >&2; exit 3");
        assertEquals(new Run(3, "to-out\n", "to-err\n"), both);
    }

    @Test
    @Order(4)
    void aSignalReachesTheProcess() throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, process(false, "sh", "-c",
                "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done"));
        agent.startProcess(C, exec);
        StreamChunk first = agent.readStdout(C, exec, 64, T);
        assertEquals("ready\n", new String(first.data(), StandardCharsets.UTF_8));
        agent.signal(C, exec, 15, false);
        assertEquals("got TERM\n", readAll(exec, false));
        ProcessExit exit = agent.waitProcess(C, exec, T);
        assertEquals(3, exit.status());
        assertTrue(exit.exitedAt().isAfter(Instant.EPOCH));
        agent.deleteProcess(C, exec);
    }

    @Test
    @Order(4)
    void outputReadAtAnOffsetIsKeptUntilAReadPastIt() throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, process(false, "sh", "-c", "echo first; read x; echo second"));
        agent.startProcess(C, exec);
        StreamChunk first = agent.readAt(false, C, exec, 0, 64, T);
        assertEquals("first\n", new String(first.data(), StandardCharsets.UTF_8));
        // A reader that died with it: the next reads it again, from the same offset, and a part of it.
        assertEquals("first\n", new String(agent.readAt(false, C, exec, 0, 64, T).data(), StandardCharsets.UTF_8));
        assertEquals("rst\n", new String(agent.readAt(false, C, exec, 2, 64, T).data(), StandardCharsets.UTF_8));
        AgentException past = assertThrows(AgentException.class, () -> agent.readAt(false, C, exec, 99, 64, T));
        assertEquals(Fault.INVALID_ARGUMENT, past.kind(), "an offset past what was read: " + past.getMessage());
        agent.writeStdin(C, exec, "go\n".getBytes(StandardCharsets.UTF_8));
        assertEquals("second\n", new String(agent.readAt(false, C, exec, 6, 64, T).data(), StandardCharsets.UTF_8));
        AgentException before = assertThrows(AgentException.class, () -> agent.readAt(false, C, exec, 0, 64, T));
        assertEquals(Fault.INVALID_ARGUMENT, before.kind(), "what a later read acknowledged is gone: " + before.getMessage());
        assertTrue(agent.readAt(false, C, exec, 13, 64, T).eof());
        assertEquals(0, agent.waitProcess(C, exec, T).status());
        agent.deleteProcess(C, exec);
    }

    @Test
    @Order(5)
    void aTerminalSessionSeesItsNewWindowSize() throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, process(true, "sh", "-c", "read line; stty size; tty"));
        agent.startProcess(C, exec);
        agent.resizePty(C, exec, 41, 123);
        agent.writeStdin(C, exec, "go\n".getBytes(StandardCharsets.UTF_8));
        String screen = readAll(exec, false);
        assertTrue(screen.contains("41 123"), screen);
        assertTrue(screen.contains("/dev/pts/"), screen);
        assertEquals(0, agent.waitProcess(C, exec, T).status());
        AgentException noStderr = assertThrows(AgentException.class, () -> agent.readStderr(C, exec, 10, T));
        assertEquals(Fault.FAILED_PRECONDITION, noStderr.kind());
        agent.deleteProcess(C, exec);
    }

    @Test
    @Order(6)
    void theContainerHasItsOwnRootfsHostnameAndWritableLayer() throws Exception {
        assertEquals(new Run(0, "c1-host\n", ""), run("hostname"));
        assertEquals(new Run(0, "from the image\n", ""), run("cat", "/etc/image-file"));
        assertEquals(0, run("sh", "-c", "echo written > /data.txt").status());
        assertEquals(new Run(0, "written\n", ""), run("cat", "/data.txt"));
        // The upper layer is ext4 on the virtio-blk disk; the lower one is virtio-fs.
        Run mounts = run("cat", "/proc/mounts");
        assertTrue(mounts.out().startsWith("overlay / overlay"), mounts.out());
        // Masked and read-only paths.
        assertEquals("", run("cat", "/proc/kcore").out());
        assertTrue(run("sh", "-c", "echo 1 > /proc/sys/kernel/printk").status() != 0);
    }

    @Test
    @Order(7)
    void aHundredExecsLeaveNoProcessOrDescriptorBehind() throws Exception {
        AgentClient.Info before = agent.info();
        for (int i = 0; i < 100; i++) {
            assertEquals(0, run("true").status());
        }
        AgentClient.Info after = agent.info();
        assertEquals(before, after, "guest processes, agent fds, containers and processes must be as before");
    }

    @Test
    @Order(8)
    void clockAndRandomnessCanBeSetFromTheHost() throws Exception {
        agent.setTime(Instant.parse("2031-05-06T07:08:09Z"));
        assertEquals("2031\n", run("date", "-u", "+%Y").out());
        // Wake: the clock set, the pool mixed and Health's answer, in one call; both parts required.
        io.rund.agent.v1.HealthResponse woke = agent.call("Wake", io.rund.agent.v1.WakeRequest.newBuilder()
                .setTime(io.rund.agent.v1.SetTimeRequest.newBuilder().setRealtimeNs(
                        Instant.parse("2032-01-02T03:04:05Z").getEpochSecond() * 1_000_000_000L))
                .setSeed(io.rund.agent.v1.ReseedRandomRequest.newBuilder().setSeed(com.google.protobuf.ByteString.copyFrom(
                        new byte[32]))).build(), io.rund.agent.v1.HealthResponse.parser());
        assertTrue(woke.getVersion().startsWith("rund-agent "), woke.toString());
        assertEquals("2032\n", run("date", "-u", "+%Y").out());
        AgentException half = assertThrows(AgentException.class, () -> agent.call("Wake", io.rund.agent.v1.WakeRequest
                .newBuilder().setTime(io.rund.agent.v1.SetTimeRequest.newBuilder().setRealtimeNs(1)).build(),
                io.rund.agent.v1.HealthResponse.parser()));
        assertEquals(Fault.INVALID_ARGUMENT, half.kind());
        agent.setTime(Instant.now());
        agent.reseedRandom(new byte[64]);
        AgentException tooShort = assertThrows(AgentException.class, () -> agent.reseedRandom(new byte[8]));
        assertEquals(Fault.INVALID_ARGUMENT, tooShort.kind());
        assertTrue(tooShort.getMessage().contains("8 bytes"), tooShort.getMessage());
    }

    @Test
    @Order(9)
    void pidsStatsPauseAndResume() throws Exception {
        List<Integer> pids = agent.pids(C);
        assertFalse(pids.isEmpty());
        ContainerStats stats = agent.stats(C);
        assertTrue(stats.memoryBytes() > 0, stats.toString());
        assertTrue(stats.pids() >= 1, stats.toString());
        agent.pause(C);
        agent.resume(C);
        assertEquals(0, run("true").status());
    }

    @Test
    @Order(9)
    void userGroupsRlimitsNoNewPrivsAndCapabilitiesAreApplied() throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, new ProcessSpec(
                List.of("sh", "-c", "id -u; id -g; id -G; ulimit -n; grep NoNewPrivs /proc/self/status;"
                        + " grep CapEff /proc/self/status; grep CapBnd /proc/self/status; pwd"),
                List.of("PATH=/bin"), "/etc", 1000, 1001, List.of(1002),
                List.of(new ProcessSpec.Rlimit("RLIMIT_NOFILE", 123, 456)), true,
                new ProcessSpec.Capabilities(List.of("CAP_KILL"), List.of(), List.of(), List.of(), List.of()), false, null,
                null));
        agent.startProcess(C, exec);
        agent.closeStdin(C, exec);
        String out = readAll(exec, false);
        String err = readAll(exec, true);
        assertEquals(0, agent.waitProcess(C, exec, T).status(), out + err);
        agent.deleteProcess(C, exec);
        // CAP_KILL is capability 5: the bounding set keeps only it; uid 1000 has none in effect.
        assertEquals("1000\n1001\n1001 1002\n123\nNoNewPrivs:\t1\nCapEff:\t0000000000000000\n"
                + "CapBnd:\t0000000000000020\n/etc\n", out);
    }

    @Test
    @Order(10)
    void aMemoryLimitFromTheHostEndsInAnOomEvent() throws Exception {
        agent.createContainer(container("oom", "sleep", "1000"));
        agent.startProcess("oom", "");
        agent.updateResources("oom", ResourceLimits.memoryAndPids(16L << 20, 64L));
        ContainerStats limited = agent.stats("oom");
        assertEquals(16L << 20, limited.memoryLimitBytes());
        assertEquals(64, limited.pidsLimit());
        java.util.concurrent.CompletableFuture<String> oom = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
            try {
                return agent.waitOom(T);
            } catch (AgentException e) {
                throw new java.util.concurrent.CompletionException(e);
            }
        });
        String exec = newExec();
        agent.execProcess("oom", exec, process(false, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"));
        agent.startProcess("oom", exec);
        agent.closeStdin("oom", exec);
        assertEquals(137, agent.waitProcess("oom", exec, T).status(), "the memory hog must be OOM-killed");
        assertEquals("oom", oom.get(30, java.util.concurrent.TimeUnit.SECONDS));
        assertTrue(agent.stats("oom").oomKills() >= 1);
        agent.removeContainer("oom");
    }

    @Test
    @Order(10)
    void badRequestsAreRefusedNamingTheBadValue() throws Exception {
        AgentException badId = assertThrows(AgentException.class,
                () -> agent.createContainer(container("../escape", "true")));
        assertEquals(Fault.INVALID_ARGUMENT, badId.kind());
        assertTrue(badId.getMessage().contains("../escape"), badId.getMessage());

        AgentException unknown = assertThrows(AgentException.class,
                () -> agent.execProcess("nope", "e", process(false, "true")));
        assertEquals(Fault.NOT_FOUND, unknown.kind());
        assertTrue(unknown.getMessage().contains("nope"), unknown.getMessage());

        AgentException dup = assertThrows(AgentException.class, () -> agent.createContainer(container(C, "true")));
        assertEquals(Fault.ALREADY_EXISTS, dup.kind());

        AgentException missingBinary = assertThrows(AgentException.class, () -> {
            String exec = newExec();
            agent.execProcess(C, exec, process(false, "/bin/does-not-exist"));
            agent.startProcess(C, exec);
        });
        assertEquals(Fault.FAILED_PRECONDITION, missingBinary.kind());
        assertTrue(missingBinary.getMessage().contains("exec"), missingBinary.getMessage());
        String failedExec = "e" + EXECS.get();
        assertEquals(127, agent.waitProcess(C, failedExec, T).status());
        agent.deleteProcess(C, failedExec);

        // A container whose disk does not exist is refused and leaves nothing behind.
        AgentClient.Info before = agent.info();
        CreateContainerRequest noDisk = Protos.container(container("c2", "true")).toBuilder()
                .setRootfs(Rootfs.newBuilder().setLowerTag(TestGuest.LOWER_TAG).setUpperDiskSerial("no-such-disk"))
                .build();
        AgentException missing = assertThrows(AgentException.class,
                () -> agent.call("CreateContainer", noDisk, io.rund.agent.v1.Empty.parser()));
        assertEquals(Fault.NOT_FOUND, missing.kind());
        assertTrue(missing.getMessage().contains("no-such-disk"), missing.getMessage());
        AgentClient.Info after = agent.info();
        assertEquals(before.containers(), after.containers());
        assertEquals(before.guestProcesses(), after.guestProcesses());
    }

    @Test
    @Order(11)
    void aSecondContainerStartsAndIsRemovedCleanly() throws Exception {
        AgentClient.Info before = settled();
        agent.createContainer(container("c3", "sh", "-c", "echo second > /mine; cat /mine; sleep 1000"));
        agent.startProcess("c3", "");
        assertEquals("second\n", new String(agent.readStdout("c3", "", 64, T).data(), StandardCharsets.UTF_8));
        assertEquals(new Run(1, "", "cat: can't open '/mine': No such file or directory\n"), run("cat", "/mine"),
                "c1 must not see c3's writable layer");
        agent.removeContainer("c3");
        AgentException gone = assertThrows(AgentException.class, () -> agent.pids("c3"));
        assertEquals(Fault.NOT_FOUND, gone.kind());
        assertEquals(before, settled());
    }

    /**
     * What the agent holds once the guest is quiet: two readings 100 ms apart agree. A
     * container removed by the test before (the OOM one) may still have a process leaving.
     */
    private static AgentClient.Info settled() throws Exception {
        AgentClient.Info last = agent.info();
        for (int i = 0; i < 50; i++) {
            Thread.sleep(100);
            AgentClient.Info now = agent.info();
            if (now.equals(last)) {
                return now;
            }
            last = now;
        }
        return last;
    }

    @Test
    @Order(12)
    void malformedFramesGetErrorsAndTheAgentServesTheNextConnection() throws Exception {
        agent.close();
        // The chardev takes one connection at a time: wait for QEMU to see ours close.
        try (SocketChannel raw = connectRaw()) {
            FrameReader in = new FrameReader(raw);
            // Not a Request envelope at all.
            send(raw, 1, new byte[] {0x0a, 100, 1});
            assertEquals(3, status(in, 1));
            // A Health request whose payload is garbage.
            send(raw, 3, Request.newBuilder().setService(AgentClient.SERVICE).setMethod("Health")
                    .setPayload(com.google.protobuf.ByteString.copyFrom(new byte[] {(byte) 0xff, (byte) 0xff}))
                    .build().toByteArray());
            assertEquals(3, status(in, 3));
            // An even stream id, an unknown method and an unknown service.
            send(raw, 4, Request.newBuilder().setService(AgentClient.SERVICE).setMethod("Health").build().toByteArray());
            assertEquals(3, status(in, 4));
            send(raw, 5, Request.newBuilder().setService(AgentClient.SERVICE).setMethod("Explode").build().toByteArray());
            assertEquals(12, status(in, 5));
            send(raw, 9, Request.newBuilder().setService("other.Service").setMethod("Health").build().toByteArray());
            assertEquals(12, status(in, 9));
            // An oversized frame is skipped and answered.
            ByteBuffer big = ByteBuffer.allocate(Frame.HEADER_LENGTH + Frame.MAX_PAYLOAD + 1);
            big.putInt(Frame.MAX_PAYLOAD + 1).putInt(7).put((byte) 1).put((byte) 0).position(big.capacity()).flip();
            while (big.hasRemaining()) {
                raw.write(big);
            }
            assertEquals(8, status(in, 7));
            // After all of that, the same connection is still served.
            send(raw, 11, Request.newBuilder().setService(AgentClient.SERVICE).setMethod("Health").build().toByteArray());
            Frame ok = in.read();
            assertEquals(11, ok.streamId());
            assertEquals(0, Response.parseFrom(ok.payload()).getStatus().getCode());
        }
        agent = guest.connect();
        assertEquals("rund-agent 0.1.0", agent.health().version());
    }

    private static SocketChannel connectRaw() throws Exception {
        long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (true) {
            SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                ch.connect(UnixDomainSocketAddress.of(guest.agentSocket));
                return ch;
            } catch (java.io.IOException e) {
                ch.close();
                if (System.nanoTime() > end) {
                    throw e;
                }
                Thread.sleep(20);
            }
        }
    }

    private static void send(SocketChannel ch, int streamId, byte[] payload) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(Frame.HEADER_LENGTH + payload.length)
                .putInt(payload.length).putInt(streamId).put((byte) 1).put((byte) 0).put(payload).flip();
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** The code of the next response, which must be for {@code streamId}; the message must name something. */
    private static int status(FrameReader in, int streamId) throws Exception {
        Frame f = in.read();
        assertEquals(streamId, f.streamId());
        assertEquals(Frame.TYPE_RESPONSE, f.type());
        Response r = Response.parseFrom(f.payload());
        assertFalse(r.getStatus().getMessage().isEmpty(), "an error without a message on stream " + streamId);
        return r.getStatus().getCode();
    }

    @Test
    @Order(13)
    void deviceRulesAreAFilterOnTheContainersCgroupSwappedByUpdate() throws Exception {
        ResourceLimits denyAll = new ResourceLimits(null, null, null, null, null, null, null, null, null,
                List.of(new ResourceLimits.DeviceRule(false, "a", null, null, "rwm")));
        agent.updateResources(C, denyAll);
        // runc's own allowed devices follow the rules: mknod of any device, /dev/null and friends.
        Run denied = run("sh", "-c", "mknod /dev/xsda b 8 0 && head -c 1 /dev/xsda; head -c 3 /dev/zero | wc -c");
        assertTrue(denied.err().contains("/dev/xsda: Operation not permitted"), denied.toString());
        assertEquals("3\n", denied.out());
        agent.updateResources(C, denyAll); // the same rules again: the same program, nothing to swap
        ResourceLimits allowAll = new ResourceLimits(null, null, null, null, null, null, null, null, null,
                List.of(new ResourceLimits.DeviceRule(true, "a", null, null, "rwm")));
        agent.updateResources(C, allowAll);
        Run allowed = run("sh", "-c", "head -c 1 /dev/xsda; rm /dev/xsda");
        assertFalse(allowed.err().contains("not permitted"), "allowed now; the VM has no such disk: " + allowed);
        AgentException bad = assertThrows(AgentException.class, () -> agent.updateResources(C, new ResourceLimits(null, null,
                null, null, null, null, null, null, null, List.of(new ResourceLimits.DeviceRule(true, "x", null, null, "rwm")))));
        assertEquals(Fault.INVALID_ARGUMENT, bad.kind());
        assertTrue(bad.getMessage().contains("device rule type x"), bad.getMessage());
    }

    /**
     * A host that leaves with reads of a silent process in flight: the agent ends those reads at
     * once (nothing wakes a waiting reader on a timer any more), so their calls are free for the
     * next host, and none of them takes the output the next host reads. 200 reads leave; 200
     * more then fit under the agent's 256 calls only if the first are gone.
     */
    @Test
    @Order(14)
    void readsWhoseHostLeftEndAtOnceAndLeaveTheOutputToTheNextHost() throws Exception {
        String exec = newExec();
        agent.execProcess(C, exec, process(false, "sh", "-c", "read x; echo after"));
        agent.startProcess(C, exec);
        int n = 200;
        AgentClient leaving = agent;
        try (var threads = java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor()) {
            for (int i = 0; i < n; i++) {
                threads.submit(() -> leaving.readStdout(C, exec, 64, T));
            }
            Thread.sleep(1000); // sent; the agent answers calls in the order they came
            leaving.health();
            leaving.close();
        }
        agent = guest.connect();
        List<java.util.concurrent.Future<StreamChunk>> reads = new java.util.ArrayList<>();
        try (var threads = java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor()) {
            for (int i = 0; i < n; i++) {
                reads.add(threads.submit(() -> {
                    // The first host's reads end as their threads run again: a moment, not a timer.
                    Instant end = Instant.now().plusSeconds(10);
                    while (true) {
                        try {
                            return agent.readStdout(C, exec, 64, T);
                        } catch (AgentException e) {
                            if (e.kind() != Fault.RESOURCE_EXHAUSTED || Instant.now().isAfter(end)) {
                                throw e;
                            }
                            Thread.sleep(50);
                        }
                    }
                }));
            }
            Thread.sleep(1000);
            agent.writeStdin(C, exec, "go\n".getBytes(StandardCharsets.UTF_8));
        }
        StringBuilder out = new StringBuilder();
        for (var r : reads) {
            out.append(new String(r.get().data(), StandardCharsets.UTF_8));
        }
        assertEquals("after\n", out.toString(), "the output, read once, by the host that is there");
        assertEquals(0, agent.waitProcess(C, exec, T).status());
        agent.deleteProcess(C, exec);
    }
}
