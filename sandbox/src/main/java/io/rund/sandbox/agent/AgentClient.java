package io.rund.sandbox.agent;

import com.google.protobuf.ByteString;
import com.google.protobuf.MessageLite;
import com.google.protobuf.Parser;
import io.rund.agent.v1.AgentInfoResponse;
import io.rund.agent.v1.CloseStdinRequest;
import io.rund.agent.v1.ContainerRequest;
import io.rund.agent.v1.CreateContainerResponse;
import io.rund.agent.v1.DeleteProcessRequest;
import io.rund.agent.v1.Empty;
import io.rund.agent.v1.ExecProcessRequest;
import io.rund.agent.v1.HealthRequest;
import io.rund.agent.v1.HealthResponse;
import io.rund.agent.v1.ListPidsResponse;
import io.rund.agent.v1.MountDiskRequest;
import io.rund.agent.v1.OOMEvent;
import io.rund.agent.v1.ReadStreamRequest;
import io.rund.agent.v1.ReadStreamResponse;
import io.rund.agent.v1.ReseedRandomRequest;
import io.rund.agent.v1.ResizePtyRequest;
import io.rund.agent.v1.SetTimeRequest;
import io.rund.agent.v1.SignalProcessRequest;
import io.rund.agent.v1.StartProcessRequest;
import io.rund.agent.v1.StartProcessResponse;
import io.rund.agent.v1.StatsResponse;
import io.rund.agent.v1.WaitProcessRequest;
import io.rund.agent.v1.WakeRequest;
import io.rund.agent.v1.WaitProcessResponse;
import io.rund.agent.v1.WriteStreamRequest;
import io.rund.agent.v1.WriteStreamResponse;
import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ContainerStats;
import io.rund.sandbox.guest.GuestContainer;
import io.rund.sandbox.guest.GuestNetwork;
import io.rund.sandbox.guest.GuestProcesses;
import io.rund.sandbox.guest.GuestStep;
import io.rund.sandbox.guest.StreamChunk;
import io.rund.sandbox.guest.ProcessExit;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.TtrpcException;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

/**
 * The host's side of agent.proto: typed calls to rund-agent in one guest, over ttrpc on
 * the unix socket where QEMU exposes the virtio-serial port "rund.agent".
 *
 * <p>Calls that return at once get {@link #callTimeout}; calls that block by design (wait,
 * read, WaitOOM) get no deadline unless the caller passes one. Every answer is checked
 * before it is believed: the guest is not trusted.
 */
public final class AgentClient implements GuestProcesses, AutoCloseable {

    private static final System.Logger LOG = System.getLogger(AgentClient.class.getName());

    static final String SERVICE = "rund.agent.v1.Agent";
    /** The most steps, the longest step name and the longest step (a minute) a call's answer may report. */
    static final int MAX_STEPS = 16;
    static final int MAX_STEP_NAME = 64;
    static final long MAX_STEP_MICROS = 60_000_000;
    /** The agent refuses reads over this many bytes; so do we. */
    public static final int MAX_CHUNK = 1 << 20;

    private static final java.security.SecureRandom RANDOM = new java.security.SecureRandom();

    private final Client client;
    private final Duration callTimeout;

    private AgentClient(Client client, Duration callTimeout) {
        this.client = client;
        this.callTimeout = callTimeout;
    }

    /**
     * Connects to the agent's socket and waits until the agent answers Health, retrying
     * (every 20 ms) until {@code deadline} passes: QEMU creates the socket at start, but
     * the guest needs time to boot.
     */
    /**
     * A template's readiness as the sandbox knows it: its agent answers Health within
     * {@code deadline} (the template store cannot know the agent; it is handed this).
     */
    public static io.rund.vm.template.TemplateStore.GuestReady ready(Duration deadline) {
        return (socket, mountDisk) -> {
            try (AgentClient agent = connect(socket, deadline, Duration.ofSeconds(10))) {
                agent.health();
                if (mountDisk != null) {
                    agent.mountDisk(mountDisk);
                }
            }
        };
    }

