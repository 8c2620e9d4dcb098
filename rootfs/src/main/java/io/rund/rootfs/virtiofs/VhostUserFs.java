package io.rund.rootfs.virtiofs;

import io.rund.rootfs.StoreException;
import io.rund.rootfs.Syscalls.SyscallException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A vhost-user-fs back-end inside the daemon: it serves one directory read-only to one
 * VM's virtio-fs device, in place of a virtiofsd process per sandbox.
 *
 * <p>QEMU connects to {@link #socket()} and hands over the guest's memory table, the
 * rings and their eventfds. Guest memory is read and written through the QEMU process
 * (process_vm_readv/writev, see {@link GuestMemory}), never through the memory file
 * QEMU offers: a template's clone maps that file privately, and only QEMU's view holds
 * the clone's own pages. The same property makes the device migratable into a clone:
 * the back-end state QEMU saves with a template (vhost-user's device-state transfer) is
 * just a version line, because a template's guest has not mounted the file system yet,
 * and a clone starts a FUSE session of its own.
 *
 * <p>Threads: one for the vhost-user connection, one serving both queues (the
 * high-priority queue, which carries FORGETs, and one request queue). A guest that breaks
 * the ring's rules stops its queue, and the log names the bad value.
 */
public final class VhostUserFs implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(VhostUserFs.class.getName());

    private static final int GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4, SET_MEM_TABLE = 5, SET_LOG_BASE = 6, SET_LOG_FD = 7,
            SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12,
            SET_VRING_CALL = 13, SET_VRING_ERR = 14, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
            GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18, SET_DEVICE_STATE_FD = 42, CHECK_DEVICE_STATE = 43;
    private static final int FLAG_VERSION = 1, FLAG_REPLY = 4, FLAG_NEED_REPLY = 8;
    private static final long F_LOG_ALL = 1L << 26;
    private static final long F_PROTOCOL_FEATURES = 1L << 30;
    private static final long F_VERSION_1 = 1L << 32;
    private static final long PF_MQ = 1L, PF_LOG_SHMFD = 1L << 1, PF_REPLY_ACK = 1L << 3, PF_DEVICE_STATE = 1L << 19;
    /**
     * Offered to QEMU. Dirty logging (LOG_ALL, LOG_SHMFD) is offered only because QEMU
     * refuses to migrate without it; rund migrates only stopped VMs (saving a template),
     * for which QEMU never starts logging, and a request to start it is refused.
     */
    static final long FEATURES = F_VERSION_1 | F_PROTOCOL_FEATURES | F_LOG_ALL;
    static final long PROTOCOL_FEATURES = PF_MQ | PF_LOG_SHMFD | PF_REPLY_ACK | PF_DEVICE_STATE;
    private static final int QUEUES = 2;
    private static final int MAX_PAYLOAD = 4096;
    private static final int MAX_REGIONS = 32;
    /** What a template's back-end state holds: a version, nothing else. */
    private static final byte[] STATE = "rund-virtiofs 1\n".getBytes(StandardCharsets.US_ASCII);

    private final String name;
    private final Path socket;
    private final int listenFd;
    private final int wakeFd;
    /** Null until {@link #share} names the root: a spare VM's back-end is listening before it knows its share. */
    private volatile FuseServer fuse;
    /** The guest's caps: nodes and open files; set before {@link #share}. */
    private volatile FuseServer.Limits limits = FuseServer.Limits.DEFAULT;
    private final ReentrantLock lock = new ReentrantLock();
    private final Virtqueue[] queues = new Virtqueue[QUEUES];
    private final Thread control;
    private final Thread worker;
    private volatile boolean closed;
    private volatile int connFd = -1;
    private GuestMemory memory;
    private long ackedFeatures;
    private long ackedProtocolFeatures;
    private int loadFd = -1;

    private VhostUserFs(String name, Path socket, int listenFd, int wakeFd) {
        this.name = name;
        this.socket = socket;
        this.listenFd = listenFd;
        this.wakeFd = wakeFd;
        for (int i = 0; i < QUEUES; i++) {
            queues[i] = new Virtqueue(i);
        }
        this.control = Thread.ofPlatform().name("virtiofs-" + name).daemon().unstarted(this::serve);
        this.worker = Thread.ofPlatform().name("virtiofs-" + name + "-queues").daemon().unstarted(this::work);
    }

    /**
     * Serves {@code root} read-only on a new vhost-user socket at {@code socket}.
     *
     * @param name names the back-end in logs and thread names (the sandbox's id)
     */
    public static VhostUserFs start(String name, Path socket, Path root) throws StoreException {
        return start(name, socket, root, FuseServer.Limits.DEFAULT);
    }

    /** {@link #start} with caps of the tests' choosing. */
    static VhostUserFs start(String name, Path socket, Path root, FuseServer.Limits limits) throws StoreException {
        VhostUserFs fs = listen(name, socket);
        fs.limits = limits;
        try {
            fs.share(root);
        } catch (StoreException e) {
            fs.close();
            throw e;
        }
        return fs;
    }

    /**
     * A back-end that accepts QEMU's connection on {@code socket} and speaks vhost-user
     * before it has a root; requests that reach it before {@link #share} wait in their queue.
     */
    public static VhostUserFs listen(String name, Path socket) throws StoreException {
        int listenFd = -1;
        int wakeFd = -1;
        try {
            Files.deleteIfExists(socket);
            listenFd = Posix.listenUnix(socket);
            wakeFd = Posix.eventfd();
        } catch (IOException | SyscallException | IllegalArgumentException e) {
            Posix.closeQuietly(listenFd);
            throw new StoreException("virtio-fs " + name + ": listen on " + socket + ": " + e.getMessage(), e);
        }
        VhostUserFs fs = new VhostUserFs(name, socket, listenFd, wakeFd);
        fs.control.start();
        fs.worker.start();
        return fs;
    }

    /** Serves {@code root} read-only from now on; once only. */
    public void share(Path root) throws StoreException {
        if (!Files.isDirectory(root)) {
            throw new StoreException("virtio-fs " + name + ": root " + root + " is not a directory");
        }
        lock.lock();
        try {
            if (fuse != null) {
                throw new IllegalStateException("virtio-fs " + name + " already serves a root");
            }
            fuse = new FuseServer(root, limits);
        } catch (SyscallException e) {
            throw new StoreException("virtio-fs " + name + ": open root " + root + ": " + e.getMessage(), e);
        } finally {
            lock.unlock();
        }
        wake(); // requests may be waiting
    }

    public Path socket() {
        return socket;
    }

    /** The nodes the guest holds lookups on; for tests and diagnostics. */
    int nodes() {
        return count(FuseServer::openNodes);
    }

    /** The guest's open files and directories (each one descriptor of ours); for tests and diagnostics. */
    int handles() {
        return count(FuseServer::openHandles);
    }

    private int count(java.util.function.ToIntFunction<FuseServer> what) {
        lock.lock();
        try {
            return fuse == null ? 0 : what.applyAsInt(fuse);
        } finally {
            lock.unlock();
        }
    }

    // ---- the vhost-user connection ----

    private void serve() {
        while (!closed) {
            int fd;
            try {
                fd = Posix.accept(listenFd);
            } catch (SyscallException e) {
                if (!closed) {
                    LOG.log(Level.WARNING, "virtio-fs {0}: accept: {1}", name, e.getMessage());
                }
                return;
            }
            connFd = fd;
            try {
                int pid = Posix.peerPid(fd);
                LOG.log(Level.DEBUG, "virtio-fs {0}: front-end pid {1} connected", name, pid);
                connection(fd, pid);
            } catch (ProtocolException | SyscallException e) {
                if (!closed) {
                    LOG.log(Level.WARNING, "virtio-fs {0}: {1}; dropping the connection", name, e.getMessage());
                }
            } catch (RuntimeException e) {
                // A message we failed to decode is a bug of ours; it costs the connection, never the back-end.
                LOG.log(Level.WARNING, "virtio-fs " + name + ": dropping the connection", e);
            } finally {
                connFd = -1;
                Posix.closeQuietly(fd);
                lock.lock();
                try {
                    for (Virtqueue q : queues) {
                        resetQueue(q);
                    }
                    memory = null;
                    Posix.closeQuietly(loadFd);
                    loadFd = -1;
                } finally {
                    lock.unlock();
                }
                wake();
            }
        }
    }

    /** The front-end broke the vhost-user protocol. */
    private static final class ProtocolException extends Exception {
        private static final long serialVersionUID = 1L;

        ProtocolException(String message) {
            super(message);
        }
    }

    private void connection(int fd, int pid) throws ProtocolException, SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment header = arena.allocate(12, 4);
            MemorySegment payload = arena.allocate(MAX_PAYLOAD, 8);
            int[] fds = new int[8];
            int[] nfds = new int[1];
            while (!closed) {
                int n = Posix.recvWithFds(fd, header, fds, nfds);
                if (n == 0) {
                    LOG.log(Level.DEBUG, "virtio-fs {0}: front-end closed the connection", name);
                    return;
                }
                int[] received = Arrays.copyOf(fds, nfds[0]);
                try {
                    readFully(fd, header.asSlice(n), header.byteSize() - n);
                    int request = header.get(ValueLayout.JAVA_INT, 0);
                    int flags = header.get(ValueLayout.JAVA_INT, 4);
                    int size = header.get(ValueLayout.JAVA_INT, 8);
                    if (size < 0 || size > MAX_PAYLOAD) {
                        throw new ProtocolException("request " + request + " has a payload of " + Integer.toUnsignedString(size)
                                + " bytes, more than " + MAX_PAYLOAD);
                    }
                    readFully(fd, payload, size);
                    ByteBuffer p = ByteBuffer.wrap(payload.asSlice(0, size).toArray(ValueLayout.JAVA_BYTE))
                            .order(ByteOrder.LITTLE_ENDIAN);
                    long[] reply;
                    lock.lock();
                    try {
                        reply = handle(request, p, received, pid);
                    } finally {
                        lock.unlock();
                    }
                    wake();
                    if (reply != null) {
                        send(fd, request, reply);
                    } else if ((flags & FLAG_NEED_REPLY) != 0 && (ackedProtocolFeatures & PF_REPLY_ACK) != 0) {
                        send(fd, request, new long[] {0});
                    }
                } finally {
                    for (int r : received) {
                        Posix.closeQuietly(r); // those the handler did not take (taken ones are -1)
                    }
                }
            }
        }
    }

    private static void readFully(int fd, MemorySegment into, long len) throws SyscallException, ProtocolException {
        long off = 0;
        while (off < len) {
            int n = Posix.read(fd, into.asSlice(off), len - off);
            if (n == 0) {
                throw new ProtocolException("connection closed in the middle of a message");
            }
            off += n;
        }
    }

    /** A reply of u64 words; vring-state replies pass two u32 packed as one word. */
    private static void send(int fd, int request, long[] words) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(12 + 8L * words.length, 8);
            m.set(ValueLayout.JAVA_INT, 0, request);
            m.set(ValueLayout.JAVA_INT, 4, FLAG_VERSION | FLAG_REPLY);
            m.set(ValueLayout.JAVA_INT, 8, 8 * words.length);
            for (int i = 0; i < words.length; i++) {
                m.set(ValueLayout.JAVA_LONG_UNALIGNED, 12 + 8L * i, words[i]);
            }
            Posix.writeAll(fd, m);
        }
    }

    /** Takes the message's first descriptor (the caller closes those not taken), or -1. */
    private static int take(int[] fds) {
        if (fds.length == 0 || fds[0] < 0) {
            return -1;
        }
        int fd = fds[0];
        fds[0] = -1;
        return fd;
    }

    /**
     * Handles one message. A descriptor the message keeps is taken from {@code fds} with
     * {@link #take}; the caller closes the rest, whatever happens here.
     *
     * @return the reply's words, or null for messages without a reply
     */
    private long[] handle(int request, ByteBuffer p, int[] fds, int pid) throws ProtocolException, SyscallException {
        switch (request) {
            case GET_FEATURES -> {
                return new long[] {FEATURES};
            }
            case SET_FEATURES -> {
                ackedFeatures = u64(p, request);
                if ((ackedFeatures & ~FEATURES) != 0) {
                    throw new ProtocolException("front-end acked features 0x" + Long.toHexString(ackedFeatures)
                            + " beyond the offered 0x" + Long.toHexString(FEATURES));
                }
                if ((ackedFeatures & F_LOG_ALL) != 0) {
                    throw new ProtocolException("front-end started dirty logging, which needs a running VM's live migration");
                }
                return null;
            }
            case GET_PROTOCOL_FEATURES -> {
                return new long[] {PROTOCOL_FEATURES};
            }
            case SET_PROTOCOL_FEATURES -> {
                ackedProtocolFeatures = u64(p, request) & PROTOCOL_FEATURES;
                return null;
            }
            case GET_QUEUE_NUM -> {
                return new long[] {QUEUES};
            }
            case SET_OWNER, RESET_OWNER -> {
                if (request == RESET_OWNER) {
                    for (Virtqueue q : queues) {
                        resetQueue(q);
                    }
                }
                return null;
            }
            case SET_MEM_TABLE -> {
                // The region files are not taken: memory is reached through the front-end process.
                memory = memTable(p, pid);
                return null;
            }
            case SET_VRING_NUM -> {
                need(p, 8, request); // struct vhost_vring_state: index, num
                Virtqueue q = queue(p.getInt(), request);
                int num = p.getInt();
                if (num <= 0 || num > 32768 || Integer.bitCount(num) != 1) {
                    throw new ProtocolException("queue " + q.index + " size " + num + " is not a power of two up to 32768");
                }
                q.size = num;
                return null;
            }
            case SET_VRING_ADDR -> {
                need(p, 40, request);
                Virtqueue q = queue(p.getInt(), request);
                p.getInt(); // flags: no dirty log
                q.descHva = p.getLong();
                q.usedHva = p.getLong();
                q.availHva = p.getLong();
                q.usedIdx = -1;
                return null;
            }
            case SET_VRING_BASE -> {
                need(p, 8, request); // struct vhost_vring_state: index, num
                Virtqueue q = queue(p.getInt(), request);
                q.lastAvail = p.getInt() & 0xffff;
                q.usedIdx = -1;
                return null;
            }
            case GET_VRING_BASE -> {
                need(p, 8, request); // struct vhost_vring_state: index, num
                Virtqueue q = queue(p.getInt(), request);
                int base = q.lastAvail;
                q.enabled = false;
                Posix.closeQuietly(q.kickFd);
                q.kickFd = -1;
                return new long[] {(Integer.toUnsignedLong(base) << 32) | q.index};
            }
            case SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR -> {
                long v = u64(p, request);
                Virtqueue q = queue((int) (v & 0xff), request);
                if (request == SET_VRING_ERR) {
                    return null; // errors are reported in the log, not to the front-end; its eventfd is closed
                }
                int fd = (v & 0x100) != 0 ? -1 : take(fds);
                if (fd < 0 && request == SET_VRING_KICK) {
                    throw new ProtocolException("queue " + q.index + " has no kick eventfd; polling is not supported");
                }
                if (request == SET_VRING_KICK) {
                    Posix.closeQuietly(q.kickFd);
                    q.kickFd = fd;
                    q.pending = true; // a kick may have come before this eventfd
                    if ((ackedFeatures & F_PROTOCOL_FEATURES) == 0) {
                        q.enabled = true;
                    }
                } else {
                    Posix.closeQuietly(q.callFd);
                    q.callFd = fd;
                }
                return null;
            }
            case SET_VRING_ENABLE -> {
                need(p, 8, request); // struct vhost_vring_state: index, num
                Virtqueue q = queue(p.getInt(), request);
                q.enabled = p.getInt() != 0;
                if (q.enabled) {
                    q.broken = false;
                    q.pending = true; // serve what the guest queued before we listened (every message wakes the worker)
                }
                return null;
            }
            case SET_DEVICE_STATE_FD -> {
                need(p, 8, request);
                int direction = p.getInt();
                int phase = p.getInt();
                if (fds.length == 0 || phase != 0 || direction < 0 || direction > 1) {
                    throw new ProtocolException("device state transfer direction " + direction + " phase " + phase
                            + (fds.length == 0 ? " without a descriptor" : " is not supported"));
                }
                int fd = take(fds);
                if (direction == 0) {
                    try {
                        FuseServer f = fuse;
                        if (f != null && f.initialized()) {
                            LOG.log(Level.WARNING, "virtio-fs {0}: refusing to save state: the guest has mounted the"
                                    + " file system, and a FUSE session cannot move to a clone", name);
                            return new long[] {0x100 | 1};
                        }
                        try (Arena a = Arena.ofConfined()) {
                            Posix.writeAll(fd, a.allocateFrom(ValueLayout.JAVA_BYTE, STATE));
                        }
                    } finally {
                        Posix.closeQuietly(fd);
                    }
                } else {
                    Posix.closeQuietly(loadFd);
                    loadFd = fd; // QEMU writes after our reply; read at CHECK_DEVICE_STATE
                }
                return new long[] {0x100}; // success, no descriptor of ours
            }
            case CHECK_DEVICE_STATE -> {
                if (loadFd < 0) {
                    return new long[] {0};
                }
                try (Arena a = Arena.ofConfined()) {
                    MemorySegment buf = a.allocate(256);
                    int total = 0;
                    for (int n; total < buf.byteSize() && (n = Posix.read(loadFd, buf.asSlice(total), buf.byteSize() - total)) > 0; ) {
                        total += n;
                    }
                    byte[] got = buf.asSlice(0, total).toArray(ValueLayout.JAVA_BYTE);
                    if (!Arrays.equals(got, STATE)) {
                        LOG.log(Level.WARNING, "virtio-fs {0}: template back-end state {1} is not {2}", name,
                                new String(got, StandardCharsets.US_ASCII).strip(), new String(STATE, StandardCharsets.US_ASCII).strip());
                        return new long[] {1};
                    }
                    return new long[] {0};
                } finally {
                    Posix.closeQuietly(loadFd);
                    loadFd = -1;
                }
            }
            case SET_LOG_BASE, SET_LOG_FD -> {
                throw new ProtocolException("front-end asked for dirty logging (request " + request
                        + "), which only a running VM's live migration needs");
            }
            default -> {
                throw new ProtocolException("request " + request + " is not supported");
            }
        }
    }

    private static void need(ByteBuffer p, int bytes, int request) throws ProtocolException {
        if (p.remaining() < bytes) {
            throw new ProtocolException("request " + request + " payload is " + p.remaining() + " bytes, needs " + bytes);
        }
    }

    private static long u64(ByteBuffer p, int request) throws ProtocolException {
        need(p, 8, request);
        return p.getLong();
    }

    private Virtqueue queue(int index, int request) throws ProtocolException {
        if (index < 0 || index >= QUEUES) {
            throw new ProtocolException("request " + request + " names queue " + index + "; there are " + QUEUES);
        }
        return queues[index];
    }

    private GuestMemory memTable(ByteBuffer p, int pid) throws ProtocolException {
        need(p, 8, SET_MEM_TABLE);
        int n = p.getInt();
        p.getInt();
        if (n < 1 || n > MAX_REGIONS) {
            throw new ProtocolException("memory table has " + n + " regions; 1.." + MAX_REGIONS + " expected");
        }
        need(p, 32 * n, SET_MEM_TABLE);
        List<GuestMemory.Region> regions = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long gpa = p.getLong();
            long size = p.getLong();
            long hva = p.getLong();
            p.getLong(); // mmap offset: only for mapping the file, which we do not
            if (size <= 0 || gpa + size < gpa || hva + size < hva) {
                throw new ProtocolException("memory region " + i + " (0x" + Long.toHexString(gpa) + "+0x"
                        + Long.toHexString(size) + ") wraps or is empty");
            }
            regions.add(new GuestMemory.Region(gpa, size, hva));
        }
        return new GuestMemory(pid, regions);
    }

    private static void resetQueue(Virtqueue q) {
        Posix.closeQuietly(q.kickFd);
        Posix.closeQuietly(q.callFd);
        q.kickFd = -1;
        q.callFd = -1;
        q.enabled = false;
        q.broken = false;
        q.pending = false;
        q.size = 0;
        q.descHva = q.availHva = q.usedHva = 0;
        q.lastAvail = 0;
        q.usedIdx = -1;
    }

    // ---- the queues ----

    private void wake() {
        try {
            Posix.signal(wakeFd);
        } catch (SyscallException e) {
            LOG.log(Level.WARNING, "virtio-fs {0}: wake the queue worker: {1}", name, e.getMessage());
        }
    }

    private void work() {
        while (!closed) {
            int[] fds;
            Virtqueue[] polled;
            lock.lock();
            try {
                List<Virtqueue> ready = new ArrayList<>();
                for (Virtqueue q : queues) {
                    if (q.ready() && memory != null) {
                        ready.add(q);
                    }
                }
                polled = ready.toArray(Virtqueue[]::new);
                fds = new int[polled.length + 1];
                fds[0] = wakeFd;
                for (int i = 0; i < polled.length; i++) {
                    fds[i + 1] = polled[i].kickFd;
                }
                for (Virtqueue q : polled) {
                    if (q.pending && fuse != null) {
                        q.pending = false;
                        serveQueue(q);
                    }
                }
            } finally {
                lock.unlock();
            }
            try {
                boolean[] ready = Posix.pollIn(fds);
                if (ready[0]) {
                    Posix.drain(wakeFd);
                }
                for (int i = 1; i < fds.length; i++) {
                    if (ready[i]) {
                        lock.lock();
                        try {
                            if (polled[i - 1].kickFd == fds[i]) {
                                Posix.drain(fds[i]);
                                polled[i - 1].pending = true;
                            }
                        } finally {
                            lock.unlock();
                        }
                    }
                }
            } catch (SyscallException e) {
                // A kick fd closed by the control thread between our snapshot and poll: go round again.
                LOG.log(Level.DEBUG, "virtio-fs {0}: poll: {1}", name, e.getMessage());
            }
        }
    }

    /** Serves a queue's pending requests; the lock is held. */
    private void serveQueue(Virtqueue q) {
        try {
            q.process(memory, fuse);
        } catch (Virtqueue.BadChainException | GuestMemory.BadAddressException e) {
            q.broken = true;
            LOG.log(Level.WARNING, "virtio-fs {0}: guest broke queue {1}: {2}; the queue stops", name, q.index, e.getMessage());
        } catch (SyscallException | RuntimeException e) {
            // A RuntimeException is a bug of ours; it stops this queue, not the worker serving the others.
            q.broken = true;
            LOG.log(Level.WARNING, "virtio-fs {0}: queue {1}: {2}; the queue stops", name, q.index, e.toString());
        }
    }

    /** Stops serving: closes the socket and the connection, joins both threads, removes the socket file. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        Posix.shutdown(listenFd);
        int c = connFd;
        if (c >= 0) {
            Posix.shutdown(c);
        }
        wake();
        try {
            control.join(5000);
            worker.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Posix.closeQuietly(listenFd);
        Posix.closeQuietly(wakeFd);
        lock.lock();
        try {
            if (fuse != null) {
                fuse.close();
            }
        } finally {
            lock.unlock();
        }
        try {
            Files.deleteIfExists(socket);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "virtio-fs {0}: remove {1}: {2}", name, socket, e.getMessage());
        }
    }
}
