package io.rund.ttrpc;

import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import io.rund.ttrpc.wire.Request;
import io.rund.ttrpc.wire.Response;
import java.io.EOFException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.SocketException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.OptionalLong;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import jdk.net.ExtendedSocketOptions;
import jdk.net.UnixDomainPrincipal;

/**
 * A ttrpc server on unix-domain sockets.
 *
 * <p>Threads: one virtual thread accepts on each listener; one virtual thread per
 * connection reads frames; each request runs on a virtual thread of its own, so one
 * connection serves many calls at once. Responses are written by the request's thread.
 * Deadlines are kept by one small platform timer thread.
 *
 * <p>Lifecycle: build, {@link #serve} one or more listeners, then {@link #shutdown} (stop
 * accepting, let calls in flight finish, bounded by a deadline) or {@link #close} (drop
 * everything now).
 *
 * <p>One file, over the project's usual size: connections, streams, deadlines and shutdown
 * are one state machine whose rules (stream ids, limits, ordering) read best in one place.
 */
public final class Server implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(Server.class.getName());
    private static final Duration MAX_ACCEPT_BACKOFF = Duration.ofSeconds(1);

    private final String name;
    private final Map<String, ServiceDefinition> services;
    private final PeerPolicy peerPolicy;
    private final ErrorMapper errorMapper;
    private final int maxConcurrentCalls;
    private final Code stoppingCode;
    private final ScheduledThreadPoolExecutor timers;
    private final AtomicLong connectionIds = new AtomicLong();

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition connectionClosed = lock.newCondition();
    // guarded by lock
    private final Set<ServerSocketChannel> listeners = new HashSet<>();
    // guarded by lock
    private final Set<Connection> connections = new HashSet<>();
    // guarded by lock
    private boolean stopping;

    private Server(Builder b) {
        this.name = b.name;
        this.services = Map.copyOf(b.services);
        this.peerPolicy = b.peerPolicy;
        this.errorMapper = b.errorMapper;
        this.maxConcurrentCalls = b.maxConcurrentCalls;
        this.stoppingCode = b.stoppingCode;
        this.timers = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "ttrpc-" + name + "-timer");
            t.setDaemon(true);
            return t;
        });
        this.timers.setRemoveOnCancelPolicy(true);
    }

    public static Builder builder() {
        return new Builder();
    }

    /**
     * Serves connections arriving on {@code listener}, from a new virtual thread; returns
     * at once. The server owns the listener from now on and closes it at shutdown.
     */
    public void serve(ServerSocketChannel listener) {
        lock.lock();
        try {
            if (stopping) {
                throw new IllegalStateException("ttrpc server " + name + " is shut down");
            }
            listeners.add(listener);
        } finally {
            lock.unlock();
        }
        Thread.ofVirtual().name("ttrpc-" + name + "-accept").start(() -> acceptLoop(listener));
    }

    /**
     * Serves one connection accepted elsewhere (a relay's link, whose first bytes the caller
     * has read), as if it had arrived on a listener: the peer policy applies.
     */
    public void serve(SocketChannel channel) {
        admit(channel);
    }

    private void acceptLoop(ServerSocketChannel listener) {
        long backoffMillis = 0;
        while (true) {
            SocketChannel channel;
            try {
                channel = listener.accept();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!listener.isOpen()) {
                    return;
                }
                // EMFILE and friends: wait a little, doubling, so a full fd table does not spin.
                backoffMillis = Math.min(Math.max(1, backoffMillis * 2), MAX_ACCEPT_BACKOFF.toMillis());
                LOG.log(Level.WARNING, "ttrpc {0}: accept failed, retrying in {1} ms: {2}", name, backoffMillis, e);
                try {
                    Thread.sleep(backoffMillis);
                } catch (InterruptedException ie) {
                    return;
                }
                continue;
            }
            backoffMillis = 0;
            admit(channel);
        }
    }

    private void admit(SocketChannel channel) {
        PeerCredentials peer;
        try {
            UnixDomainPrincipal p = channel.getOption(ExtendedSocketOptions.SO_PEERCRED);
            peer = new PeerCredentials(p.user(), p.group());
        } catch (IOException | UnsupportedOperationException e) {
            LOG.log(Level.WARNING, "ttrpc {0}: refused a connection whose credentials could not be read: {1}", name, e);
            closeQuietly(channel);
            return;
        }
        String refusal = peerPolicy.refuse(peer);
        if (refusal != null) {
            LOG.log(Level.WARNING, "ttrpc {0}: refused connection: {1}", name, refusal);
            closeQuietly(channel);
            return;
        }
        Connection connection = new Connection(connectionIds.incrementAndGet(), channel, peer);
        lock.lock();
        try {
            if (stopping) {
                closeQuietly(channel);
                return;
            }
            connections.add(connection);
        } finally {
            lock.unlock();
        }
        Thread.ofVirtual().name("ttrpc-" + name + "-conn-" + connection.id).start(connection::readLoop);
    }

    /**
     * Stops accepting, lets each connection finish the calls it has in flight (new calls
     * are answered UNAVAILABLE, or the builder's {@link Builder#stoppingCode}, and never
     * run), and closes connections as they go idle. After
     * {@code grace}, whatever is still open is closed.
     *
     * @return true when every connection went idle within the grace period
     */
    public boolean shutdown(Duration grace) {
        List<Connection> open;
        lock.lock();
        try {
            stopping = true;
            for (ServerSocketChannel l : listeners) {
                closeQuietly(l);
            }
            listeners.clear();
            open = new ArrayList<>(connections);
        } finally {
            lock.unlock();
        }
        for (Connection c : open) {
            c.drain();
        }
        long deadline = System.nanoTime() + grace.toNanos();
        boolean clean;
        lock.lock();
        try {
            long left;
            while (!connections.isEmpty() && (left = deadline - System.nanoTime()) > 0) {
                connectionClosed.awaitNanos(left);
            }
            clean = connections.isEmpty();
            open = new ArrayList<>(connections);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            clean = false;
            open = new ArrayList<>(connections);
        } finally {
            lock.unlock();
        }
        for (Connection c : open) {
            c.close();
        }
        timers.shutdownNow();
        if (!clean && grace.isPositive()) {
            LOG.log(Level.WARNING, "ttrpc {0}: {1} connection(s) still busy after {2}, closed them",
                    name, open.size(), grace);
        }
        return clean;
    }

    /** Closes listeners and connections at once; calls in flight get no answer. */
    @Override
    public void close() {
        shutdown(Duration.ZERO);
    }

    /** Connections open right now (for diagnostics and tests). */
    public int connectionCount() {
        lock.lock();
        try {
            return connections.size();
        } finally {
            lock.unlock();
        }
    }

    private void forget(Connection c) {
        lock.lock();
        try {
            connections.remove(c);
            connectionClosed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    private static void closeQuietly(java.io.Closeable c) {
        try {
            c.close();
        } catch (IOException ignored) {
            // Closing is best effort: the descriptor is gone either way.
        }
    }

    /** One accepted connection; its fields are touched by its reader thread unless marked. */
    private final class Connection {
        final long id;
        final SocketChannel channel;
        final PeerCredentials peer;
        final FrameWriter writer;
        final Semaphore slots = new Semaphore(maxConcurrentCalls);
        // Calls whose handler has not returned yet; any thread.
        final AtomicInteger inFlight = new AtomicInteger();
        final AtomicBoolean closed = new AtomicBoolean();
        // Calls whose handler runs; interrupted when the connection closes, as the peer
        // that would read their answers is gone (containerd's ttrpc cancels their context).
        final Set<Call> calls = ConcurrentHashMap.newKeySet();
        // Set once by shutdown; read by the reader and by finishing calls.
        volatile boolean draining;
        // The reader thread, interrupted at close in case it waits for a call slot.
        volatile Thread reader;
        // The highest stream id accepted so far (unsigned); reader thread only.
        int lastStreamId;

        Connection(long id, SocketChannel channel, PeerCredentials peer) {
            this.id = id;
            this.channel = channel;
            this.peer = peer;
            this.writer = new FrameWriter(channel);
        }

        void readLoop() {
            reader = Thread.currentThread();
            FrameReader reader = new FrameReader(channel);
            try {
                while (true) {
                    Frame frame;
                    try {
                        frame = reader.read();
                    } catch (OversizedFrameException e) {
                        // The payload was skipped, so the stream is still in step: refuse
                        // this one request and keep the connection.
                        LOG.log(Level.DEBUG, "ttrpc {0} conn {1}: {2}", name, id, e.getMessage());
                        if (e.type() == Frame.TYPE_REQUEST) {
                            answer(e.streamId(), new Status(Code.RESOURCE_EXHAUSTED, e.getMessage()), ByteString.EMPTY);
                        }
                        continue;
                    }
                    if (frame == null) {
                        return;
                    }
                    if (frame.type() != Frame.TYPE_REQUEST) {
                        LOG.log(Level.DEBUG, "ttrpc {0} conn {1}: ignored frame of type {2} on stream {3}",
                                name, id, frame.type(), frame.unsignedStreamId());
                        continue;
                    }
                    onRequest(frame);
                }
            } catch (ClosedChannelException e) {
                // We closed it: shutdown, or a failed write.
            } catch (EOFException e) {
                LOG.log(Level.DEBUG, "ttrpc {0} conn {1}: peer left mid-frame: {2}", name, id, e.getMessage());
            } catch (SocketException e) {
                LOG.log(Level.DEBUG, "ttrpc {0} conn {1}: {2}", name, id, e.getMessage());
            } catch (IOException e) {
                if (!closed.get()) {
                    LOG.log(Level.WARNING, "ttrpc {0} conn {1}: read failed: {2}", name, id, e);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } finally {
                close();
            }
        }

        private void onRequest(Frame frame) throws InterruptedException {
            int streamId = frame.streamId();
            if ((streamId & 1) == 0) {
                answer(streamId, Status.of(Code.INVALID_ARGUMENT,
                        "stream id %d is even: client-initiated streams must be odd", frame.unsignedStreamId()), ByteString.EMPTY);
                return;
            }
            if (Integer.compareUnsigned(streamId, lastStreamId) <= 0) {
                answer(streamId, Status.of(Code.INVALID_ARGUMENT,
                        "stream id %d cannot be reused: ids must increase (last was %d)",
                        frame.unsignedStreamId(), Integer.toUnsignedLong(lastStreamId)), ByteString.EMPTY);
                return;
            }
            lastStreamId = streamId;
            Request request;
            try {
                request = Request.parseFrom(frame.payload());
            } catch (InvalidProtocolBufferException e) {
                answer(streamId, Status.of(Code.INVALID_ARGUMENT,
                        "malformed request on stream %d: %s", frame.unsignedStreamId(), e.getMessage()), ByteString.EMPTY);
                return;
            }
            if (draining) {
                answer(streamId, Status.of(stoppingCode, "ttrpc server %s is shutting down", name), ByteString.EMPTY);
                return;
            }
            // Backpressure: with every slot busy, stop reading until a call finishes.
            slots.acquire();
            inFlight.incrementAndGet();
            Call call = new Call(this, streamId, request);
            Thread thread = Thread.ofVirtual()
                    .name("ttrpc-" + name + "-conn-" + id + "-stream-" + frame.unsignedStreamId())
                    .unstarted(call);
            call.thread = thread;
            calls.add(call);
            if (request.getTimeoutNano() > 0) {
                try {
                    call.timer = timers.schedule(call::expire, request.getTimeoutNano(), TimeUnit.NANOSECONDS);
                } catch (RejectedExecutionException e) {
                    // Shutdown stopped the timer while this request was being read.
                    calls.remove(call);
                    callEnded();
                    answer(streamId, Status.of(stoppingCode, "ttrpc server %s is shutting down", name),
                            ByteString.EMPTY);
                    return;
                }
            }
            thread.start();
            if (closed.get()) {
                call.thread.interrupt();
            }
        }

        /** Sends the one response of a stream; a failed write ends the connection. */
        void answer(int streamId, Status status, ByteString payload) {
            byte[] bytes = Response.newBuilder()
                    .setStatus(status.toWire())
                    .setPayload(payload)
                    .build()
                    .toByteArray();
            if (bytes.length > Frame.MAX_PAYLOAD) {
                Status tooBig = Status.of(Code.RESOURCE_EXHAUSTED,
                        "response of %d bytes exceeds the maximum message size of %d", bytes.length, Frame.MAX_PAYLOAD);
                bytes = Response.newBuilder().setStatus(tooBig.toWire()).build().toByteArray();
            }
            try {
                writer.write(streamId, Frame.TYPE_RESPONSE, (byte) 0, bytes);
            } catch (IOException e) {
                if (!closed.get()) {
                    LOG.log(Level.DEBUG, "ttrpc {0} conn {1}: write failed, closing: {2}", name, id, e.getMessage());
                }
                close();
            }
        }

        void callEnded(Call call) {
            calls.remove(call);
            callEnded();
        }

        void callEnded() {
            slots.release();
            if (inFlight.decrementAndGet() == 0 && draining) {
                close();
            }
        }

        void drain() {
            draining = true;
            if (inFlight.get() == 0) {
                close();
            }
        }

        void close() {
            if (closed.compareAndSet(false, true)) {
                closeQuietly(channel);
                for (Call call : calls) {
                    call.thread.interrupt();
                }
                Thread r = reader;
                if (r != null && r != Thread.currentThread()) {
                    r.interrupt();
                }
                forget(this);
            }
        }
    }

    /** One request, from dispatch to answer; runs on its own virtual thread. */
    private final class Call implements Runnable {
        final Connection connection;
        final int streamId;
        final Request request;
        final AtomicBoolean answered = new AtomicBoolean();
        volatile Thread thread;
        volatile ScheduledFuture<?> timer;

        Call(Connection connection, int streamId, Request request) {
            this.connection = connection;
            this.streamId = streamId;
            this.request = request;
        }

        @Override
        public void run() {
            try {
                finish(Status.OK, invoke());
            } catch (Throwable failure) {
                Status status = errorMapper.resolve(failure);
                if (status.code() == Code.UNKNOWN && !answered.get()) {
                    LOG.log(Level.WARNING, "ttrpc " + name + ": " + request.getService() + "/"
                            + request.getMethod() + " failed unexpectedly", failure);
                }
                finish(status, ByteString.EMPTY);
                if (failure instanceof VirtualMachineError e) {
                    throw e;
                }
            } finally {
                ScheduledFuture<?> t = timer;
                if (t != null) {
                    t.cancel(false);
                }
                connection.callEnded(this);
            }
        }

        private ByteString invoke() throws Exception {
            ServiceDefinition service = services.get(request.getService());
            if (service == null) {
                throw new TtrpcException(Code.UNIMPLEMENTED, "service " + request.getService());
            }
            ServiceDefinition.Invoker method = service.method(request.getMethod());
            if (method == null) {
                throw new TtrpcException(Code.UNIMPLEMENTED,
                        "method " + request.getService() + "/" + request.getMethod());
            }
            OptionalLong deadline = request.getTimeoutNano() > 0
                    ? OptionalLong.of(System.nanoTime() + request.getTimeoutNano())
                    : OptionalLong.empty();
            CallContext context = new CallContext(request.getService(), request.getMethod(),
                    Metadata.fromWire(request.getMetadataList()), connection.peer, deadline);
            return method.invoke(context, request.getPayload());
        }

        /** The deadline passed first: answer for the handler and interrupt it. */
        void expire() {
            if (answered.compareAndSet(false, true)) {
                connection.answer(streamId, Status.of(Code.DEADLINE_EXCEEDED,
                        "%s/%s: deadline of %d ns exceeded", request.getService(), request.getMethod(),
                        request.getTimeoutNano()), ByteString.EMPTY);
                Thread t = thread;
                if (t != null) {
                    t.interrupt();
                }
            }
        }

        private void finish(Status status, ByteString payload) {
            if (answered.compareAndSet(false, true)) {
                connection.answer(streamId, status, payload);
            }
        }
    }

    public static final class Builder {
        private String name = "server";
        private final Map<String, ServiceDefinition> services = new HashMap<>();
        private PeerPolicy peerPolicy = PeerPolicy.sameUser();
        private ErrorMapper errorMapper = ErrorMapper.standard();
        private int maxConcurrentCalls = 1024;
        private Code stoppingCode = Code.UNAVAILABLE;

        private Builder() {}

        /** Names the server in thread names and log lines. */
        public Builder name(String name) {
            this.name = Objects.requireNonNull(name, "name");
            return this;
        }

        public Builder register(ServiceDefinition service) {
            if (services.putIfAbsent(service.name(), service) != null) {
                throw new IllegalArgumentException("service " + service.name() + " registered twice");
            }
            return this;
        }

        /** Who may connect; by default only the user this process runs as. */
        public Builder peerPolicy(PeerPolicy policy) {
            this.peerPolicy = Objects.requireNonNull(policy, "policy");
            return this;
        }

        /** How failures become statuses; by default {@link ErrorMapper#standard()}. */
        public Builder errorMapper(ErrorMapper mapper) {
            this.errorMapper = Objects.requireNonNull(mapper, "mapper");
            return this;
        }

        /** Calls one connection may have running at once; past it, reading waits. */
        public Builder maxConcurrentCalls(int max) {
            if (max < 1) {
                throw new IllegalArgumentException("maxConcurrentCalls must be at least 1, got " + max);
            }
            this.maxConcurrentCalls = max;
            return this;
        }

        /**
         * The code of the answer to a request that arrives while the server shuts down, which
         * it does not run: UNAVAILABLE by default. A peer that can send such a request
         * elsewhere (rund's relay, to the next daemon) is better told so by a code of its own.
         */
        public Builder stoppingCode(Code code) {
            if (code == Code.OK) {
                throw new IllegalArgumentException("a request that is not run cannot be answered OK");
            }
            this.stoppingCode = Objects.requireNonNull(code, "code");
            return this;
        }

        public Server build() {
            return new Server(this);
        }
    }
}