    /** The first Health probe's timeout; each next one doubles, up to the call timeout. */
    static final Duration PROBE_FIRST = Duration.ofMillis(250);

    public static AgentClient connect(Path socket, Duration deadline, Duration callTimeout)
            throws AgentException, InterruptedException {
        return connect(socket, deadline, callTimeout, null);
    }

    /**
     * Connects as {@link #connect(Path, Duration, Duration)} does to a VM just woken (a
     * clone), probing with Wake: the answer that says the agent serves has also set the
     * guest's clock to the host's and mixed {@code seed}'s bytes into its pool, one round
     * trip instead of three. Each probe sends the time anew. An agent without Wake (a guest
     * older than this host) is asked SetTime and ReseedRandom after its Health.
     */
    public static AgentClient wake(Path socket, Duration deadline, Duration callTimeout, Supplier<byte[]> seed)
            throws AgentException, InterruptedException {
        return connect(socket, deadline, callTimeout, java.util.Objects.requireNonNull(seed, "seed"));
    }

    private static AgentClient connect(Path socket, Duration deadline, Duration callTimeout, Supplier<byte[]> seed)
            throws AgentException, InterruptedException {
        long end = System.nanoTime() + deadline.toNanos();
        Exception last = null;
        // The first probes are short and each failed one reconnects, so that an agent that
        // dropped a connection's first call (as clones of templates saved while their build's
        // connection was still open did, see TemplateStore) costs 250 ms, not the call timeout.
        // A busy guest gets twice as long each time.
        long probe = PROBE_FIRST.toNanos();
        long began = System.nanoTime();
        int probes = 0;
        while (System.nanoTime() < end) {
            Client c = null;
            try {
                // A fresh random start per connection: the agent may not have noticed that
                // the previous host connection went away, and may still answer its calls.
                c = Client.connect(socket, (RANDOM.nextLong(1L << 30) << 1) | 1);
                long left = Math.max(1, end - System.nanoTime());
                long wait = Math.min(left, Math.min(probe, callTimeout.toNanos()));
                probe *= 2;
                probes++;
                CallOptions options = CallOptions.DEFAULT.withTimeout(Duration.ofNanos(wait));
                if (seed == null) {
                    c.call(SERVICE, "Health", HealthRequest.getDefaultInstance(), HealthResponse.parser(), options);
                } else if (!wakeCall(c, seed, options)) {
                    AgentClient older = new AgentClient(c, callTimeout);
                    try {
                        older.setTime(Instant.now());
                        older.reseedRandom(seed.get());
                    } catch (AgentException e) {
                        older.close(); // the caller never gets it
                        throw e;
                    }
                    return older;
                }
                if (probes > 1) {
                    LOG.log(System.Logger.Level.INFO, "agent at {0}: answered probe {1} after {2} ms", socket, probes,
                            (System.nanoTime() - began) / 1_000_000);
                }
                return new AgentClient(c, callTimeout);
            } catch (IOException | TtrpcException e) {
                last = e;
                if (c != null) {
                    c.close();
                }
            }
            Thread.sleep(20);
        }
        throw new AgentException(Fault.UNAVAILABLE,
                "agent at " + socket + " did not answer within " + deadline + ": " + last, last);
    }

    /** Wake on {@code c}: true when answered, false when the agent has no such call. */
    private static boolean wakeCall(Client c, Supplier<byte[]> seed, CallOptions options) throws IOException, TtrpcException {
        WakeRequest wake = WakeRequest.newBuilder().setTime(timeRequest(Instant.now())).setSeed(seedRequest(seed.get()))
                .build();
        try {
            c.call(SERVICE, "Wake", wake, HealthResponse.parser(), options);
            return true;
        } catch (TtrpcException e) {
            if (e.code() == io.rund.ttrpc.Code.UNIMPLEMENTED) {
                return false;
            }
            throw e;
        }
    }

