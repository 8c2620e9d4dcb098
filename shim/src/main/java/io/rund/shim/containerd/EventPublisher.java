package io.rund.shim.containerd;

import com.google.protobuf.Any;
import com.google.protobuf.Empty;
import com.google.protobuf.Message;
import io.rund.containerd.events.ttrpc.v1.Envelope;
import io.rund.containerd.events.ttrpc.v1.ForwardRequest;
import io.rund.shim.Timestamps;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.TtrpcException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * Sends task events to containerd (Events/Forward on its TTRPC_ADDRESS), in the order
 * they were published, from one virtual thread. Each event is tried a bounded number of
 * times; the queue is bounded too, and an event that cannot be queued is logged, not
 * waited for.
 */
public final class EventPublisher implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(EventPublisher.class.getName());
    private static final String SERVICE = "containerd.services.events.ttrpc.v1.Events";
    private static final int ATTEMPTS = 5;

    private final String address;
    private final String namespace;
    /** An event, and what to run once it has been sent (or given up on). */
    private record Queued(Envelope envelope, Runnable sent) {}

    private final BlockingQueue<Queued> queue = new LinkedBlockingQueue<>(1024);
    private final Thread sender;
    private Client client;

    public EventPublisher(String ttrpcAddress, String namespace) {
        this.address = ttrpcAddress.startsWith("unix://") ? ttrpcAddress.substring(7) : ttrpcAddress;
        this.namespace = namespace;
        this.sender = Thread.ofVirtual().name("events-" + namespace).start(this::run);
    }

    /** Queues {@code event} under {@code topic}, e.g. "/tasks/exit". */
    void publish(String topic, Message event) {
        publish(topic, event, () -> {});
    }

    /** Queues {@code event}; {@code sent} runs once containerd has it, or it was given up on. */
    void publish(String topic, Message event, Runnable sent) {
        Envelope e = Envelope.newBuilder()
                .setTimestamp(Timestamps.of(Instant.now()))
                .setNamespace(namespace)
                .setTopic(topic)
                .setEvent(Any.newBuilder().setTypeUrl(event.getDescriptorForType().getFullName())
                        .setValue(event.toByteString()))
                .build();
        if (!queue.offer(new Queued(e, sent))) {
            LOG.log(Level.WARNING, "events: queue full, dropped {0}", topic);
        }
    }

    private void run() {
        try {
            while (true) {
                Queued q = queue.take();
                if (q.envelope().getTopic().isEmpty()) {
                    return; // the close marker
                }
                send(q.envelope());
                q.sent().run();
            }
        } catch (InterruptedException ignored) {
            // closing
        }
    }

    private void send(Envelope e) throws InterruptedException {
        if (address.isEmpty()) {
            return;
        }
        for (int attempt = 1; attempt <= ATTEMPTS; attempt++) {
            try {
                if (client == null || !client.isOpen()) {
                    client = Client.connect(Path.of(address));
                }
                client.call(SERVICE, "Forward", ForwardRequest.newBuilder().setEnvelope(e).build(), Empty.parser(),
                        CallOptions.DEFAULT.withTimeout(Duration.ofSeconds(5)));
                return;
            } catch (IOException | TtrpcException ex) {
                LOG.log(Level.DEBUG, "events: forward {0} attempt {1}: {2}", e.getTopic(), attempt, ex.getMessage());
                Thread.sleep(50L << attempt);
            }
        }
        LOG.log(Level.WARNING, "events: gave up forwarding {0} to {1}", e.getTopic(), address);
    }

    /** Sends what is queued (bounded wait), then stops. */
    @Override
    public void close() {
        queue.offer(new Queued(Envelope.getDefaultInstance(), () -> {}));
        try {
            sender.join(Duration.ofSeconds(10));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (client != null) {
            client.close();
        }
    }
}
