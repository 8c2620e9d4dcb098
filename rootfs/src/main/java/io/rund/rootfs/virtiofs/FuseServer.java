package io.rund.rootfs.virtiofs;

import io.rund.rootfs.Syscalls;
import io.rund.rootfs.Syscalls.SyscallException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * A read-only FUSE file system serving one host directory, speaking the FUSE wire
 * protocol that virtio-fs carries. Images never change under a running sandbox, so the
 * guest may cache entries and attributes for long; every request that would change the
 * file system gets EROFS.
 *
 * <p><b>Confinement is the kernel's.</b> The guest is hostile (it may run a kernel of its
 * own making), so no name it sends is trusted to stay inside the share. Every file is
 * reached with openat2(2) from a descriptor of the share's root, with RESOLVE_BENEATH,
 * RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS: a symlink anywhere on the way is refused
 * by the kernel (the guest resolves symlinks itself, from READLINK), and nothing resolves
 * above the root. Mounts below the root are crossed (each image is one). A node is an
 * inode, keyed by (device, inode), with the path beneath the root it was found at; every
 * use re-resolves that path the same way and checks the inode is still the same one
 * (ESTALE otherwise). Nodes hold no descriptor: this back-end runs inside the daemon,
 * whose descriptor table every sandbox shares, so only open files and directories hold
 * one, and those are capped per sandbox. A lookup under a node that is not a directory is
 * ENOTDIR from the kernel; OPEN serves regular files only, checked on the inode before it
 * is opened (a FIFO, device or socket is ENXIO and never opened), and opens without
 * blocking; READLINK reads the link's own target.
 *
 * <p><b>Bounds.</b> At most {@link Limits#nodes} nodes (a guest that never forgets gets
 * ENOMEM) and {@link Limits#handles} open files and directories (EMFILE), each refusal
 * counted in the log; directory listings are read from the directory per READDIR, never
 * held; READ is at most 1 MiB.
 *
 * <p>Not thread-safe: one queue worker calls {@link #handle}.
 */
final class FuseServer implements Virtqueue.Handler, AutoCloseable {

    private static final System.Logger LOG = System.getLogger(FuseServer.class.getName());

    static final int LOOKUP = 1, FORGET = 2, GETATTR = 3, READLINK = 5, OPEN = 14, READ = 15, STATFS = 17,
            RELEASE = 18, FLUSH = 25, INIT = 26, OPENDIR = 27, READDIR = 28, RELEASEDIR = 29, INTERRUPT = 36,
            DESTROY = 38, BATCH_FORGET = 42;
    /** Requests that would change the file system. */
    private static final int[] WRITES = {4 /*SETATTR*/, 6 /*SYMLINK*/, 8 /*MKNOD*/, 9 /*MKDIR*/, 10 /*UNLINK*/,
            11 /*RMDIR*/, 12 /*RENAME*/, 13 /*LINK*/, 16 /*WRITE*/, 21 /*SETXATTR*/, 24 /*REMOVEXATTR*/, 35 /*CREATE*/,
            43 /*FALLOCATE*/, 45 /*RENAME2*/, 47 /*COPY_FILE_RANGE*/, 51 /*TMPFILE*/};
    static final int IN_HEADER = 40;
    static final int OUT_HEADER = 16;
    static final int ENOENT = 2, EIO = 5, ENXIO = 6, EBADF = 9, ENOMEM = 12, EACCES = 13, ENOTDIR = 20, EISDIR = 21,
            EINVAL = 22, EMFILE = 24, ERANGE = 34, ENAMETOOLONG = 36, ENOSYS = 38, EROFS = 30, EPROTO = 71, ESTALE = 116;
    private static final int O_ACCMODE = 3, O_TRUNC = 0x200, O_CREAT = 0x40;
    private static final int FOPEN_KEEP_CACHE = 2;
    private static final long ENTRY_SECONDS = 3600;
    private static final int MAX_READ = 1 << 20;
    private static final int MAX_NAME = 255;
    private static final int MAX_PATH = 4095;
    private static final int MAX_READDIR = 64 << 10;
    private static final int MAX_LINK = 4096;
    /** How every name is resolved: beneath the root, no symlink on the way, no /proc magic. */
    static final long CONFINED = Posix.RESOLVE_BENEATH | Posix.RESOLVE_NO_SYMLINKS | Posix.RESOLVE_NO_MAGICLINKS;
    /**
     * Names travel as bytes: a file name is any bytes but '/' and NUL. ISO-8859-1 maps each
     * byte to one char and back, so a name that is not UTF-8 still reaches the right file.
     */
    static final java.nio.charset.Charset NAMES = StandardCharsets.ISO_8859_1;

    /** Per-sandbox caps: looked-up nodes (memory) and open files and directories (descriptors). */
    record Limits(int nodes, int handles) {
        static final Limits DEFAULT = new Limits(1 << 16, 512);
    }

    /** An inode the guest holds a lookup on; {@code path} is beneath the root, "" for the root itself. */
    private record Node(long id, long dev, long ino, String path, long[] lookups) {
        String key() {
            return dev + ":" + ino;
        }
    }

    /** An open file or directory of the guest's: a descriptor of ours. */
    private record Handle(int fd, boolean dir) {}

    private final Path root;
    private final int rootFd;
    private final Limits limits;
    private final Map<Long, Node> nodes = new HashMap<>();
    private final Map<String, Node> byInode = new HashMap<>();
    private final Map<Long, Handle> handles = new HashMap<>();
    private long nextNode = 2;
    private long nextHandle = 1;
    private boolean initialized;
    private long refusedNodes;
    private long refusedHandles;

    FuseServer(Path root) throws SyscallException {
        this(root, Limits.DEFAULT);
    }

    FuseServer(Path root, Limits limits) throws SyscallException {
        this.root = root;
        this.limits = limits;
        this.rootFd = Syscalls.open(root, Syscalls.O_PATH | Syscalls.O_DIRECTORY | Syscalls.O_CLOEXEC, 0);
        try {
            Syscalls.Stat s = Syscalls.fstat(rootFd);
            nodes.put(1L, new Node(1, s.dev(), s.ino(), "", new long[] {1}));
        } catch (SyscallException e) {
            Posix.closeQuietly(rootFd);
            throw e;
        }
    }

    /** Whether the guest has mounted us (FUSE_INIT seen): a template must not hold such a guest. */
    boolean initialized() {
        return initialized;
    }

    int openNodes() {
        return nodes.size() - 1;
    }

    int openHandles() {
        return handles.size();
    }

    @Override
    public byte[] handle(byte[] request, int capacity) {
        ByteBuffer in = ByteBuffer.wrap(request).order(ByteOrder.LITTLE_ENDIAN);
        if (request.length < IN_HEADER) {
            LOG.log(Level.WARNING, "virtio-fs {0}: request of {1} bytes is shorter than a FUSE header", root, request.length);
            return null;
        }
        int len = in.getInt(0);
        int opcode = in.getInt(4);
        long unique = in.getLong(8);
        long nodeid = in.getLong(16);
        if (Integer.toUnsignedLong(len) != request.length) {
            return error(unique, EINVAL, capacity);
        }
        in.position(IN_HEADER);
        try (Arena arena = Arena.ofConfined()) {
            ByteBuffer out = switch (opcode) {
                case INIT -> init(in);
                case LOOKUP -> lookup(nodeid, name(in));
                case FORGET -> {
                    forget(nodeid, in.getLong());
                    yield null;
                }
                case BATCH_FORGET -> {
                    int count = in.getInt();
                    in.getInt();
                    for (int i = 0; i < count && in.remaining() >= 16; i++) {
                        forget(in.getLong(), in.getLong());
                    }
                    yield null;
                }
                case GETATTR -> attrOut(node(nodeid));
                case READLINK -> readlink(node(nodeid));
                case OPEN -> open(node(nodeid), in.getInt());
                case READ -> read(arena, in.getLong(), in.getLong(), in.getInt(), capacity);
                case RELEASE, RELEASEDIR -> {
                    Handle h = handles.remove(in.getLong());
                    if (h != null) {
                        Posix.closeQuietly(h.fd());
                    }
                    yield reply(0);
                }
                case FLUSH -> reply(0);
                case OPENDIR -> opendir(node(nodeid));
                case READDIR -> readdir(arena, in.getLong(), in.getLong(), in.getInt(), capacity);
                case STATFS -> statfs();
                case INTERRUPT -> null; // every request is answered at once; nothing to interrupt
                case DESTROY -> {
                    reset();
                    yield reply(0);
                }
                default -> throw new FuseError(isWrite(opcode) ? EROFS : ENOSYS);
            };
            if (out == null) {
                return null;
            }
            int size = OUT_HEADER + out.position();
            if (size > capacity) {
                return error(unique, ERANGE, capacity);
            }
            ByteBuffer r = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
            r.putInt(size).putInt(0).putLong(unique).put(out.array(), 0, out.position());
            return r.array();
        } catch (FuseError e) {
            return error(unique, e.errno, capacity);
        } catch (SyscallException e) {
            // The kernel's answer for the guest's request (ENOENT, ENOTDIR, ELOOP, EXDEV, ...).
            return error(unique, e.errno(), capacity);
        } catch (java.nio.BufferUnderflowException e) {
            return error(unique, EINVAL, capacity);
        } catch (IOException | RuntimeException e) {
            LOG.log(Level.DEBUG, "virtio-fs {0}: opcode {1} node {2}: {3}", root, opcode, nodeid, e.toString());
            return error(unique, EIO, capacity);
        }
    }

    private static boolean isWrite(int opcode) {
        for (int w : WRITES) {
            if (w == opcode) {
                return true;
            }
        }
        return false;
    }

    /** A request refused with an errno. */
    private static final class FuseError extends Exception {
        private static final long serialVersionUID = 1L;
        final int errno;

        FuseError(int errno) {
            super(null, null, false, false);
            this.errno = errno;
        }
    }

    private static byte[] error(long unique, int errno, int capacity) {
        if (capacity < OUT_HEADER) {
            return null;
        }
        ByteBuffer r = ByteBuffer.allocate(OUT_HEADER).order(ByteOrder.LITTLE_ENDIAN);
        r.putInt(OUT_HEADER).putInt(-errno).putLong(unique);
        return r.array();
    }

    /** A reply body of at most {@code bodySize} bytes; what is sent is what was put (up to the position). */
    private static ByteBuffer reply(int bodySize) {
        return ByteBuffer.allocate(bodySize).order(ByteOrder.LITTLE_ENDIAN);
    }

    private ByteBuffer init(ByteBuffer in) throws FuseError {
        int major = in.getInt();
        int minor = in.getInt();
        int maxReadahead = in.getInt();
        if (major != 7) {
            LOG.log(Level.WARNING, "virtio-fs {0}: guest speaks FUSE {1}.{2}, not 7.x", root, major, minor);
            throw new FuseError(EPROTO);
        }
        reset();
        initialized = true;
        ByteBuffer out = reply(64);
        out.putInt(7).putInt(Math.min(minor, 31)).putInt(maxReadahead).putInt(0 /* flags: none needed */)
                .putShort((short) 16).putShort((short) 12).putInt(4096 /* max_write: nothing is written */)
                .putInt(1 /* time_gran ns */).putShort((short) 0).putShort((short) 0).putInt(0);
        out.position(64);
        return out;
    }

    private void reset() {
        for (Handle h : handles.values()) {
            Posix.closeQuietly(h.fd());
        }
        handles.clear();
        nodes.keySet().removeIf(id -> id != 1L);
        byInode.clear();
    }

    /** Closes every descriptor: the root's and the guest's open files. */
    @Override
    public void close() {
        reset();
        Posix.closeQuietly(rootFd);
    }

    /** The NUL-terminated name that follows the header: one path component, never "." or "..". */
    private static String name(ByteBuffer in) throws FuseError {
        int start = in.position();
        int end = start;
        while (end < in.limit() && in.get(end) != 0) {
            end++;
        }
        if (end == in.limit() || end == start) {
            throw new FuseError(EINVAL);
        }
        if (end - start > MAX_NAME) {
            throw new FuseError(ENAMETOOLONG);
        }
        String name = new String(in.array(), start, end - start, NAMES);
        if (name.equals(".") || name.equals("..") || name.indexOf('/') >= 0) {
            throw new FuseError(ENOENT);
        }
        return name;
    }

    private Node node(long id) throws FuseError {
        Node n = nodes.get(id);
        if (n == null) {
            throw new FuseError(ENOENT);
        }
        return n;
    }

    /**
     * Opens node {@code n}'s inode with {@code flags} (O_NOFOLLOW always: a symlink node opens
     * as itself), resolving its path from the root's descriptor, confined; the caller closes
     * the descriptor. An inode that is no longer the node's is ESTALE.
     */
    private int resolve(Node n, int flags) throws SyscallException, FuseError {
        int fd = Posix.openat2(rootFd, n.path().isEmpty() ? "." : n.path(), flags | Syscalls.O_NOFOLLOW | Syscalls.O_CLOEXEC,
                CONFINED);
        try {
            Syscalls.Stat s = Syscalls.fstat(fd);
            if (s.dev() != n.dev() || s.ino() != n.ino()) {
                throw new FuseError(ESTALE);
            }
            return fd;
        } catch (SyscallException | FuseError e) {
            Posix.closeQuietly(fd);
            throw e;
        }
    }

    private ByteBuffer lookup(long parent, String name) throws FuseError, SyscallException {
        Node dir = node(parent);
        String path = dir.path().isEmpty() ? name : dir.path() + "/" + name;
        if (path.length() > MAX_PATH) {
            throw new FuseError(ENAMETOOLONG);
        }
        int dirFd = resolve(dir, Syscalls.O_PATH | Syscalls.O_DIRECTORY); // ENOTDIR: not a directory
        Syscalls.Stat a;
        try {
            int fd = Posix.openat2(dirFd, name, Syscalls.O_PATH | Syscalls.O_NOFOLLOW | Syscalls.O_CLOEXEC, CONFINED);
            try {
                a = Syscalls.fstat(fd);
            } finally {
                Posix.closeQuietly(fd);
            }
        } finally {
            Posix.closeQuietly(dirFd);
        }
        String key = a.dev() + ":" + a.ino();
        Node n = byInode.get(key);
        if (n == null) {
            if (nodes.size() > limits.nodes()) {
                refusedNodes++;
                if (refusedNodes == 1 || refusedNodes % 1000 == 0) {
                    LOG.log(Level.WARNING, "virtio-fs {0}: the guest holds {1} nodes, the cap; LOOKUP refused with"
                            + " ENOMEM ({2} so far)", root, limits.nodes(), refusedNodes);
                }
                throw new FuseError(ENOMEM);
            }
            n = new Node(nextNode++, a.dev(), a.ino(), path, new long[] {0});
            nodes.put(n.id(), n);
            byInode.put(key, n);
        }
        n.lookups()[0]++;
        ByteBuffer out = reply(128);
        out.putLong(n.id()).putLong(0).putLong(ENTRY_SECONDS).putLong(ENTRY_SECONDS).putInt(0).putInt(0);
        putAttr(out, a);
        return out;
    }

    private void forget(long id, long count) {
        Node n = nodes.get(id);
        if (n == null || id == 1L) {
            return;
        }
        n.lookups()[0] -= count;
        if (n.lookups()[0] <= 0) {
            nodes.remove(id);
            byInode.remove(n.key());
        }
    }

    private ByteBuffer attrOut(Node n) throws SyscallException, FuseError {
        int fd = resolve(n, Syscalls.O_PATH);
        Syscalls.Stat a;
        try {
            a = Syscalls.fstat(fd);
        } finally {
            Posix.closeQuietly(fd);
        }
        ByteBuffer out = reply(104);
        // The share's own root gains and loses directories as containers come and go.
        long valid = n.id() == 1 ? 1 : ENTRY_SECONDS;
        out.putLong(valid).putInt(0).putInt(0);
        putAttr(out, a);
        return out;
    }

    /** struct fuse_attr, 88 bytes. */
    private static void putAttr(ByteBuffer out, Syscalls.Stat a) {
        out.putLong(a.ino()).putLong(a.size()).putLong(a.blocks())
                .putLong(a.atime()).putLong(a.mtime()).putLong(a.ctime())
                .putInt((int) a.atimeNs()).putInt((int) a.mtimeNs()).putInt((int) a.ctimeNs())
                .putInt(a.mode()).putInt((int) a.nlink()).putInt(a.uid())
                .putInt(a.gid()).putInt((int) a.rdev()).putInt(4096).putInt(0);
    }

    private ByteBuffer readlink(Node n) throws SyscallException, FuseError {
        int fd = resolve(n, Syscalls.O_PATH);
        try {
            byte[] target = Posix.readlink(fd, MAX_LINK);
            return reply(target.length).put(target);
        } finally {
            Posix.closeQuietly(fd);
        }
    }

    /** A descriptor for a new handle, or EMFILE past the cap. */
    private void checkHandleRoom() throws FuseError {
        if (handles.size() >= limits.handles()) {
            refusedHandles++;
            if (refusedHandles == 1 || refusedHandles % 1000 == 0) {
                LOG.log(Level.WARNING, "virtio-fs {0}: the guest holds {1} open files and directories, the cap; OPEN"
                        + " refused with EMFILE ({2} so far)", root, limits.handles(), refusedHandles);
            }
            throw new FuseError(EMFILE);
        }
    }

    private long addHandle(int fd, boolean dir) {
        long fh = nextHandle++;
        handles.put(fh, new Handle(fd, dir));
        return fh;
    }

    private ByteBuffer open(Node n, int flags) throws FuseError, SyscallException {
        if ((flags & O_ACCMODE) != 0 || (flags & (O_TRUNC | O_CREAT)) != 0) {
            throw new FuseError(EROFS);
        }
        checkHandleRoom();
        int path = resolve(n, Syscalls.O_PATH);
        int fd;
        try {
            int type = Syscalls.fstat(path).type();
            if (type == Syscalls.S_IFDIR) {
                throw new FuseError(EISDIR);
            }
            if (type != Syscalls.S_IFREG) {
                throw new FuseError(ENXIO); // FIFOs, devices, sockets and symlinks are never opened here
            }
            // Opens exactly the inode just checked (the O_PATH descriptor's), not whatever a path names now.
            fd = Syscalls.reopen(path, Syscalls.O_RDONLY | Syscalls.O_NONBLOCK);
        } finally {
            Posix.closeQuietly(path);
        }
        return reply(16).putLong(addHandle(fd, false)).putInt(FOPEN_KEEP_CACHE).putInt(0);
    }

    private ByteBuffer read(Arena arena, long fh, long offset, int size, int capacity) throws FuseError, SyscallException {
        Handle h = handles.get(fh);
        if (h == null || h.dir()) {
            throw new FuseError(EBADF);
        }
        if (offset < 0) {
            throw new FuseError(EINVAL);
        }
        int want = Math.max(0, Math.min(Math.min(size, MAX_READ), capacity - OUT_HEADER));
        MemorySegment buf = arena.allocate(Math.max(1, want));
        int got = 0;
        while (got < want) {
            int n = Posix.pread(h.fd(), buf.asSlice(got, want - got), offset + got);
            if (n <= 0) {
                break;
            }
            got += n;
        }
        return reply(got).put(buf.asSlice(0, got).toArray(ValueLayout.JAVA_BYTE));
    }

    private ByteBuffer opendir(Node n) throws SyscallException, FuseError {
        checkHandleRoom();
        int fd = resolve(n, Syscalls.O_RDONLY | Syscalls.O_DIRECTORY); // ENOTDIR: not a directory
        return reply(16).putLong(addHandle(fd, true)).putInt(FOPEN_KEEP_CACHE).putInt(0);
    }

    /**
     * Lists from {@code offset} (0, or the d_off of the last entry the guest got) as many
     * entries as fit: the directory is read per call, so a listing costs no memory between
     * calls, however large the directory.
     */
    private ByteBuffer readdir(Arena arena, long fh, long offset, int size, int capacity) throws FuseError, SyscallException {
        Handle h = handles.get(fh);
        if (h == null || !h.dir()) {
            throw new FuseError(EBADF);
        }
        if (offset < 0) {
            throw new FuseError(EINVAL);
        }
        int room = Math.max(0, Math.min(Math.min(size, MAX_READDIR), capacity - OUT_HEADER));
        ByteBuffer out = reply(room);
        if (room < 32) {
            return out;
        }
        MemorySegment buf = arena.allocate(room, 8);
        int n = Posix.getdents(h.fd(), offset, buf);
        for (int at = 0; at < n; ) {
            // struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name NUL-terminated
            long ino = buf.get(ValueLayout.JAVA_LONG_UNALIGNED, at);
            long off = buf.get(ValueLayout.JAVA_LONG_UNALIGNED, at + 8);
            int reclen = Short.toUnsignedInt(buf.get(ValueLayout.JAVA_SHORT_UNALIGNED, at + 16));
            int type = Byte.toUnsignedInt(buf.get(ValueLayout.JAVA_BYTE, at + 18));
            if (reclen < 20 || at + reclen > n) {
                throw new IllegalStateException("getdents64 record of " + reclen + " bytes at " + at + " of " + n);
            }
            int nameLen = 0;
            while (nameLen < reclen - 19 && buf.get(ValueLayout.JAVA_BYTE, at + 19 + nameLen) != 0) {
                nameLen++;
            }
            int rec = (24 + nameLen + 7) & ~7;
            if (out.remaining() < rec) {
                break; // the next READDIR starts from the last entry sent
            }
            int start = out.position();
            out.putLong(ino).putLong(off).putInt(nameLen).putInt(type)
                    .put(buf.asSlice(at + 19, nameLen).toArray(ValueLayout.JAVA_BYTE));
            out.position(start + rec);
            at += reclen;
        }
        return out;
    }

    private ByteBuffer statfs() throws IOException {
        FileStore fs = Files.getFileStore(root);
        ByteBuffer out = reply(80);
        out.putLong(fs.getTotalSpace() / 4096).putLong(fs.getUnallocatedSpace() / 4096).putLong(fs.getUsableSpace() / 4096)
                .putLong(0).putLong(0).putInt(4096).putInt(255).putInt(4096).putInt(0);
        out.position(80);
        return out;
    }
}