    private <R> R call(String method, MessageLite request, Parser<R> parser, Duration timeout) throws AgentException {
        CallOptions options = timeout == null ? CallOptions.DEFAULT : CallOptions.DEFAULT.withTimeout(timeout);
        try {
            return client.call(SERVICE, method, request, parser, options);
        } catch (TtrpcException e) {
            throw AgentException.from(method, e);
        }
    }

    /** A call with the client's deadline. (Package-private: the agent's tests send requests no record makes.) */
    <R> R call(String method, MessageLite request, Parser<R> parser) throws AgentException {
        return call(method, request, parser, callTimeout);
    }

    /** What the agent says about itself. */
    public record Health(String version, String kernelRelease, long monotonicNanos) {}

    public Health health() throws AgentException {
        return health(callTimeout);
    }

    /** Health, answered within {@code timeout}. */
    public Health health(Duration timeout) throws AgentException {
        HealthResponse r = call("Health", HealthRequest.getDefaultInstance(), HealthResponse.parser(), timeout);
        return new Health(r.getVersion(), r.getKernelRelease(), r.getMonotonicNs());
    }

    public void setTime(Instant now) throws AgentException {
        call("SetTime", timeRequest(now), Empty.parser());
    }

    public void reseedRandom(byte[] seed) throws AgentException {
        call("ReseedRandom", seedRequest(seed), Empty.parser());
    }

    /** SetTime's request, as Wake carries it too. */
    private static SetTimeRequest timeRequest(Instant now) {
        long ns = Math.addExact(Math.multiplyExact(now.getEpochSecond(), 1_000_000_000L), now.getNano());
        return SetTimeRequest.newBuilder().setRealtimeNs(ns).build();
    }

    /** ReseedRandom's request, as Wake carries it too. */
    private static ReseedRandomRequest seedRequest(byte[] seed) {
        return ReseedRandomRequest.newBuilder().setSeed(ByteString.copyFrom(seed)).build();
    }

    /** Gives the guest's interface the pod interface's identity (once per VM). */
    public void configureNetwork(GuestNetwork network) throws AgentException {
        call("ConfigureNetwork", Protos.network(network), Empty.parser());
    }

    /** Mounts the writable disk {@code serial} in the guest ahead of its first container (a template's). */
    public void mountDisk(String serial) throws AgentException {
        call("MountDisk", MountDiskRequest.newBuilder().setSerial(serial).build(), Empty.parser());
    }

    /**
     * Creates a container in the guest and returns the steps the agent says it took, checked:
     * at most {@link #MAX_STEPS}, each named in a few printable words and within a minute.
     */
    public List<GuestStep> createContainer(GuestContainer container) throws AgentException {
        CreateContainerResponse r = call("CreateContainer", Protos.container(container), CreateContainerResponse.parser());
        if (r.getStepsCount() > MAX_STEPS) {
            throw AgentException.badAnswer("CreateContainer", r.getStepsCount() + " steps, more than " + MAX_STEPS);
        }
        List<GuestStep> steps = new ArrayList<>(r.getStepsCount());
        for (io.rund.agent.v1.GuestStep s : r.getStepsList()) {
            String name = s.getName();
            if (name.isEmpty() || name.length() > MAX_STEP_NAME || !name.chars().allMatch(c -> c >= 0x20 && c < 0x7f)) {
                throw AgentException.badAnswer("CreateContainer", "a step name of " + name.length()
                        + " characters that is not " + MAX_STEP_NAME + " printable ASCII characters at most");
            }
            if (s.getMicros() < 0 || s.getMicros() > MAX_STEP_MICROS) {
                throw AgentException.badAnswer("CreateContainer", "step \"" + name + "\" of "
                        + Long.toUnsignedString(s.getMicros()) + " µs");
            }
            steps.add(new GuestStep(name, s.getMicros()));
        }
        return List.copyOf(steps);
    }

    /** Starts a created process and returns its pid in the guest. */
    public int startProcess(String containerId, String execId) throws AgentException {
        StartProcessResponse r = call("StartProcess",
                StartProcessRequest.newBuilder().setContainerId(containerId).setExecId(execId).build(),
                StartProcessResponse.parser());
        if (r.getPid() <= 1 || r.getPid() > 4_194_304) {
            throw AgentException.badAnswer("StartProcess", "pid " + Integer.toUnsignedString(r.getPid()));
        }
        return r.getPid();
    }

