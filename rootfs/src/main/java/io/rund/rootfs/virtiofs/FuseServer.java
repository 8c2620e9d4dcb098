package io.rund.rootfs.virtiofs;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * A read-only FUSE file system serving one host directory, speaking the FUSE wire
 * protocol that virtio-fs carries. Images never change under a running sandbox, so the
 * guest may cache entries and attributes for long; every request that would change the
 * file system gets EROFS.
 *
 * <p>Nodes are host paths: the guest only ever looks a name up in a directory it got from
 * us, names with '/' or the dot names are refused, and files are opened with O_NOFOLLOW,
 * so no request reaches outside the root. Node ids are stable per (device, inode) while
 * the guest holds a lookup on them, and are forgotten when it says so.
 *
 * <p>Not thread-safe: one queue worker calls {@link #handle}.
 */
final class FuseServer implements Virtqueue.Handler {

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
    static final int ENOENT = 2, EIO = 5, EBADF = 9, EACCES = 13, ENOTDIR = 20, EISDIR = 21, EINVAL = 22,
            ERANGE = 34, ENOSYS = 38, EROFS = 30, EPROTO = 71;
    private static final int O_ACCMODE = 3, O_TRUNC = 0x200, O_CREAT = 0x40;
    private static final int FOPEN_KEEP_CACHE = 2;
    private static final int S_IFMT = 0170000, S_IFDIR = 0040000;
    private static final long ENTRY_SECONDS = 3600;
    private static final int MAX_READ = 1 << 20;

    private record Node(long id, Path path, String key, long[] lookups) {}

    private final Path root;
    private final Map<Long, Node> nodes = new HashMap<>();
    private final Map<String, Node> byInode = new HashMap<>();
    private final Map<Long, Object> handles = new HashMap<>();
    private long nextNode = 2;
    private long nextHandle = 1;
    private boolean initialized;

    FuseServer(Path root) {
        this.root = root;
        nodes.put(1L, new Node(1, root, "", new long[] {1}));
    }

    /** Whether the guest has mounted us (FUSE_INIT seen): a template must not hold such a guest. */
    boolean initialized() {
        return initialized;
    }

    int openNodes() {
        return nodes.size() - 1;
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
        try {
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
                case READLINK -> {
                    byte[] target = Files.readSymbolicLink(node(nodeid).path()).toString().getBytes(StandardCharsets.UTF_8);
                    yield reply(target.length).put(target);
                }
                case OPEN -> open(node(nodeid), in.getInt());
                case READ -> read(in.getLong(), in.getLong(), in.getInt(), capacity);
                case RELEASE, RELEASEDIR -> {
                    Object h = handles.remove(in.getLong());
                    if (h instanceof FileChannel ch) {
                        ch.close();
                    }
                    yield reply(0);
                }
                case FLUSH -> reply(0);
                case OPENDIR -> opendir(node(nodeid));
                case READDIR -> readdir(in.getLong(), in.getLong(), in.getInt(), capacity);
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
            byte[] body = out.flip().array();
            int size = OUT_HEADER + out.limit();
            if (size > capacity) {
                return error(unique, ERANGE, capacity);
            }
            ByteBuffer r = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
            r.putInt(size).putInt(0).putLong(unique).put(body, 0, out.limit());
            return r.array();
        } catch (FuseError e) {
            return error(unique, e.errno, capacity);
        } catch (NoSuchFileException e) {
            return error(unique, ENOENT, capacity);
        } catch (AccessDeniedException e) {
            return error(unique, EACCES, capacity);
        } catch (NotDirectoryException e) {
            return error(unique, ENOTDIR, capacity);
        } catch (IOException | RuntimeException e) {
            LOG.log(Level.DEBUG, "virtio-fs {0}: opcode {1} node {2}: {3}", root, opcode, nodeid, e.toString());
            return error(unique, e instanceof java.nio.BufferUnderflowException ? EINVAL : EIO, capacity);
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
        for (Object h : handles.values()) {
            if (h instanceof FileChannel ch) {
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // read-only descriptor; nothing to flush
                }
            }
        }
        handles.clear();
        nodes.keySet().removeIf(id -> id != 1L);
        byInode.clear();
    }

    private static String name(ByteBuffer in) throws FuseError {
        int end = in.position();
        while (end < in.limit() && in.get(end) != 0) {
            end++;
        }
        String name = new String(in.array(), in.position(), end - in.position(), StandardCharsets.UTF_8);
        if (end == in.limit() || name.isEmpty() || name.length() > 255 || name.equals(".") || name.equals("..")
                || name.indexOf('/') >= 0) {
            throw new FuseError(name.isEmpty() || end == in.limit() ? EINVAL : ENOENT);
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

    private static Map<String, Object> stat(Path p) throws IOException {
        return Files.readAttributes(p, "unix:*", LinkOption.NOFOLLOW_LINKS);
    }

    private ByteBuffer lookup(long parent, String name) throws FuseError, IOException {
        Node dir = node(parent);
        Path path = dir.path().resolve(name);
        Map<String, Object> a = stat(path);
        String key = a.get("dev") + ":" + a.get("ino");
        Node n = byInode.get(key);
        if (n == null) {
            n = new Node(nextNode++, path, key, new long[] {0});
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

    private ByteBuffer attrOut(Node n) throws IOException {
        ByteBuffer out = reply(104);
        // The share's own root gains and loses directories as containers come and go.
        long valid = n.id() == 1 ? 1 : ENTRY_SECONDS;
        out.putLong(valid).putInt(0).putInt(0);
        putAttr(out, stat(n.path()));
        return out;
    }

    /** struct fuse_attr, 88 bytes. */
    private static void putAttr(ByteBuffer out, Map<String, Object> a) {
        long size = (Long) a.get("size");
        FileTime atime = (FileTime) a.get("lastAccessTime");
        FileTime mtime = (FileTime) a.get("lastModifiedTime");
        FileTime ctime = (FileTime) a.get("ctime");
        out.putLong((Long) a.get("ino")).putLong(size).putLong((size + 511) / 512)
                .putLong(atime.to(TimeUnit.SECONDS)).putLong(mtime.to(TimeUnit.SECONDS)).putLong(ctime.to(TimeUnit.SECONDS))
                .putInt(nanos(atime)).putInt(nanos(mtime)).putInt(nanos(ctime))
                .putInt((Integer) a.get("mode")).putInt((Integer) a.get("nlink")).putInt((Integer) a.get("uid"))
                .putInt((Integer) a.get("gid")).putInt((int) (long) (Long) a.get("rdev")).putInt(4096).putInt(0);
    }

    private static int nanos(FileTime t) {
        return (int) (t.to(TimeUnit.NANOSECONDS) % 1_000_000_000L);
    }

    private ByteBuffer open(Node n, int flags) throws FuseError, IOException {
        if ((flags & O_ACCMODE) != 0 || (flags & (O_TRUNC | O_CREAT)) != 0) {
            throw new FuseError(EROFS);
        }
        if (Files.isDirectory(n.path(), LinkOption.NOFOLLOW_LINKS)) {
            throw new FuseError(EISDIR);
        }
        FileChannel ch = FileChannel.open(n.path(), StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS);
        long fh = nextHandle++;
        handles.put(fh, ch);
        return reply(16).putLong(fh).putInt(FOPEN_KEEP_CACHE).putInt(0);
    }

    private ByteBuffer read(long fh, long offset, int size, int capacity) throws FuseError, IOException {
        if (!(handles.get(fh) instanceof FileChannel ch)) {
            throw new FuseError(EBADF);
        }
        if (offset < 0) {
            throw new FuseError(EINVAL);
        }
        int want = Math.max(0, Math.min(Math.min(size, MAX_READ), capacity - OUT_HEADER));
        ByteBuffer out = reply(want);
        while (out.hasRemaining()) {
            int n = ch.read(out, offset + out.position());
            if (n <= 0) {
                break;
            }
        }
        return out;
    }

    private record Entry(String name, long ino, int type) {}

    private ByteBuffer opendir(Node n) throws IOException, FuseError {
        Map<String, Object> self = stat(n.path());
        if (((Integer) self.get("mode") & S_IFMT) != S_IFDIR) {
            throw new FuseError(ENOTDIR);
        }
        List<Entry> entries = new ArrayList<>();
        entries.add(new Entry(".", (Long) self.get("ino"), 4));
        entries.add(new Entry("..", 1, 4));
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(n.path())) {
            for (Path p : ds) {
                try {
                    Map<String, Object> a = Files.readAttributes(p, "unix:ino,mode", LinkOption.NOFOLLOW_LINKS);
                    entries.add(new Entry(p.getFileName().toString(), (Long) a.get("ino"), ((Integer) a.get("mode") >> 12) & 15));
                } catch (NoSuchFileException gone) {
                    // removed while listing (the share's root): leave it out
                }
            }
        }
        long fh = nextHandle++;
        handles.put(fh, entries);
        return reply(16).putLong(fh).putInt(FOPEN_KEEP_CACHE).putInt(0);
    }

    private ByteBuffer readdir(long fh, long offset, int size, int capacity) throws FuseError {
        if (!(handles.get(fh) instanceof List<?> list)) {
            throw new FuseError(EBADF);
        }
        int room = Math.max(0, Math.min(size, capacity - OUT_HEADER));
        ByteBuffer out = reply(room);
        for (long i = Math.max(0, offset); i < list.size(); i++) {
            Entry e = (Entry) list.get((int) i);
            byte[] name = e.name().getBytes(StandardCharsets.UTF_8);
            int rec = (24 + name.length + 7) & ~7;
            if (out.remaining() < rec) {
                break;
            }
            int start = out.position();
            out.putLong(e.ino()).putLong(i + 1).putInt(name.length).putInt(e.type()).put(name);
            out.position(start + rec);
        }
        return out; // the reply is what was written: handle() sends up to the position
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
