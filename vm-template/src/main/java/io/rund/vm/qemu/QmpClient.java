package io.rund.vm.qemu;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.rund.vm.HypervisorException;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;

/**
 * A client of QEMU's machine protocol (JSON objects, one per line) on a unix socket.
 *
 * <p>Threads: callers send from their own threads (one at a time on the wire); one
 * virtual thread reads, completes the command waiting for each {@code id} and hands events
 * to the listeners. Lines longer than 1 MiB end the connection: QEMU never sends those.
 */
public final class QmpClient implements AutoCloseable {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int MAX_LINE = 1 << 20;

    private final String name;
    private final SocketChannel channel;
    private final ReentrantLock sendLock = new ReentrantLock();
    private final AtomicLong ids = new AtomicLong();
    private final Map<String, CompletableFuture<JsonNode>> pending = new ConcurrentHashMap<>();
    private final List<Consumer<QmpEvent>> listeners = new CopyOnWriteArrayList<>();
    private final CompletableFuture<Void> closed = new CompletableFuture<>();

    private QmpClient(String name, SocketChannel channel) {
        this.name = name;
        this.channel = channel;
    }

    /**
     * Connects (retrying every 10 ms until {@code deadline}: QEMU creates the socket a
     * moment after it starts), reads the greeting and enters command mode.
     */
    public static QmpClient connect(Path socket, String name, Duration deadline, ProcessHandle qemu)
            throws HypervisorException, InterruptedException {
        long end = System.nanoTime() + deadline.toNanos();
        IOException last = null;
        while (System.nanoTime() < end) {
            if (qemu != null && !qemu.isAlive()) {
                throw new HypervisorException("qmp " + name + ": QEMU exited before its QMP socket answered");
            }
            SocketChannel ch = null;
            try {
                ch = SocketChannel.open(StandardProtocolFamily.UNIX);
                ch.connect(UnixDomainSocketAddress.of(socket));
                QmpClient c = new QmpClient(name, ch);
                c.start(Duration.ofNanos(Math.max(1, end - System.nanoTime())));
                return c;
            } catch (IOException e) {
                last = e;
                if (ch != null) {
                    try {
                        ch.close();
                    } catch (IOException ignored) {
                        // already failing
                    }
                }
            }
            Thread.sleep(10);
        }
        throw new HypervisorException("qmp " + name + ": no answer on " + socket + " within " + deadline
                + (last == null ? "" : ": " + last.getMessage()), last);
    }

    private void start(Duration timeout) throws IOException, HypervisorException {
        BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel),
                StandardCharsets.UTF_8));
        String greeting = readLine(in);
        if (greeting == null || !JSON.readTree(greeting).has("QMP")) {
            throw new IOException("not a QMP greeting: " + greeting);
        }
        Thread.ofVirtual().name("qmp-" + name).start(() -> readLoop(in));
        execute("qmp_capabilities", Map.of(), timeout);
    }

    private static String readLine(BufferedReader in) throws IOException {
        StringBuilder b = new StringBuilder();
        int ch;
        while ((ch = in.read()) >= 0) {
            if (ch == '\n') {
                return b.toString();
            }
            if (b.length() >= MAX_LINE) {
                throw new IOException("QMP line longer than " + MAX_LINE + " characters");
            }
            b.append((char) ch);
        }
        return b.isEmpty() ? null : b.toString();
    }

    private void readLoop(BufferedReader in) {
        String why = "QEMU closed the QMP connection";
        try {
            String line;
            while ((line = readLine(in)) != null) {
                JsonNode msg = JSON.readTree(line);
                if (msg.has("event")) {
                    QmpEvent event = new QmpEvent(msg.get("event").asText(), msg.path("data"));
                    for (Consumer<QmpEvent> l : listeners) {
                        l.accept(event);
                    }
                } else if (msg.has("id")) {
                    CompletableFuture<JsonNode> call = pending.remove(msg.get("id").asText());
                    if (call != null) {
                        call.complete(msg);
                    }
                }
            }
        } catch (IOException e) {
            why = "QMP read failed: " + e.getMessage();
        } finally {
            shutdown(why);
        }
    }

    /** Runs a command and returns its "return" value. */
    public JsonNode execute(QmpCommand command, Duration timeout) throws HypervisorException {
        return execute(command.name(), command.arguments(), timeout);
    }

    private JsonNode execute(String command, Map<String, Object> arguments, Duration timeout)
            throws HypervisorException {
        String id = Long.toString(ids.incrementAndGet());
        ObjectNode msg = JSON.createObjectNode().put("execute", command).put("id", id);
        if (!arguments.isEmpty()) {
            msg.set("arguments", JSON.valueToTree(arguments));
        }
        CompletableFuture<JsonNode> answer = new CompletableFuture<>();
        pending.put(id, answer);
        if (closed.isDone()) {
            pending.remove(id);
            throw new HypervisorException("qmp " + name + " " + command + ": connection closed");
        }
        sendLock.lock();
        try {
            ByteBuffer b = ByteBuffer.wrap((msg + "\n").getBytes(StandardCharsets.UTF_8));
            while (b.hasRemaining()) {
                channel.write(b);
            }
        } catch (IOException e) {
            pending.remove(id);
            throw new HypervisorException("qmp " + name + " " + command + ": " + e.getMessage(), e);
        } finally {
            sendLock.unlock();
        }
        JsonNode reply;
        try {
            reply = answer.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            pending.remove(id);
            throw new HypervisorException("qmp " + name + " " + command + ": no answer within " + timeout);
        } catch (InterruptedException e) {
            pending.remove(id);
            Thread.currentThread().interrupt();
            throw new HypervisorException("qmp " + name + " " + command + ": interrupted");
        } catch (ExecutionException e) {
            throw new HypervisorException("qmp " + name + " " + command + ": " + e.getCause().getMessage(), e.getCause());
        }
        if (reply.has("error")) {
            JsonNode err = reply.get("error");
            throw new HypervisorException("qmp " + name + " " + command + ": " + err.path("class").asText() + ": "
                    + err.path("desc").asText());
        }
        return reply.path("return");
    }

    /** Calls {@code listener} for every event from now on (on the reader thread: be quick). */
    public void onEvent(Consumer<QmpEvent> listener) {
        listeners.add(listener);
    }

    /** Completes when the connection is gone. */
    public CompletableFuture<Void> closed() {
        return closed;
    }

    private void shutdown(String why) {
        try {
            channel.close();
        } catch (IOException ignored) {
            // the descriptor is gone either way
        }
        for (String id : pending.keySet()) {
            CompletableFuture<JsonNode> call = pending.remove(id);
            if (call != null) {
                call.completeExceptionally(new IOException(why));
            }
        }
        closed.complete(null);
    }

    @Override
    public void close() {
        shutdown("closed by rund");
    }
}