    public void execProcess(String containerId, String execId, ProcessSpec process) throws AgentException {
        call("ExecProcess", ExecProcessRequest.newBuilder().setContainerId(containerId).setExecId(execId)
                .setProcess(Protos.process(process)).build(), Empty.parser());
    }

    public void signal(String containerId, String execId, int signal, boolean all) throws AgentException {
        call("SignalProcess", SignalProcessRequest.newBuilder().setContainerId(containerId).setExecId(execId)
                .setSignal(signal).setAll(all).build(), Empty.parser());
    }

    /** Blocks until the process exits, or until {@code timeout} (null: no limit). */
    public ProcessExit waitProcess(String containerId, String execId, Duration timeout) throws AgentException {
        WaitProcessResponse r = call("WaitProcess",
                WaitProcessRequest.newBuilder().setContainerId(containerId).setExecId(execId).build(),
                WaitProcessResponse.parser(), timeout);
        if (r.getExitStatus() > 255) {
            throw AgentException.badAnswer("WaitProcess", "exit status " + Integer.toUnsignedString(r.getExitStatus()));
        }
        long ns = r.getExitedAtNs();
        return new ProcessExit(r.getExitStatus(), Instant.ofEpochSecond(Math.floorDiv(ns, 1_000_000_000L),
                Math.floorMod(ns, 1_000_000_000L)));
    }

    public void deleteProcess(String containerId, String execId) throws AgentException {
        call("DeleteProcess", DeleteProcessRequest.newBuilder().setContainerId(containerId).setExecId(execId).build(),
                Empty.parser());
    }

    /** Writes to stdin; returns how many bytes the process took (possibly fewer). */
    public int writeStdin(String containerId, String execId, byte[] data) throws AgentException {
        if (data.length > MAX_CHUNK) {
            throw new IllegalArgumentException("stdin chunk of " + data.length + " bytes is over " + MAX_CHUNK);
        }
        WriteStreamResponse r = call("WriteStdin", WriteStreamRequest.newBuilder().setContainerId(containerId)
                .setExecId(execId).setData(ByteString.copyFrom(data)).build(), WriteStreamResponse.parser());
        if (Integer.compareUnsigned(r.getWritten(), data.length) > 0) {
            throw AgentException.badAnswer("WriteStdin", "wrote " + Integer.toUnsignedString(r.getWritten())
                    + " of " + data.length + " bytes");
        }
        // A blocking write takes at least a byte or fails: "none" would be sent again at once, for ever.
        if (r.getWritten() == 0 && data.length > 0) {
            throw AgentException.badAnswer("WriteStdin", "took none of " + data.length + " bytes");
        }
        return r.getWritten();
    }

    public void closeStdin(String containerId, String execId) throws AgentException {
        call("CloseStdin", CloseStdinRequest.newBuilder().setContainerId(containerId).setExecId(execId).build(),
                Empty.parser());
    }

    /** Blocks until stdout has bytes or ended (or {@code timeout}; null waits for ever). */
    public StreamChunk readStdout(String containerId, String execId, int maxBytes, Duration timeout) throws AgentException {
        return read("ReadStdout", containerId, execId, maxBytes, timeout);
    }

    public StreamChunk readStderr(String containerId, String execId, int maxBytes, Duration timeout) throws AgentException {
        return read("ReadStderr", containerId, execId, maxBytes, timeout);
    }

    @Override
    public StreamChunk readAt(boolean stderr, String containerId, String execId, long offset, int maxBytes, Duration timeout)
            throws AgentException {
        return read(stderr ? "ReadStderr" : "ReadStdout", containerId, execId, offset, maxBytes, timeout);
    }

    private StreamChunk read(String method, String containerId, String execId, int maxBytes, Duration timeout)
            throws AgentException {
        return read(method, containerId, execId, -1, maxBytes, timeout);
    }

