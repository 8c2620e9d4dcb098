package io.rund.rootfs.virtiofs;

import io.rund.testing.NativeTools;
import io.rund.rootfs.Syscalls;
import io.rund.rootfs.Syscalls.SyscallException;
import io.rund.rootfs.SandboxHelper;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/**
 * Plays QEMU and a hostile guest kernel against a sandbox's helper (its vhost-user-fs
 * back-end): speaks vhost-user on its socket, gives it guest memory this test owns, lays
 * out both split virtqueues, and writes descriptors, rings and FUSE requests itself, so
 * that a test can break any rule a guest can.
 *
 * <p>The helper reaches guest memory as it reaches QEMU's: process_vm_readv/writev of the
 * process at the other end of its socket, as its own uid. So the front-end process is
 * {@code memholder}, started by rund-jail as the helper's uid and connected by it (as QEMU
 * is): it maps a memfd shared and waits. This test maps the same memfd (through
 * /proc/PID/fd) and takes memholder's connection (pidfd_getfd), then speaks for it.
 *
 * <p>Guest-physical layout: queue q's descriptor table at q * 64 KiB, its available ring
 * 16 KiB above, its used ring 32 KiB above; request buffers from 1 MiB (8 KiB per slot),
 * reply buffers from 2 MiB (128 KiB per slot), 64 slots; 16 MiB of RAM at guest-physical 0.
 */
final class HostileDriver implements AutoCloseable {

    static final int GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5, SET_VRING_NUM = 8,
            SET_VRING_ADDR = 9, SET_VRING_BASE = 10, SET_VRING_KICK = 12, SET_VRING_CALL = 13,
            GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16, SET_VRING_ENABLE = 18;
    static final long F_VERSION_1 = 1L << 32, F_PROTOCOL_FEATURES = 1L << 30;
    static final int QSIZE = 256;
    static final int SLOTS = 64;
    static final long RAM = 16 << 20;
    static final int REQUEST_BYTES = 8 << 10;
    static final int REPLY_BYTES = 128 << 10;
    static final short F_NEXT = 1, F_WRITE = 2, F_INDIRECT = 4;

    // FUSE, as linux/fuse.h numbers it.
    static final int LOOKUP = 1, FORGET = 2, GETATTR = 3, SETATTR = 4, READLINK = 5, SYMLINK = 6, MKNOD = 8, MKDIR = 9,
            UNLINK = 10, RMDIR = 11, RENAME = 12, LINK = 13, OPEN = 14, READ = 15, WRITE = 16, STATFS = 17,
            RELEASE = 18, FLUSH = 25, SETXATTR = 21, GETXATTR = 22, INIT = 26, OPENDIR = 27, READDIR = 28,
            RELEASEDIR = 29, CREATE = 35, INTERRUPT = 36, BATCH_FORGET = 42, RENAME2 = 45;
    static final int IN_HEADER = 40, OUT_HEADER = 16;
    static final int ENOENT = 2, ENXIO = 6, EBADF = 9, ENOMEM = 12, ENOTDIR = 20, EINVAL = 22, EMFILE = 24, EROFS = 30,
            ENAMETOOLONG = 36, ENOSYS = 38, EPERM = 1, EEXIST = 17, ENOTEMPTY = 39, EOPNOTSUPP = 95;

    /** Holds the RAM's mapping here; closed with the driver. */
    private final Arena arena;
    final MemorySegment ram;
    /** Where memholder maps the RAM: the "front-end addresses" the helper is told. */
    private final long ramHva;
    final int sock;
    private final Process holder;
    private final int[] kick = {-1, -1};
    private final int[] call = {-1, -1};
    private final int[] availIdx = new int[2];
    private final int[] usedSeen = new int[2];
    private long unique = 1;

    private HostileDriver(Process holder, Arena arena, long ramHva, MemorySegment ram, int sock) {
        this.holder = holder;
        this.arena = arena;
        this.ramHva = ramHva;
        this.ram = ram;
        this.sock = sock;
    }

    /** Connects to {@code helper}'s socket as a front-end of its uid, and sets both queues up as QEMU does. */
    static HostileDriver connect(SandboxHelper helper, SandboxHelper.Jail jail) throws Exception {
        HostileDriver d = attach(helper.socket(), jail);
        try {
            d.setUp();
            return d;
        } catch (SyscallException | RuntimeException e) {
            d.close();
            throw e;
        }
    }

