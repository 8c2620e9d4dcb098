package io.rund.sandbox.agent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An agent that answers reads with nothing and takes no byte of a write, forever: the
 * client refuses the first such answer, so no caller (the daemon's stdio pumps) asks again
 * at once in a loop the guest keeps spinning; and that names an OOM-killed container with
 * a forged log line 100,000 characters long, which reaches the daemon bounded and escaped.
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
            assertEquals(1, reads.get(), "one read asked, none again");
            assertEquals(1, writes.get(), "one write asked, none again");
        } finally {
            agent.close();
            Files.deleteIfExists(socket);
        }
    }
}
