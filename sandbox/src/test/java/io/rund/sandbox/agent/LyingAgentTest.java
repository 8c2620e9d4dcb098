package io.rund.sandbox.agent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.agent.v1.CreateContainerRequest;
import io.rund.agent.v1.CreateContainerResponse;
import io.rund.agent.v1.GuestStep;
import io.rund.agent.v1.HealthRequest;
import io.rund.agent.v1.HealthResponse;
import io.rund.agent.v1.ReadStreamRequest;
import io.rund.agent.v1.ReadStreamResponse;
import io.rund.agent.v1.WriteStreamRequest;
import io.rund.agent.v1.WriteStreamResponse;
import io.rund.sandbox.Fault;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An agent that answers reads with nothing and takes no byte of a write, forever: the
 * client refuses the first such answer, so no caller (the daemon's stdio pumps) asks again
 * at once in a loop the guest keeps spinning; and that names an OOM-killed container with
 * a forged log line 100,000 characters long, which reaches the daemon bounded and escaped;
 * and that reports the steps of a container's creation in too great a number, under names
 * that are not words, or too long: each such answer is refused, an honest one believed.
 */
@Tag("unit")
class LyingAgentTest {

    @Test
    void emptyAnswersAreRefusedNotRetried(@TempDir Path dir) throws Exception {
        AtomicInteger reads = new AtomicInteger();
        AtomicInteger writes = new AtomicInteger();
        Server agent = Server.builder().name("lying-agent").register(ServiceDefinition.builder(AgentClient.SERVICE)
                .unary("Health", HealthRequest.parser(), (c, r) -> HealthResponse.getDefaultInstance())
                .unary("ReadStdout", ReadStreamRequest.parser(), (c, r) -> {
                    reads.incrementAndGet();
                    return ReadStreamResponse.newBuilder().setOffset(r.getOffset()).build();
                })
                .unary("WriteStdin", WriteStreamRequest.parser(), (c, r) -> {
                    writes.incrementAndGet();
                    return WriteStreamResponse.newBuilder().setWritten(0).build();
                })
                .unary("CreateContainer", CreateContainerRequest.parser(), (c, r) -> steps(r.getContainerId()))
                .unary("WaitOOM", io.rund.agent.v1.Empty.parser(), (c, r) -> io.rund.agent.v1.OOMEvent.newBuilder()
                        .setContainerId("web\nINFO: forged line" + "x".repeat(100_000)).build())
                .build()).build();
        Path socket = dir.resolve("agent.sock");
        ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(socket));
        agent.serve(listener);
        try (AgentClient client = AgentClient.connect(socket, Duration.ofSeconds(10), Duration.ofSeconds(10))) {
            AgentException read = assertThrows(AgentException.class,
                    () -> client.readAt(false, "c1", "", 0, 4096, null));
            assertEquals(Fault.INTERNAL, read.kind());
            assertTrue(read.getMessage().contains("ReadStdout: rejected answer: neither data nor the end of the stream"),
                    read.getMessage());
            AgentException write = assertThrows(AgentException.class,
                    () -> client.writeStdin("c1", "", "input".getBytes()));
            assertTrue(write.getMessage().contains("WriteStdin: rejected answer: took none of 5 bytes"), write.getMessage());
            // An OOM event's container id reaches logs and containerd bounded, unable to forge a line.
            String oom = client.waitOom(Duration.ofSeconds(10));
            assertTrue(oom.startsWith("web\\x0aINFO: forged line"), oom.substring(0, 40));
            assertTrue(oom.length() < AgentException.MAX_GUEST_TEXT + 100, "length " + oom.length());
            assertEquals(List.of(new io.rund.sandbox.guest.GuestStep("mount the writable layer", 1234)),
                    client.createContainer(GuestAgentTest.container("honest", "true")));
            for (String[] lie : new String[][] {{"many", "17 steps, more than 16"},
                    {"control", "a step name of 15 characters that is not 64 printable ASCII characters at most"},
                    {"long", "a step name of 65 characters"}, {"empty", "a step name of 0 characters"},
                    {"forever", "step \"wait\" of 18446744073709551615 µs"}, {"hour", "step \"wait\" of 3600000000 µs"}}) {
                AgentException e = assertThrows(AgentException.class,
                        () -> client.createContainer(GuestAgentTest.container(lie[0], "true")));
                assertEquals(Fault.INTERNAL, e.kind());
                assertTrue(e.getMessage().contains("CreateContainer: rejected answer: " + lie[1]), e.getMessage());
            }
            assertEquals(1, reads.get(), "one read asked, none again");
            assertEquals(1, writes.get(), "one write asked, none again");
        } finally {
            agent.close();
            Files.deleteIfExists(socket);
        }
    }

    /** An answer to CreateContainer for each container id the test asks with. */
    private static CreateContainerResponse steps(String id) {
        CreateContainerResponse.Builder b = CreateContainerResponse.newBuilder();
        switch (id) {
            case "honest" -> b.addSteps(step("mount the writable layer", 1234));
            case "many" -> {
                for (int i = 0; i < 17; i++) {
                    b.addSteps(step("step " + i, 1));
                }
            }
            case "control" -> b.addSteps(step("mount\nINFO: lie", 1));
            case "long" -> b.addSteps(step("x".repeat(65), 1));
            case "empty" -> b.addSteps(step("", 1));
            case "forever" -> b.addSteps(step("wait", -1));
            case "hour" -> b.addSteps(step("wait", 3_600_000_000L));
            default -> throw new IllegalArgumentException(id);
        }
        return b.build();
    }

    private static GuestStep step(String name, long micros) {
        return GuestStep.newBuilder().setName(name).setMicros(micros).build();
    }
}