    /** A front-end connected to {@code socket} that has sent nothing yet. */
    static HostileDriver attach(Path socket, SandboxHelper.Jail jail) throws Exception {
        Process p = new ProcessBuilder(jail.jailer().toString(), "--uid", Integer.toString(jail.uid()), "--gid",
                Integer.toString(jail.gid()), "--connect", "3=" + socket, "--", NativeTools.memholder().toString(),
                Long.toString(RAM)).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        try {
            String line = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(),
                    StandardCharsets.US_ASCII)).readLine();
            if (line == null) {
                throw new AssertionError("memholder exited with " + p.waitFor());
            }
            String[] words = line.trim().split(" ");
            long hva = Long.parseUnsignedLong(words[0]);
            MemorySegment ram;
            Arena arena = Arena.ofShared();
            try (FileChannel ch = FileChannel.open(Path.of("/proc", Long.toString(p.pid()), "fd", words[1]),
                    StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                ram = ch.map(FileChannel.MapMode.READ_WRITE, 0, RAM, arena);
            } catch (java.io.IOException | RuntimeException e) {
                arena.close();
                throw e;
            }
            return new HostileDriver(p, arena, hva, ram, Posix.takeFd(p.pid(), 3));
        } catch (Exception | AssertionError e) {
            p.destroyForcibly();
            throw e;
        }
    }

    private void setUp() throws SyscallException {
        message(GET_FEATURES, new byte[0], true);
        message(SET_FEATURES, le(8).putLong(F_VERSION_1 | F_PROTOCOL_FEATURES).array(), false);
        message(GET_PROTOCOL_FEATURES, new byte[0], true);
        message(SET_PROTOCOL_FEATURES, le(8).putLong(1 /* MQ */).array(), false);
        message(SET_OWNER, new byte[0], false);
        ByteBuffer table = le(8 + 32).putInt(1).putInt(0).putLong(0).putLong(RAM).putLong(ramHva).putLong(0);
        message(SET_MEM_TABLE, table.array(), false);
        for (int q = 0; q < 2; q++) {
            message(SET_VRING_NUM, le(8).putInt(q).putInt(QSIZE).array(), false);
            ByteBuffer addr = le(40).putInt(q).putInt(0).putLong(hva(desc(q))).putLong(hva(used(q)))
                    .putLong(hva(avail(q))).putLong(0);
            message(SET_VRING_ADDR, addr.array(), false);
            message(SET_VRING_BASE, le(8).putInt(q).putInt(0).array(), false);
            kick[q] = Posix.eventfd();
            call[q] = Posix.eventfd();
            message(SET_VRING_KICK, le(8).putLong(q).array(), false, kick[q]);
            message(SET_VRING_CALL, le(8).putLong(q).array(), false, call[q]);
            message(SET_VRING_ENABLE, le(8).putInt(q).putInt(1).array(), false);
        }
    }

    static ByteBuffer le(int n) {
        return ByteBuffer.allocate(n).order(ByteOrder.LITTLE_ENDIAN);
    }

    static long desc(int q) {
        return q * 0x10000L;
    }

    static long avail(int q) {
        return desc(q) + 0x4000;
    }

    static long used(int q) {
        return desc(q) + 0x8000;
    }

    static long requestGpa(int slot) {
        return (1 << 20) + (long) slot * REQUEST_BYTES;
    }

    static long replyGpa(int slot) {
        return (2 << 20) + (long) slot * REPLY_BYTES;
    }

    long hva(long gpa) {
        return ramHva + gpa;
    }

    /** One vhost-user message whose header says {@code size}, true or not, followed by {@code payload}. */
    void raw(int request, int flags, int size, byte[] payload, int... fds) throws SyscallException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment m = a.allocate(12 + payload.length);
            m.set(ValueLayout.JAVA_INT, 0, request);
            m.set(ValueLayout.JAVA_INT, 4, flags);
            m.set(ValueLayout.JAVA_INT, 8, size);
            MemorySegment.copy(payload, 0, m, ValueLayout.JAVA_BYTE, 12, payload.length);
            Posix.sendWithFds(sock, m, fds);
        }
    }

    /** A well-formed message; waits for the reply when {@code reply}. */
    byte[] message(int request, byte[] payload, boolean reply, int... fds) throws SyscallException {
        raw(request, 1, payload.length, payload, fds);
        if (!reply) {
            return null;
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment h = a.allocate(12);
            readFully(h);
            int size = h.get(ValueLayout.JAVA_INT, 8);
            MemorySegment p = a.allocate(Math.max(1, size));
            readFully(p.asSlice(0, size));
            return p.asSlice(0, size).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private void readFully(MemorySegment into) throws SyscallException {
        long off = 0;
        while (off < into.byteSize()) {
            int n = Syscalls.read(sock, into.asSlice(off), into.byteSize() - off);
            if (n == 0) {
                throw new SyscallException("back-end closed the connection", 104);
            }
            off += n;
        }
    }

    /** Writes descriptor {@code i} of queue {@code q}. */
    void descriptor(int q, int i, long gpa, int len, short flags, int next) {
        long at = desc(q) + 16L * i;
        ram.set(ValueLayout.JAVA_LONG, at, gpa);
        ram.set(ValueLayout.JAVA_INT, at + 8, len);
        ram.set(ValueLayout.JAVA_SHORT, at + 12, flags);
        ram.set(ValueLayout.JAVA_SHORT, at + 14, (short) next);
    }

    /** Puts {@code head} in queue {@code q}'s available ring (index published by {@link #publish}). */
    void offer(int q, int head) {
        ram.set(ValueLayout.JAVA_SHORT, avail(q) + 4 + 2L * (availIdx[q] % QSIZE), (short) head);
        availIdx[q] = (availIdx[q] + 1) & 0xffff;
    }

    /** Publishes the available index (the guest may lie: {@code idx}) and kicks. */
    void publish(int q, int idx) throws SyscallException {
        ram.set(ValueLayout.JAVA_SHORT, avail(q) + 2, (short) idx);
        Posix.signal(kick[q]);
    }

    /** The available index as this driver has offered so far: what a served queue's used index reaches. */
    int offered(int q) {
        return availIdx[q];
    }

    void publish(int q) throws SyscallException {
        publish(q, availIdx[q]);
    }

    /**
     * Sends requests (at most {@link #SLOTS}) on queue {@code q}, each with a reply buffer of
     * {@code capacity} bytes, and waits for all of them.
     *
     * @return the replies in order (null: answered with nothing written), or null when the
     *     back-end did not answer them all within {@code wait}
     */
    List<byte[]> send(int q, List<byte[]> requests, int capacity, long waitMillis) throws SyscallException {
        if (requests.size() > SLOTS || capacity > REPLY_BYTES) {
            throw new IllegalArgumentException(requests.size() + " requests, capacity " + capacity);
        }
        for (int s = 0; s < requests.size(); s++) {
            byte[] r = requests.get(s);
            if (r.length > REQUEST_BYTES) {
                throw new IllegalArgumentException("request of " + r.length);
            }
            MemorySegment.copy(r, 0, ram, ValueLayout.JAVA_BYTE, requestGpa(s), r.length);
            descriptor(q, 2 * s, requestGpa(s), r.length, F_NEXT, 2 * s + 1);
            descriptor(q, 2 * s + 1, replyGpa(s), capacity, F_WRITE, 0);
            offer(q, 2 * s);
        }
        publish(q);
        if (!awaitUsed(q, availIdx[q], waitMillis)) {
            return null;
        }
        byte[][] replies = new byte[requests.size()][];
        for (int k = requests.size(); k > 0; k--) {
            long elem = used(q) + 4 + 8L * (((availIdx[q] - k) & 0xffff) % QSIZE);
            int head = ram.get(ValueLayout.JAVA_INT, elem);
            int len = ram.get(ValueLayout.JAVA_INT, elem + 4);
            int slot = head / 2;
            if (head % 2 != 0 || slot >= requests.size() || len < 0 || len > capacity) {
                throw new AssertionError("used element names head " + head + " with " + len + " bytes");
            }
            replies[slot] = len == 0 ? null : ram.asSlice(replyGpa(slot), len).toArray(ValueLayout.JAVA_BYTE);
        }
        return java.util.Arrays.asList(replies);
    }

    /** One request on the request queue; fails the test when it is not answered within 10 s. */
    byte[] call(byte[] request, int capacity) throws SyscallException {
        List<byte[]> r = send(1, List.of(request), capacity, 10_000);
        if (r == null) {
            throw new AssertionError("the back-end did not answer within 10 s");
        }
        return r.getFirst();
    }

    /** Waits until queue {@code q}'s used index reaches {@code idx}. */
    boolean awaitUsed(int q, int idx, long waitMillis) {
        long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(waitMillis);
        while (Short.toUnsignedInt(ram.get(ValueLayout.JAVA_SHORT, used(q) + 2)) != idx) {
            if (System.nanoTime() > end) {
                return false;
            }
            LockSupport.parkNanos(20_000);
        }
        usedSeen[q] = idx;
        return true;
    }

    // ---- FUSE requests, as a guest kernel writes them ----

    byte[] fuse(int opcode, long nodeid, byte[] body) {
        return fuseAs(0, 0, opcode, nodeid, body);
    }

    /** A request from a guest process of {@code uid} and {@code gid}. */
    byte[] fuseAs(int uid, int gid, int opcode, long nodeid, byte[] body) {
        ByteBuffer b = le(IN_HEADER + body.length);
        b.putInt(IN_HEADER + body.length).putInt(opcode).putLong(unique++).putLong(nodeid).putInt(uid).putInt(gid)
                .putInt(1).putShort((short) 0).putShort((short) 0).put(body);
        return b.array();
    }

    static byte[] name(String n) {
        byte[] s = n.getBytes(StandardCharsets.UTF_8);
        return le(s.length + 1).put(s).array();
    }

    byte[] init() {
        return fuse(INIT, 0, le(64).putInt(7).putInt(38).putInt(1 << 16).array());
    }

    byte[] lookup(long parent, String n) {
        return fuse(LOOKUP, parent, name(n));
    }

    byte[] open(long node) {
        return fuse(OPEN, node, new byte[8]);
    }

    byte[] opendir(long node) {
        return fuse(OPENDIR, node, new byte[8]);
    }

    byte[] read(int opcode, long node, long fh, long offset, int size) {
        return fuse(opcode, node, le(40).putLong(fh).putLong(offset).putInt(size).array());
    }

    byte[] release(int opcode, long node, long fh) {
        return fuse(opcode, node, le(24).putLong(fh).array());
    }

    byte[] forget(long node, long count) {
        return fuse(FORGET, node, le(8).putLong(count).array());
    }

    /** The reply's error: 0 or a negative errno. */
    static int error(byte[] reply) {
        return ByteBuffer.wrap(reply).order(ByteOrder.LITTLE_ENDIAN).getInt(4);
    }

    static ByteBuffer body(byte[] reply) {
        return ByteBuffer.wrap(reply, OUT_HEADER, reply.length - OUT_HEADER).slice()
                .order(ByteOrder.LITTLE_ENDIAN);
    }

    /** A LOOKUP reply's node id. */
    static long nodeOf(byte[] entry) {
        if (error(entry) != 0) {
            throw new AssertionError("lookup failed with " + error(entry));
        }
        return body(entry).getLong(0);
    }

    /** A LOOKUP reply's file type bits (S_IFMT of the attributes' mode). */
    static int typeOf(byte[] entry) {
        return body(entry).getInt(40 + 60) & 0170000;
    }

    /** An OPEN or OPENDIR reply's handle. */
    static long handleOf(byte[] open) {
        if (error(open) != 0) {
            throw new AssertionError("open failed with " + error(open));
        }
        return body(open).getLong(0);
    }

    /** The names of a READDIR reply's entries, and the offset to continue from (last element, as a string). */
    static List<String> names(byte[] reply, long[] next) {
        List<String> names = new ArrayList<>();
        ByteBuffer b = body(reply);
        while (b.remaining() >= 24) {
            b.getLong();
            next[0] = b.getLong();
            int len = b.getInt();
            b.getInt();
            byte[] n = new byte[len];
            b.get(n);
            names.add(new String(n, StandardCharsets.UTF_8));
            b.position((b.position() + 7) & ~7);
        }
        return names;
    }

    private boolean closed;

    /** Closes the connection (the helper sees its front-end go) and ends memholder; idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        Syscalls.closeQuietly(sock);
        holder.destroyForcibly();
        try {
            holder.waitFor();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (int q = 0; q < 2; q++) {
            Syscalls.closeQuietly(kick[q]);
            Syscalls.closeQuietly(call[q]);
        }
        arena.close();
    }
}
