package io.rund.shim.containerd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Empty;
import io.rund.containerd.events.ttrpc.v1.Envelope;
import io.rund.containerd.events.ttrpc.v1.ForwardRequest;
import io.rund.containerd.task.v2.CreateTaskRequest;
import io.rund.containerd.task.v2.CreateTaskResponse;
import io.rund.containerd.task.v2.DeleteRequest;
import io.rund.containerd.task.v2.DeleteResponse;
import io.rund.containerd.task.v2.KillRequest;
import io.rund.containerd.task.v2.StartRequest;
import io.rund.containerd.task.v2.StartResponse;
import io.rund.containerd.task.v2.StateRequest;
import io.rund.containerd.task.v2.StateResponse;
import io.rund.containerd.task.v2.WaitRequest;
import io.rund.containerd.task.v2.WaitResponse;
import io.rund.containerd.types.task.Status;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.lifecycle.Pod;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import io.rund.ttrpc.TtrpcException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.util.List;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The task adapter alone, over real ttrpc, against a stand-in pod ({@link StandInPod}): no
 * root, no VM. containerd's calls in containerd's order, the states and codes it acts on,
 * and the events it is sent (caught by an Events service of the test's own).
 */
@Tag("unit")
class TaskServiceTest {

    private static final String TASK = "containerd.task.v2.Task";

    @TempDir
    Path dir;
    private StandInPod pod;
    private TaskService service;
    private Server tasks;
    private Server eventsServer;
    private Client client;
    private final BlockingQueue<Envelope> events = new LinkedBlockingQueue<>();

    private final java.util.concurrent.CompletableFuture<Boolean> stdinReaderAtHold = new java.util.concurrent.CompletableFuture<>();

    /** The fifos the service asked the relay to hold, by key. */
    private final java.util.Map<String, String> held = new java.util.concurrent.ConcurrentHashMap<>();
    private final TaskService.Fifos fifos = new TaskService.Fifos() {
        @Override
        public void hold(String key, boolean read, String path) {
            held.put(key, (read ? "r " : "w ") + path);
            if (read) {
                // Whether the pump had the fifo open when the relay was told to hold it too.
                try {
                    io.rund.rootfs.Syscalls.close(io.rund.rootfs.Syscalls.open(Path.of(path),
                            io.rund.rootfs.Syscalls.O_WRONLY | io.rund.rootfs.Syscalls.O_NONBLOCK, 0));
                    stdinReaderAtHold.complete(true);
                } catch (io.rund.rootfs.Syscalls.SyscallException e) {
                    stdinReaderAtHold.complete(false); // ENXIO: nobody read it yet
                }
            }
        }

        @Override
        public void drop(String key) {
            held.remove(key);
        }
    };
    private static final TaskService.Owner OWNER = new TaskService.Owner() {
        @Override
        public void containerGone(String containerId) {}

        @Override
        public void closed() {}
    };

    @BeforeEach
    void serve() throws Exception {
        Path bundle = Files.createDirectories(dir.resolve("bundle"));
        Files.writeString(bundle.resolve("config.json"),
                "{\"process\":{\"args\":[\"sleep\",\"100\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},\"hostname\":\"t\","
                + "\"linux\":{\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"},"
                + "{\"type\":\"network\"}]}}");
        eventsServer = Server.builder().name("events").register(ServiceDefinition.builder("containerd.services.events.ttrpc.v1.Events")
                .unary("Forward", ForwardRequest.parser(), (c, r) -> {
                    events.add(r.getEnvelope());
                    return Empty.getDefaultInstance();
                }).build()).build();
        eventsServer.serve(listen(dir.resolve("events.sock")));
        pod = new StandInPod("web", dir);
        service = new TaskService("default", "web", "unix://" + dir.resolve("events.sock"), pod.starter(),
                new EventPublisher("unix://" + dir.resolve("events.sock"), "default"), OWNER, fifos, dir.resolve("task.json"));
        Server.Builder b = Server.builder().name("task").errorMapper(StatusMapper.MAPPER);
        service.definitions().forEach(b::register);
        Path pause = Files.createDirectories(dir.resolve("pause-rootfs"));
        Files.createFile(pause.resolve("pause"), java.nio.file.attribute.PosixFilePermissions.asFileAttribute(
                java.nio.file.attribute.PosixFilePermissions.fromString("rwxr-xr-x")));
        b.register(service.sandboxApi(pause));
        tasks = b.build();
        tasks.serve(listen(dir.resolve("task.sock")));
        client = Client.connect(dir.resolve("task.sock"));
    }

    private static ServerSocketChannel listen(Path socket) throws Exception {
        ServerSocketChannel ch = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        ch.bind(UnixDomainSocketAddress.of(socket));
        return ch;
    }

    @AfterEach
    void stop() {
        client.close();
        tasks.close();
        service.close();
        eventsServer.close();
    }

    private <R> R call(String method, com.google.protobuf.MessageLite request, com.google.protobuf.Parser<R> parser)
            throws TtrpcException {
        return client.call(TASK, method, request, parser, io.rund.ttrpc.CallOptions.DEFAULT);
    }

    private CreateTaskRequest create(String id) {
        return CreateTaskRequest.newBuilder().setId(id).setBundle(dir.resolve("bundle").toString()).build();
    }

    private String nextTopic() throws InterruptedException {
        Envelope e = events.poll(10, TimeUnit.SECONDS);
        return e == null ? "(no event in 10 s)" : e.getTopic();
    }

    private <R> R sandboxCall(String method, com.google.protobuf.MessageLite request, com.google.protobuf.Parser<R> parser)
            throws TtrpcException {
        return client.call(SandboxApi.SERVICE, method, request, parser, io.rund.ttrpc.CallOptions.DEFAULT);
    }

    /** A container's bundle whose spec names pod {@code podId} as CRI names it. */
    private CreateTaskRequest joining(String cid, String podId) throws Exception {
        Path bundle = Files.createDirectories(dir.resolve("bundle-" + cid.replace('/', '_')));
        Files.writeString(bundle.resolve("config.json"),
                "{\"process\":{\"args\":[\"sh\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},"
                + "\"annotations\":{\"io.kubernetes.cri.container-type\":\"container\",\"io.kubernetes.cri.sandbox-id\":\""
                + podId + "\"},\"linux\":{\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},"
                + "{\"type\":\"mount\"},{\"type\":\"network\"}]}}");
        return CreateTaskRequest.newBuilder().setId(cid).setBundle(bundle.toString()).build();
    }

    @Test
    void aSandboxApiSandboxTakesThePodsContainersByWhatTheirSpecsName() throws Exception {
        Path sb = Files.createDirectories(dir.resolve("sandbox-bundle"));
        com.google.protobuf.ByteString config = com.google.protobuf.ByteString.copyFrom(new byte[] {0x12, 5, 'w', 'e', 'b', '-', '0'});
        sandboxCall("CreateSandbox", io.rund.containerd.sandbox.v1.CreateSandboxRequest.newBuilder().setSandboxId("web")
                .setBundlePath(sb.toString()).setNetnsPath("/var/run/netns/web")
                .setOptions(com.google.protobuf.Any.newBuilder().setTypeUrl("runtime.v1.PodSandboxConfig").setValue(config))
                .build(), io.rund.containerd.sandbox.v1.CreateSandboxResponse.parser());
        assertEquals("web-0\n", Files.readString(sb.resolve("rund-pod/hostname")), "the pod's hostname, from its config");
        var started = sandboxCall("StartSandbox", io.rund.containerd.sandbox.v1.StartSandboxRequest.newBuilder()
                .setSandboxId("web").build(), io.rund.containerd.sandbox.v1.StartSandboxResponse.parser());
        assertEquals(StandInPod.VM_PID, started.getPid(), "the sandbox's pid is its VM's");
        assertEquals(List.of("web"), pod.containers, "the pod's pause holds its namespaces, a container containerd never sees");

        // The pod's containers come as tasks with no start of their own; their specs say whose they are.
        call("Create", joining("app", "web"), CreateTaskResponse.parser());
        assertEquals(List.of("web", "app"), pod.containers);
        TtrpcException other = assertThrows(TtrpcException.class,
                () -> call("Create", joining("stray", "another-pod"), CreateTaskResponse.parser()));
        assertEquals(Code.NOT_FOUND, other.code(), other.getMessage());
        TtrpcException bad = assertThrows(TtrpcException.class,
                () -> call("Create", joining("../escape", "web"), CreateTaskResponse.parser()));
        assertEquals(Code.INVALID_ARGUMENT, bad.code(), bad.getMessage());
        assertTrue(bad.getMessage().contains("../escape"), bad.getMessage());

        // containerd's Shutdown after a container's delete does not end the pod's endpoint.
        call("Shutdown", io.rund.containerd.task.v2.ShutdownRequest.newBuilder().setId("app").build(), Empty.parser());
        assertTrue(!service.servesNothing() && !pod.stopped, "the sandbox lives on");
        var status = sandboxCall("SandboxStatus", io.rund.containerd.sandbox.v1.SandboxStatusRequest.newBuilder()
                .setSandboxId("web").build(), io.rund.containerd.sandbox.v1.SandboxStatusResponse.parser());
        assertEquals("SANDBOX_READY", status.getState());

        sandboxCall("StopSandbox", io.rund.containerd.sandbox.v1.StopSandboxRequest.newBuilder().setSandboxId("web").build(),
                io.rund.containerd.sandbox.v1.StopSandboxResponse.parser());
        assertTrue(pod.stopped);
        var waited = sandboxCall("WaitSandbox", io.rund.containerd.sandbox.v1.WaitSandboxRequest.newBuilder()
                .setSandboxId("web").build(), io.rund.containerd.sandbox.v1.WaitSandboxResponse.parser());
        assertEquals(0, waited.getExitStatus(), "stopped as asked");
        assertEquals("SANDBOX_NOTREADY", sandboxCall("SandboxStatus", io.rund.containerd.sandbox.v1.SandboxStatusRequest
                .newBuilder().setSandboxId("web").build(), io.rund.containerd.sandbox.v1.SandboxStatusResponse.parser())
                .getState());
    }

    @Test
    void stdinWrittenAndClosedAtOnceReachesTheProcessAndEndsIt() throws Exception {
        // ctr with stdin from a file: it writes everything and closes the fifo as soon as a
        // reader has it open. The relay's hold is a reader too: it must come after the pump's.
        Path in = dir.resolve("stdin-fifo");
        io.rund.rootfs.Syscalls.mkfifo(in, 0600);
        call("Create", create("web").toBuilder().setStdin(in.toString()).build(), CreateTaskResponse.parser());
        Thread writer = Thread.ofVirtual().start(() -> { // as ctr: opens as soon as anyone reads, writes, closes
            try (var w = java.nio.channels.FileChannel.open(in, java.nio.file.StandardOpenOption.WRITE)) {
                w.write(java.nio.ByteBuffer.wrap("line one\nline two\n".getBytes(java.nio.charset.StandardCharsets.UTF_8)));
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser());
        assertTrue(stdinReaderAtHold.get(10, TimeUnit.SECONDS), "the pump had the fifo open before the relay held it");
        writer.join();
        pod.stdinClosed.computeIfAbsent("web/", k -> new java.util.concurrent.CompletableFuture<>()).get(10, TimeUnit.SECONDS);
        assertEquals("line one\nline two\n", pod.stdin.get("web/").toString(java.nio.charset.StandardCharsets.UTF_8));
    }

    @Test
    void aTaskIsCreatedStartedKilledWaitedForAndDeletedAsContainerdExpects() throws Exception {
        CreateTaskResponse created = call("Create", create("web"), CreateTaskResponse.parser());
        assertEquals(StandInPod.VM_PID, created.getPid(), "a task's pid is its VM's on the host");
        assertEquals("/tasks/create", nextTopic());
        assertEquals(Status.CREATED, call("State", StateRequest.newBuilder().setId("web").build(), StateResponse.parser())
                .getStatus());

        call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser());
        assertEquals("/tasks/start", nextTopic());
        assertEquals(Status.RUNNING, call("State", StateRequest.newBuilder().setId("web").build(), StateResponse.parser())
                .getStatus());
        // containerd 2.x's task API v3 is the same service under its own name.
        assertEquals(Status.RUNNING, client.call("containerd.task.v3.Task", "State", StateRequest.newBuilder().setId("web")
                .build(), StateResponse.parser(), io.rund.ttrpc.CallOptions.DEFAULT).getStatus());
        TtrpcException again = assertThrows(TtrpcException.class,
                () -> call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser()));
        assertEquals(Code.FAILED_PRECONDITION, again.code(), "a process starts once");
        TtrpcException running = assertThrows(TtrpcException.class,
                () -> call("Delete", DeleteRequest.newBuilder().setId("web").build(), DeleteResponse.parser()));
        assertEquals(Code.FAILED_PRECONDITION, running.code(), "a running task is not deleted");

        // The guest's OOM killer took a process: containerd hears of it as from runc's shim.
        pod.ooms.add("web");
        Envelope oom = events.poll(10, TimeUnit.SECONDS);
        assertEquals("/tasks/oom", oom == null ? "(none)" : oom.getTopic());
        assertEquals("web", io.rund.containerd.events.TaskOOM.parseFrom(oom.getEvent().getValue()).getContainerId());
        pod.ooms.add("not-a-container-here"); // another endpoint's, or a lie: not told

        call("Kill", KillRequest.newBuilder().setId("web").setSignal(9).build(), Empty.parser());
        WaitResponse waited = call("Wait", WaitRequest.newBuilder().setId("web").build(), WaitResponse.parser());
        assertEquals(137, waited.getExitStatus());
        assertEquals("/tasks/exit", nextTopic());
        StateResponse stopped = call("State", StateRequest.newBuilder().setId("web").build(), StateResponse.parser());
        assertEquals(Status.STOPPED, stopped.getStatus());
        assertEquals(137, stopped.getExitStatus(), "a stopped state carries its exit");
        TtrpcException gone = assertThrows(TtrpcException.class,
                () -> call("Kill", KillRequest.newBuilder().setId("web").setSignal(9).build(), Empty.parser()));
        assertEquals(Code.NOT_FOUND, gone.code(), "a finished process is not signalled");

        DeleteResponse deleted = call("Delete", DeleteRequest.newBuilder().setId("web").build(), DeleteResponse.parser());
        assertEquals(137, deleted.getExitStatus());
        assertEquals("/tasks/delete", nextTopic());
        assertTrue(pod.stopped, "deleting the sandbox's own task stops the pod");
    }

    @Test
    void aCreatedTaskKilledEndsAsRuncsDoes() throws Exception {
        call("Create", create("web"), CreateTaskResponse.parser());
        assertEquals("/tasks/create", nextTopic());
        call("Kill", KillRequest.newBuilder().setId("web").setSignal(28).build(), Empty.parser());
        assertEquals(Status.CREATED, call("State", StateRequest.newBuilder().setId("web").build(), StateResponse.parser())
                .getStatus(), "SIGWINCH leaves it be");
        call("Kill", KillRequest.newBuilder().setId("web").setSignal(9).setAll(true).build(), Empty.parser());
        WaitResponse waited = call("Wait", WaitRequest.newBuilder().setId("web").build(), WaitResponse.parser());
        assertEquals(137, waited.getExitStatus(), "containerd's forced delete kills, then waits");
        assertEquals("/tasks/exit", nextTopic());
        TtrpcException start = assertThrows(TtrpcException.class,
                () -> call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser()));
        assertEquals(Code.FAILED_PRECONDITION, start.code());
        assertEquals(137, call("Delete", DeleteRequest.newBuilder().setId("web").build(), DeleteResponse.parser())
                .getExitStatus());
        assertTrue(pod.stopped);
    }

    @Test
    void badCallsGetTheCodesContainerdActsOn() throws Exception {
        TtrpcException unknown = assertThrows(TtrpcException.class,
                () -> call("State", StateRequest.newBuilder().setId("nobody").build(), StateResponse.parser()));
        assertEquals(Code.NOT_FOUND, unknown.code());
        TtrpcException notRouted = assertThrows(TtrpcException.class,
                () -> call("Create", create("elsewhere"), CreateTaskResponse.parser()));
        assertEquals(Code.NOT_FOUND, notRouted.code(), "a task this endpoint was not given");
        pod.refuseNextCreate = new AgentException(Fault.INVALID_ARGUMENT, "cwd /nowhere does not exist", null);
        TtrpcException refused = assertThrows(TtrpcException.class,
                () -> call("Create", create("web"), CreateTaskResponse.parser()));
        assertEquals(Code.INVALID_ARGUMENT, refused.code(), "the guest's verdict reaches containerd as it is");
        assertTrue(refused.getMessage().contains("cwd /nowhere"), refused.getMessage());
        CreateTaskResponse created = call("Create", create("web"), CreateTaskResponse.parser());
        assertEquals(StandInPod.VM_PID, created.getPid(), "a refused create leaves nothing that blocks the next");
        TtrpcException signal = assertThrows(TtrpcException.class,
                () -> call("Kill", KillRequest.newBuilder().setId("web").setSignal(99).build(), Empty.parser()));
        assertEquals(Code.INVALID_ARGUMENT, signal.code());
    }

    /** A second service over the first's record, as a restarted daemon makes it; served on its own socket. */
    private TaskService adopted(Pod with, Client[] clientOut) throws Exception {
        TaskService again = TaskService.adopt(TaskRecord.read(dir.resolve("task.json")), with, pod.starter(),
                new EventPublisher("unix://" + dir.resolve("events.sock"), "default"), OWNER, fifos,
                dir.resolve("task2.json")); // its own record: the first service still writes task.json
        Server.Builder b = Server.builder().name("task2").errorMapper(StatusMapper.MAPPER);
        again.definitions().forEach(b::register);
        Server server = b.build();
        java.nio.file.Files.deleteIfExists(dir.resolve("task2.sock"));
        server.serve(listen(dir.resolve("task2.sock")));
        clientOut[0] = Client.connect(dir.resolve("task2.sock"));
        return again;
    }

    @Test
    void aRestartedDaemonTakesUpWhatTheRecordSays() throws Exception {
        call("Create", create("web"), CreateTaskResponse.parser());
        call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser());
        assertEquals("/tasks/create", nextTopic());
        assertEquals("/tasks/start", nextTopic());
        TaskRecord saved = TaskRecord.read(dir.resolve("task.json"));
        assertEquals("running", saved.containers().get(0).procs().get(0).state(), saved.toString());
        assertEquals("unix://" + dir.resolve("events.sock"), saved.ttrpcAddress());

        // The daemon is gone; the next one takes the endpoint up from the record with the same pod.
        Client[] c = {null};
        adopted(pod, c);
        StateResponse state = c[0].call(TASK, "State", StateRequest.newBuilder().setId("web").build(), StateResponse.parser(),
                io.rund.ttrpc.CallOptions.DEFAULT);
        assertEquals(Status.RUNNING, state.getStatus());
        c[0].call(TASK, "Kill", KillRequest.newBuilder().setId("web").setSignal(15).build(), Empty.parser(),
                io.rund.ttrpc.CallOptions.DEFAULT);
        WaitResponse waited = c[0].call(TASK, "Wait", WaitRequest.newBuilder().setId("web").build(), WaitResponse.parser(),
                io.rund.ttrpc.CallOptions.DEFAULT);
        assertEquals(143, waited.getExitStatus(), "the taken-up process's exit is watched again");
        // Both services watch the stand-in's process here (one JVM): two exits, each reported once.
        assertEquals("/tasks/exit", nextTopic());
        assertEquals("/tasks/exit", nextTopic());
        awaitReported("task.json");
        awaitReported("task2.json"); // each service's last write, before the directory goes
        c[0].close();
    }

    private void awaitReported(String record) throws Exception {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!TaskRecord.read(dir.resolve(record)).containers().get(0).procs().get(0).reported()) {
            assertTrue(System.nanoTime() < end, record + " says the exit was reported");
            Thread.sleep(10);
        }
    }

    @Test
    void anExitNobodyReportedIsReportedAndASandboxThatIsGoneEndsItsTasksKilled() throws Exception {
        TaskRecord.Proc ran = new TaskRecord.Proc("", "", "", "", false, 4242, "stopped", 0, 7, 1_700_000_000_000_000_000L,
                false);
        new TaskRecord("default", "web", "unix://" + dir.resolve("events.sock"), 0, List.of("web"),
                List.of(new TaskRecord.Container("web", dir.resolve("bundle").toString(), false, List.of(ran))), null, null)
                .write(dir.resolve("task.json"));
        Client[] c = {null};
        adopted(pod, c);
        Envelope exit = events.poll(10, TimeUnit.SECONDS);
        assertEquals("/tasks/exit", exit == null ? "(none)" : exit.getTopic());
        assertEquals(7, io.rund.containerd.events.TaskExit.parseFrom(exit.getEvent().getValue()).getExitStatus());
        awaitReported("task2.json");
        c[0].close();

        // A record of a running task whose sandbox could not be adopted (its VM died meanwhile).
        TaskRecord.Proc running = new TaskRecord.Proc("", "", "", "", false, 4242, "running", 1_700_000_000_000_000_000L, 0,
                0, false);
        new TaskRecord("default", "web", "unix://" + dir.resolve("events.sock"), 0, List.of("web"),
                List.of(new TaskRecord.Container("web", dir.resolve("bundle").toString(), false, List.of(running))), null, null)
                .write(dir.resolve("task.json"));
        adopted(null, c);
        Envelope killed = events.poll(10, TimeUnit.SECONDS);
        assertEquals(137, io.rund.containerd.events.TaskExit.parseFrom(killed.getEvent().getValue()).getExitStatus());
        StateResponse state = c[0].call(TASK, "State", StateRequest.newBuilder().setId("web").build(), StateResponse.parser(),
                io.rund.ttrpc.CallOptions.DEFAULT);
        assertEquals(Status.STOPPED, state.getStatus());
        assertEquals(137, state.getExitStatus());
        c[0].close();
    }

    /** A call as the relay sends it again to a new daemon, after the one that had it died unanswered. */
    private <R> R repeated(Client c, String method, com.google.protobuf.MessageLite request,
            com.google.protobuf.Parser<R> parser) throws TtrpcException {
        return c.call(TASK, method, request, parser, new io.rund.ttrpc.CallOptions(java.time.Duration.ofSeconds(10),
                io.rund.ttrpc.Metadata.of(TaskService.REPLAY, "1")));
    }

    @Test
    void aRepeatedDeleteOrKillIsAnsweredAsTheFirstEvenByTheNextDaemon() throws Exception {
        call("Create", create("web"), CreateTaskResponse.parser());
        call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser());
        call("Kill", KillRequest.newBuilder().setId("web").setSignal(9).build(), Empty.parser());
        WaitResponse waited = call("Wait", WaitRequest.newBuilder().setId("web").build(), WaitResponse.parser());
        assertEquals(137, waited.getExitStatus());
        // A kill that reaches the process after its end, sent again: done, as the first asked.
        repeated(client, "Kill", KillRequest.newBuilder().setId("web").setSignal(9).build(), Empty.parser());
        TtrpcException late = assertThrows(TtrpcException.class,
                () -> call("Kill", KillRequest.newBuilder().setId("web").setSignal(9).build(), Empty.parser()));
        assertEquals(Code.NOT_FOUND, late.code(), "containerd's own kill of an ended process, as runc's shim answers");
        io.rund.containerd.task.v2.DeleteResponse first = call("Delete",
                io.rund.containerd.task.v2.DeleteRequest.newBuilder().setId("web").build(),
                io.rund.containerd.task.v2.DeleteResponse.parser());
        assertEquals(137, first.getExitStatus());

        // The daemon that answered died before the answer left: the next one, from the record, answers the same.
        Client[] c = {null};
        adopted(pod, c);
        io.rund.containerd.task.v2.DeleteResponse again = repeated(c[0], "Delete",
                io.rund.containerd.task.v2.DeleteRequest.newBuilder().setId("web").build(),
                io.rund.containerd.task.v2.DeleteResponse.parser());
        assertEquals(first, again, "a repeated delete is answered as the first was");
        repeated(c[0], "Kill", KillRequest.newBuilder().setId("web").setSignal(15).build(), Empty.parser());
        TtrpcException notRepeated = assertThrows(TtrpcException.class, () -> c[0].call(TASK, "Delete",
                io.rund.containerd.task.v2.DeleteRequest.newBuilder().setId("web").build(),
                io.rund.containerd.task.v2.DeleteResponse.parser(), io.rund.ttrpc.CallOptions.DEFAULT));
        assertEquals(Code.NOT_FOUND, notRepeated.code(), "a second delete from containerd finds nothing, as under runc");
        c[0].close();
    }

    @Test
    void aStoppingDaemonGivesAWaitBackUnrun() throws Exception {
        call("Create", create("web"), CreateTaskResponse.parser());
        call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser());
        var waiting = client.callAsync(TASK, "Wait", WaitRequest.newBuilder().setId("web").build(), WaitResponse.parser(),
                io.rund.ttrpc.CallOptions.DEFAULT);
        service.daemonLeaving(); // whether the Wait is in its handler yet or not, it is given back
        var failure = assertThrows(java.util.concurrent.ExecutionException.class, () -> waiting.get(10, TimeUnit.SECONDS));
        assertEquals(Code.ABORTED, ((TtrpcException) failure.getCause()).code(),
                "ABORTED: the relay keeps the Wait for the next daemon (and never passes this code on)");
    }
}