    /** A read at {@code offset}, or (-1) one that takes what it gets. */
    private StreamChunk read(String method, String containerId, String execId, long offset, int maxBytes, Duration timeout)
            throws AgentException {
        if (maxBytes < 1 || maxBytes > MAX_CHUNK) {
            throw new IllegalArgumentException("maxBytes " + maxBytes + " is outside 1.." + MAX_CHUNK);
        }
        ReadStreamRequest.Builder req = ReadStreamRequest.newBuilder().setContainerId(containerId).setExecId(execId)
                .setMaxBytes(maxBytes);
        if (offset >= 0) {
            req.setAcked(true).setOffset(offset);
        }
        ReadStreamResponse r = call(method, req.build(), ReadStreamResponse.parser(), timeout);
        if (r.getData().size() > maxBytes) {
            throw AgentException.badAnswer(method, r.getData().size() + " bytes where at most " + maxBytes + " were asked");
        }
        if (offset >= 0 && r.getOffset() != offset) {
            throw AgentException.badAnswer(method, "data at offset " + r.getOffset() + " where " + offset + " was asked");
        }
        // The agent answers a read when it has bytes or the stream ended, never empty-handed:
        // an empty answer would have the caller ask again at once, a daemon thread spinning
        // for as long as a hostile guest likes.
        if (r.getData().isEmpty() && !r.getEof()) {
            throw AgentException.badAnswer(method, "neither data nor the end of the stream");
        }
        return new StreamChunk(r.getData().toByteArray(), r.getEof());
    }

    public void resizePty(String containerId, String execId, int rows, int cols) throws AgentException {
        call("ResizePty", ResizePtyRequest.newBuilder().setContainerId(containerId).setExecId(execId).setRows(rows)
                .setCols(cols).build(), Empty.parser());
    }

    public List<Integer> pids(String containerId) throws AgentException {
        ListPidsResponse r = call("ListPids", container(containerId), ListPidsResponse.parser());
        return r.getPidsList();
    }

    /** Resource use of a container's guest cgroup. */
    public ContainerStats stats(String containerId) throws AgentException {
        StatsResponse r = call("Stats", container(containerId), StatsResponse.parser());
        return new ContainerStats(r.getCpuUsageUsec(), r.getCpuUserUsec(), r.getCpuSystemUsec(), r.getMemoryUsageBytes(),
                r.getMemoryLimitBytes(), r.getPidsCurrent(), r.getPidsLimit(), r.getOomKills());
    }

    public void pause(String containerId) throws AgentException {
        call("PauseContainer", container(containerId), Empty.parser());
    }

    public void resume(String containerId) throws AgentException {
        call("ResumeContainer", container(containerId), Empty.parser());
    }

    public void updateResources(String containerId, ResourceLimits limits) throws AgentException {
        call("UpdateResources", Protos.update(containerId, limits), Empty.parser());
    }

    /**
     * Blocks until some container of the guest has an OOM kill; returns its id, as the guest
     * wrote it made safe to log ({@link AgentException#guestText}: a real id is unchanged).
     */
    @Override
    public String waitOom(Duration timeout) throws AgentException {
        return AgentException.guestText(call("WaitOOM", Empty.getDefaultInstance(), OOMEvent.parser(), timeout)
                .getContainerId());
    }

    public void removeContainer(String containerId) throws AgentException {
        call("RemoveContainer", container(containerId), Empty.parser());
    }

    /** What the agent holds: guest processes, its open fds, containers, processes. */
    public record Info(int guestProcesses, int agentOpenFds, int containers, int processes) {}

    public Info info() throws AgentException {
        AgentInfoResponse r = call("AgentInfo", Empty.getDefaultInstance(), AgentInfoResponse.parser());
        return new Info(r.getGuestProcesses(), r.getAgentOpenFds(), r.getContainers(), r.getProcesses());
    }

    private static ContainerRequest container(String containerId) {
        return ContainerRequest.newBuilder().setContainerId(containerId).build();
    }

    public boolean isConnected() {
        return client.isOpen();
    }

    @Override
    public void close() {
        client.close();
    }
}
