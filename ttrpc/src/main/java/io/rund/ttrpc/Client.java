package io.rund.ttrpc;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.MessageLite;
import com.google.protobuf.Parser;
import io.rund.ttrpc.wire.Request;
import io.rund.ttrpc.wire.Response;
import java.io.EOFException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A ttrpc client: one connection, many calls in flight on it at once.
 *
 * <p>Threads: callers send from their own threads; one virtual thread reads responses and
 * completes the matching calls. When the connection drops, every pending call fails with
 * UNAVAILABLE and later calls fail at once: make a new client to reconnect.
 */
public final class Client implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(Client.class.getName());
    private static final long MAX_STREAM_ID = 0xFFFF_FFFFL;

    private final String name;
    private final SocketChannel channel;
    private final FrameWriter writer;
    private final Map<Integer, Pending> pending = new ConcurrentHashMap<>();
    private final ReentrantLock sendLock = new ReentrantLock();
    // guarded by sendLock; the next stream id to use (odd, unsigned 32-bit on the wire)
    private long nextStreamId;
    private final AtomicReference<String> closedBecause = new AtomicReference<>();

    private Client(String name, SocketChannel channel, long firstStreamId) {
        if ((firstStreamId & 1) == 0 || firstStreamId < 1 || firstStreamId > MAX_STREAM_ID) {
            throw new IllegalArgumentException("the first stream id must be odd and fit 32 bits, got " + firstStreamId);
        }
        this.nextStreamId = firstStreamId;
        this.name = name;
        this.channel = channel;
        this.writer = new FrameWriter(channel);
        Thread.ofVirtual().name("ttrpc-client-" + name).start(this::readLoop);
    }

    /** Connects to the ttrpc server listening on a unix socket. */
    public static Client connect(Path socket) throws IOException {
        return connect(socket, 1);
    }

    /**
     * Connects, numbering streams from {@code firstStreamId} (odd) instead of 1: for a peer
     * that may not notice a reconnect and could still answer calls of the connection
     * before (rund-agent behind virtio-serial), so that old answers cannot match new calls.
     */
    public static Client connect(Path socket, long firstStreamId) throws IOException {
        SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            channel.connect(UnixDomainSocketAddress.of(socket));
        } catch (IOException e) {
            channel.close();
            throw new IOException("connect to ttrpc server at " + socket + ": " + e.getMessage(), e);
        }
        return new Client(socket.toString(), channel, firstStreamId);
    }

    /** Speaks ttrpc over a channel that is already connected; the client owns it from now on. */
    public static Client over(SocketChannel connected, String name) {
        return new Client(name, connected, 1);
    }

    /** Calls {@code service/method} and waits for the answer. */
    public <R> R call(String service, String method, MessageLite request, Parser<R> responseParser,
            CallOptions options) throws TtrpcException {
        CompletableFuture<R> future = callAsync(service, method, request, responseParser, options);
        try {
            return future.get();
        } catch (InterruptedException e) {
            future.cancel(false);
            Thread.currentThread().interrupt();
            throw new TtrpcException(Code.CANCELLED, service + "/" + method + ": interrupted while waiting");
        } catch (ExecutionException e) {
            if (e.getCause() instanceof TtrpcException t) {
                throw t;
            }
            throw new TtrpcException(new Status(Code.INTERNAL, String.valueOf(e.getCause())), e.getCause());
        }
    }

    /**
     * Sends the call and returns at once. The future fails with a {@link TtrpcException}:
     * the server's status, DEADLINE_EXCEEDED when the timeout passes first, UNAVAILABLE when
     * the connection drops. Cancelling the future abandons the call (a late answer is dropped).
     */
    public <R> CompletableFuture<R> callAsync(String service, String method, MessageLite request,
            Parser<R> responseParser, CallOptions options) {
        String what = service + "/" + method;
        Request.Builder builder = Request.newBuilder()
                .setService(service)
                .setMethod(method)
                .setPayload(request.toByteString())
                .addAllMetadata(options.metadata().toWire());
        if (options.timeout() != null) {
            builder.setTimeoutNano(saturatedNanos(options));
        }
        byte[] bytes = builder.build().toByteArray();
        if (bytes.length > Frame.MAX_PAYLOAD) {
            return CompletableFuture.failedFuture(new TtrpcException(Status.of(Code.RESOURCE_EXHAUSTED,
                    "%s: request of %d bytes exceeds the maximum message size of %d", what, bytes.length,
                    Frame.MAX_PAYLOAD)));
        }
        CompletableFuture<Response> answer = new CompletableFuture<>();
        int streamId;
        String writeFailure = null;
        // Servers refuse a stream id lower than one they have seen, so ids are taken and
        // written under one lock: the order on the wire is the order of the ids.
        sendLock.lock();
        try {
            if (nextStreamId > MAX_STREAM_ID) {
                return CompletableFuture.failedFuture(new TtrpcException(Code.RESOURCE_EXHAUSTED,
                        what + ": this connection has used all its stream ids; open a new one"));
            }
            streamId = (int) nextStreamId;
            nextStreamId += 2;
            pending.put(streamId, new Pending(what, answer));
            // Checked after registering, so a concurrent failAll either sees this call or we see it.
            String closed = closedBecause.get();
            if (closed != null) {
                pending.remove(streamId);
                return CompletableFuture.failedFuture(unavailable(what, closed));
            }
            try {
                writer.write(streamId, Frame.TYPE_REQUEST, (byte) 0, bytes);
            } catch (IOException e) {
                writeFailure = "write failed: " + e.getMessage();
            }
        } finally {
            sendLock.unlock();
        }
        if (writeFailure != null) {
            failAll(writeFailure);
        }
        if (options.timeout() != null) {
            answer.orTimeout(saturatedNanos(options), TimeUnit.NANOSECONDS);
        }
        answer.whenComplete((r, e) -> pending.remove(streamId));
        CompletableFuture<R> result = answer.handle((response, failure) -> {
            if (failure != null) {
                throw new CompletionException(translate(what, options, failure));
            }
            Status status = response.hasStatus() ? Status.fromWire(response.getStatus()) : Status.OK;
            if (!status.isOk()) {
                throw new CompletionException(new TtrpcException(status));
            }
            try {
                return responseParser.parseFrom(response.getPayload());
            } catch (InvalidProtocolBufferException e) {
                throw new CompletionException(new TtrpcException(new Status(Code.INTERNAL,
                        what + ": malformed response payload: " + e.getMessage()), e));
            }
        });
        // Cancelling what the caller holds abandons the call underneath.
        result.whenComplete((r, e) -> {
            if (e instanceof CancellationException) {
                answer.cancel(false);
            }
        });
        return result;
    }

    /** A call waiting for its answer; {@code what} names it in errors. */
    private record Pending(String what, CompletableFuture<Response> answer) {}

    private static long saturatedNanos(CallOptions options) {
        try {
            return options.timeout().toNanos();
        } catch (ArithmeticException e) {
            return Long.MAX_VALUE;
        }
    }

    private static TtrpcException translate(String what, CallOptions options, Throwable failure) {
        Throwable cause = failure instanceof CompletionException && failure.getCause() != null
                ? failure.getCause() : failure;
        return switch (cause) {
            case TtrpcException e -> e;
            case TimeoutException e -> new TtrpcException(new Status(Code.DEADLINE_EXCEEDED,
                    what + ": no answer within " + options.timeout()), e);
            case CancellationException e -> new TtrpcException(new Status(Code.CANCELLED, what + ": cancelled"), e);
            default -> new TtrpcException(new Status(Code.INTERNAL, what + ": " + cause), cause);
        };
    }

    private static TtrpcException unavailable(String what, String why) {
        return new TtrpcException(Code.UNAVAILABLE, what + ": ttrpc connection closed: " + why);
    }

    /** True until the connection dropped or {@link #close()} was called. */
    public boolean isOpen() {
        return closedBecause.get() == null;
    }

    /** Calls still waiting for their answer. */
    public int pendingCalls() {
        return pending.size();
    }

    @Override
    public void close() {
        failAll("closed by the client");
    }

    private void readLoop() {
        FrameReader reader = new FrameReader(channel);
        try {
            while (true) {
                Frame frame;
                try {
                    frame = reader.read();
                } catch (OversizedFrameException e) {
                    Pending call = e.type() == Frame.TYPE_RESPONSE ? pending.remove(e.streamId()) : null;
                    if (call != null) {
                        call.answer.completeExceptionally(new TtrpcException(Code.RESOURCE_EXHAUSTED,
                                call.what + ": response " + e.getMessage()));
                    }
                    continue;
                }
                if (frame == null) {
                    failAll("the server closed the connection");
                    return;
                }
                if (frame.type() != Frame.TYPE_RESPONSE) {
                    LOG.log(Level.DEBUG, "ttrpc client {0}: ignored frame of type {1}", name, frame.type());
                    continue;
                }
                Pending call = pending.remove(frame.streamId());
                if (call == null) {
                    // Most likely an answer that came after its call timed out.
                    LOG.log(Level.DEBUG, "ttrpc client {0}: response for stream {1} that no call waits for",
                            name, frame.unsignedStreamId());
                    continue;
                }
                try {
                    call.answer.complete(Response.parseFrom(frame.payload()));
                } catch (InvalidProtocolBufferException e) {
                    call.answer.completeExceptionally(new TtrpcException(Code.INTERNAL,
                            call.what + ": malformed response envelope: " + e.getMessage()));
                }
            }
        } catch (EOFException e) {
            failAll("the server closed the connection mid-frame");
        } catch (IOException e) {
            failAll(isOpen() ? "read failed: " + e.getMessage() : closedBecause.get());
        }
    }

    private void failAll(String why) {
        if (!closedBecause.compareAndSet(null, why)) {
            why = closedBecause.get();
        }
        try {
            channel.close();
        } catch (IOException ignored) {
            // The descriptor is released either way.
        }
        for (Integer id : pending.keySet()) {
            Pending call = pending.remove(id);
            if (call != null) {
                call.answer.completeExceptionally(unavailable(call.what, why));
            }
        }
    }
}
