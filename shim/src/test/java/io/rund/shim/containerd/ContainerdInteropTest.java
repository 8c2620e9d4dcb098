package io.rund.shim.containerd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.Descriptors.MethodDescriptor;
import com.google.protobuf.Descriptors.ServiceDescriptor;
import com.google.protobuf.DynamicMessage;
import com.google.protobuf.Empty;
import com.google.protobuf.Message;
import com.google.protobuf.Timestamp;
import io.rund.containerd.cgroups.v1.CgroupV1MetricsProto;
import io.rund.containerd.cgroups.v2.CgroupV2MetricsProto;
import io.rund.containerd.events.TaskEventsProto;
import io.rund.containerd.events.ttrpc.v1.Envelope;
import io.rund.containerd.events.ttrpc.v1.EventsServiceProto;
import io.rund.containerd.events.ttrpc.v1.ForwardRequest;
import io.rund.containerd.task.v2.ShimProto;
import io.rund.containerd.types.MetricsProto;
import io.rund.containerd.types.MountProto;
import io.rund.containerd.types.task.TaskProto;
import io.rund.testing.Command;
import io.rund.testing.GoHarness;
import io.rund.testing.Trees;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * rund's containerd .proto files against containerd's own generated Go code, through the
 * harness in src/test/go/containerd-interop: bytes Go wrote decode field for field, Go's
 * Task client talks to a Java Task server, and Java's event forwarding reaches Go's
 * Events service.
 */
@Timeout(300)
class ContainerdInteropTest {

    private static final Path HARNESS_SOURCE = Path.of("src/test/go/containerd-interop");
    private static final List<FileDescriptor> FILES = List.of(MountProto.getDescriptor(), MetricsProto.getDescriptor(),
            TaskProto.getDescriptor(), ShimProto.getDescriptor(), TaskEventsProto.getDescriptor(),
            EventsServiceProto.getDescriptor(), CgroupV1MetricsProto.getDescriptor(),
            CgroupV2MetricsProto.getDescriptor());

    private Path dir;

    @BeforeEach
    void makeDir() throws Exception {
        dir = Files.createTempDirectory("containerd-interop-");
    }

    @AfterEach
    void removeDir() throws Exception {
        Trees.delete(dir);
    }

    /** The generated Java class of a message, found by the file's java_package. */
    private static Message defaultInstance(Descriptor d) throws Exception {
        String javaPackage = d.getFile().getOptions().getJavaPackage();
        Class<?> c = Class.forName(javaPackage + "." + d.getName());
        return (Message) c.getMethod("getDefaultInstance").invoke(null);
    }

    @Test
    void everyMessageGoEncodesDecodesFieldForField() throws Exception {
        Path harness = GoHarness.build(HARNESS_SOURCE);
        List<Descriptor> messages = new ArrayList<>();
        FILES.forEach(f -> messages.addAll(f.getMessageTypes()));
        List<String> argv = new ArrayList<>(List.of(harness.toString(), "dump", dir.toString()));
        messages.forEach(d -> argv.add(d.getFullName()));
        Command.run(Duration.ofSeconds(60), null, Map.of(), argv).ok();

        assertTrue(messages.size() > 60, "expected every containerd message, found " + messages.size());
        for (Descriptor d : messages) {
            byte[] fromGo = Files.readAllBytes(dir.resolve(d.getFullName() + ".bin"));
            Message prototype = defaultInstance(d);
            Message decoded = prototype.getParserForType().parseFrom(fromGo);
            Message expected = ProtoFill.fill(prototype.newBuilderForType()).build();
            assertEquals(expected, decoded, d.getFullName() + ": Go's bytes decode differently");
            assertTrue(decoded.getUnknownFields().asMap().isEmpty(), d.getFullName() + " has unknown fields");
            if (!d.getFields().isEmpty()) {
                assertTrue(fromGo.length > 0, d.getFullName() + ": Go wrote nothing");
            }
        }
    }

