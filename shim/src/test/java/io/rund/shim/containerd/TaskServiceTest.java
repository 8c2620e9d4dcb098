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
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import io.rund.ttrpc.TtrpcException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
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
        service = new TaskService("default", "web", pod.starter(),
                new EventPublisher("unix://" + dir.resolve("events.sock"), "default"), new TaskService.Owner() {
                    @Override
                    public void containerGone(String containerId) {}

                    @Override
                    public void closed() {}
                });
        tasks = Server.builder().name("task").errorMapper(StatusMapper.MAPPER).register(service.definition()).build();
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
        TtrpcException again = assertThrows(TtrpcException.class,
                () -> call("Start", StartRequest.newBuilder().setId("web").build(), StartResponse.parser()));
        assertEquals(Code.FAILED_PRECONDITION, again.code(), "a process starts once");
        TtrpcException running = assertThrows(TtrpcException.class,
                () -> call("Delete", DeleteRequest.newBuilder().setId("web").build(), DeleteResponse.parser()));
        assertEquals(Code.FAILED_PRECONDITION, running.code(), "a running task is not deleted");

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
}
