package io.rund.sandbox.agent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.agent.v1.Empty;
import io.rund.agent.v1.HealthRequest;
import io.rund.agent.v1.HealthResponse;
import io.rund.agent.v1.ReseedRandomRequest;
import io.rund.agent.v1.SetTimeRequest;
import io.rund.agent.v1.WakeRequest;
import io.rund.ttrpc.Server;
import io.rund.ttrpc.ServiceDefinition;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A woken VM's first round trip: an agent with Wake is asked nothing else, and gets the
 * host's time and the seed in it; an agent without it (a guest older than the host) gets
 * Health, then SetTime and ReseedRandom, as before Wake. The calls each stand-in agent
 * received are the evidence.
 */
@Tag("unit")
class WakeTest {

    private static final byte[] SEED = "a seed of thirty-two bytes here!".getBytes();

    @Test
    void anAgentWithWakeGetsOneCallHoldingTheTimeAndTheSeed(@TempDir Path dir) throws Exception {
        List<String> calls = new CopyOnWriteArrayList<>();
        List<WakeRequest> wakes = new CopyOnWriteArrayList<>();
        ServiceDefinition.Builder agent = agent(calls).unary("Wake", WakeRequest.parser(), (c, r) -> {
            calls.add("Wake");
            wakes.add(r);
            return HealthResponse.newBuilder().setVersion("rund-agent test").build();
        });
        long before = System.currentTimeMillis();
        Server server = serve(dir, agent);
        try (AgentClient a = wake(dir)) {
            assertEquals(List.of("Wake"), calls);
            long sent = wakes.getFirst().getTime().getRealtimeNs() / 1_000_000;
            assertTrue(sent >= before && sent <= System.currentTimeMillis(), "the host's time, not " + sent);
            assertEquals(new String(SEED), wakes.getFirst().getSeed().getSeed().toStringUtf8());
        } finally {
            server.close();
        }
    }

    @Test
    void anAgentWithoutWakeIsAskedHealthThenTimeThenSeed(@TempDir Path dir) throws Exception {
        List<String> calls = new CopyOnWriteArrayList<>();
        Server server = serve(dir, agent(calls));
        try (AgentClient a = wake(dir)) {
            assertEquals(List.of("SetTime", "ReseedRandom"), calls, "after Wake's UNIMPLEMENTED");
        } finally {
            server.close();
        }
    }

    /** An agent that records Health, SetTime and ReseedRandom (Health unrecorded: a probe). */
    private static ServiceDefinition.Builder agent(List<String> calls) {
        return ServiceDefinition.builder(AgentClient.SERVICE)
                .unary("Health", HealthRequest.parser(), (c, r) -> HealthResponse.getDefaultInstance())
                .unary("SetTime", SetTimeRequest.parser(), (c, r) -> {
                    calls.add("SetTime");
                    return Empty.getDefaultInstance();
                })
                .unary("ReseedRandom", ReseedRandomRequest.parser(), (c, r) -> {
                    calls.add("ReseedRandom");
                    return Empty.getDefaultInstance();
                });
    }

    private static AgentClient wake(Path dir) throws Exception {
        return AgentClient.wake(dir.resolve("agent.sock"), Duration.ofSeconds(10), Duration.ofSeconds(10), SEED::clone);
    }

    private static Server serve(Path dir, ServiceDefinition.Builder agent) throws Exception {
        Server server = Server.builder().name("wake-agent").register(agent.build()).build();
        ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(dir.resolve("agent.sock")));
        server.serve(listener);
        return server;
    }
}