    @Test
    void containerdsTaskClientCallsEveryMethodOfAJavaServer() throws Exception {
        ServiceDescriptor task = ShimProto.getDescriptor().findServiceByName("Task");
        assertEquals("containerd.task.v2.Task", task.getFullName());
        Map<String, Message> received = new ConcurrentHashMap<>();
        ServiceDefinition.Builder service = ServiceDefinition.builder(task.getFullName());
        for (MethodDescriptor m : task.getMethods()) {
            Message responsePrototype = defaultInstance(m.getOutputType());
            service.unary(m.getName(), DynamicMessage.getDefaultInstance(m.getInputType()).getParserForType(),
                    (ctx, request) -> {
                        received.put(m.getName(), request);
                        return ProtoFill.fill(responsePrototype.newBuilderForType()).build();
                    });
        }
        Path socket = dir.resolve("task.sock");
        try (Server server = Server.builder().name("task").register(service.build()).build()) {
            ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            listener.bind(UnixDomainSocketAddress.of(socket));
            server.serve(listener);
            Command.Result r = Command.run(Duration.ofSeconds(60), null, Map.of(),
                    List.of(GoHarness.build(HARNESS_SOURCE).toString(), "task-client", socket.toString())).ok();
            TreeSet<String> expected = new TreeSet<>();
            task.getMethods().forEach(m -> expected.add(m.getName() + " ok"));
            assertEquals(17, expected.size());
            assertEquals(expected, new TreeSet<>(r.stdout().lines().toList()), r.toString());
        }
        for (MethodDescriptor m : task.getMethods()) {
            Message expected = ProtoFill.fill(DynamicMessage.newBuilder(m.getInputType())).build();
            assertEquals(expected, received.get(m.getName()), m.getName() + ": the request Go sent decodes differently");
        }
    }

    @Test
    void eventsForwardedFromJavaDecodeInContainerd() throws Exception {
        Map<String, String> topics = Map.of(
                "TaskCreate", "/tasks/create", "TaskStart", "/tasks/start", "TaskExit", "/tasks/exit",
                "TaskDelete", "/tasks/delete", "TaskExecAdded", "/tasks/exec-added",
                "TaskExecStarted", "/tasks/exec-started", "TaskOOM", "/tasks/oom", "TaskPaused", "/tasks/paused",
                "TaskResumed", "/tasks/resumed", "TaskCheckpointed", "/tasks/checkpointed");
        Path socket = dir.resolve("events.sock");
        Process go = new ProcessBuilder(GoHarness.build(HARNESS_SOURCE).toString(), "events-server", socket.toString())
                .start();
        CompletableFuture<String> stderr = Command.drain(go.getErrorStream());
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(go.getInputStream(), StandardCharsets.UTF_8));
            assertEquals("ready", out.readLine(), () -> "the Go events server did not start: " + stderr.getNow(""));
            List<String> expected = new ArrayList<>();
            try (Client c = Client.connect(socket)) {
                for (Descriptor d : TaskEventsProto.getDescriptor().getMessageTypes()) {
                    String topic = topics.get(d.getName());
                    if (topic == null) {
                        continue; // TaskIO is a part of TaskCreate, not an event
                    }
                    Message event = ProtoFill.fill(defaultInstance(d).newBuilderForType()).build();
                    ForwardRequest forward = ForwardRequest.newBuilder().setEnvelope(Envelope.newBuilder()
                            .setTimestamp(Timestamp.newBuilder().setSeconds(1_700_000_000L))
                            .setNamespace("rund-test")
                            .setTopic(topic)
                            .setEvent(Any.newBuilder().setTypeUrl(d.getFullName()).setValue(event.toByteString())))
                            .build();
                    c.call("containerd.services.events.ttrpc.v1.Events", "Forward", forward, Empty.parser(),
                            CallOptions.DEFAULT.withTimeout(Duration.ofSeconds(10)));
                    expected.add("rund-test " + topic + " " + d.getFullName() + " ok");
                }
            }
            assertEquals(topics.size(), expected.size());
            List<String> got = new ArrayList<>();
            for (int i = 0; i < expected.size(); i++) {
                got.add(out.readLine());
            }
            assertEquals(expected, got, () -> "Go said: " + stderr.getNow(""));
            go.getOutputStream().close();
            assertTrue(go.waitFor(10, TimeUnit.SECONDS));
            assertEquals(0, go.exitValue(), () -> stderr.join());
        } finally {
            go.destroyForcibly();
        }
    }
}
