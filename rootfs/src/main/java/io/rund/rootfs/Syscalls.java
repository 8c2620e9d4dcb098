package io.rund.rootfs;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.file.Path;

/**
 * The few system calls the JDK does not offer, through the FFM API, the daemon's one FFM
 * layer: open(2) with flags, ioctl(2) (FICLONE), unlink(2), mkfifo(3), mount(2), umount2(2),
 * open_tree/mount_setattr/move_mount (a bind read-only from its first moment), renameat2(2),
 * fstatat(2), read(2), close(2), pidfd_open(2) with poll(2) (waiting for a process that is
 * not this one's child). Failures become {@link SyscallException} carrying errno and
 * the call that failed. Thread-safe.
 */
public final class Syscalls {

    public static final int O_RDONLY = 0;
    public static final int O_WRONLY = 1;
    public static final int O_RDWR = 2;
    public static final int O_NONBLOCK = 0x800;
    public static final int O_CREAT = 0x40;
    public static final int O_EXCL = 0x80;
    public static final int O_CLOEXEC = 0x80000;
    public static final int O_PATH = 0x200000;
    public static final int O_DIRECTORY = 0x10000;
    public static final int O_NOFOLLOW = 0x20000;
    public static final int S_IFMT = 0170000, S_IFREG = 0100000, S_IFDIR = 0040000, S_IFLNK = 0120000;

    public static final long MS_RDONLY = 1;
    public static final long MS_NOSUID = 2;
    public static final long MS_NODEV = 4;
    public static final long MS_REMOUNT = 32;
    public static final long MS_BIND = 4096;
    public static final long MS_REC = 16384;
    public static final long MS_PRIVATE = 1 << 18;
    public static final long MS_SLAVE = 1 << 19;
    public static final long MS_SHARED = 1 << 20;
    public static final long MS_NOEXEC = 8;
    public static final int MNT_DETACH = 2;
    public static final int EINVAL = 22;
    public static final int ENOENT = 2;
    public static final int EEXIST = 17;
    private static final int AT_FDCWD = -100;
    private static final int RENAME_NOREPLACE = 1;

    /** A system call failed with errno. */
    public static final class SyscallException extends Exception {
        private static final long serialVersionUID = 1L;
        private final int errno;

        public SyscallException(String call, int errno) {
            super(call + " failed with error(" + errno + "): " + strerror(errno));
            this.errno = errno;
        }

        public int errno() {
            return errno;
        }
    }

    private static final Linker LINKER = Linker.nativeLinker();
    // Each downcall handle is made on its first use, in a holder class of its own: making one
    // costs milliseconds in a JVM that has just started, and a restarted daemon needs few.
    private static final StructLayout STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CAPTURE = Linker.Option.captureCallState("errno");
    private static final class Open {
        static final MethodHandle H = handle("open",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT),
                CAPTURE, Linker.Option.firstVariadicArg(2));
    }
    private static final class Ioctl {
        static final MethodHandle H = handle("ioctl",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG),
                CAPTURE, Linker.Option.firstVariadicArg(2));
    }
    private static final class Unlink {
        static final MethodHandle H = handle("unlink",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS), CAPTURE);
    }
    private static final class Mount {
        static final MethodHandle H = handle("mount",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS,
                        ValueLayout.JAVA_LONG, ValueLayout.ADDRESS), CAPTURE);
    }
    private static final class Umount2 {
        static final MethodHandle H = handle("umount2",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    }
    private static final class Mkfifo {
        static final MethodHandle H = handle("mkfifo",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    }
    private static final class Renameat2 {
        static final MethodHandle H = handle("renameat2",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    }
    private static final class Fstatat {
        static final MethodHandle H = handle("fstatat",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS,
                        ValueLayout.JAVA_INT), CAPTURE);
    }
    private static final class Read {
        static final MethodHandle H = handle("read",
                FunctionDescriptor.of(ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG),
                CAPTURE);
    }
    private static final class OpenTree {
        static final MethodHandle H = handle("open_tree",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT),
                CAPTURE);
    }
    private static final class MountSetattr {
        static final MethodHandle H = handle("mount_setattr",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_LONG), CAPTURE);
    }
    private static final class MoveMount {
        static final MethodHandle H = handle("move_mount",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    }
    private static final int OPEN_TREE_CLONE = 1;
    private static final int AT_RECURSIVE = 0x8000;
    private static final int MOVE_MOUNT_F_EMPTY_PATH = 4;
    /** MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV. */
    private static final long MOUNT_ATTR_NOSUID_NODEV = 2 | 4;
    private static final long MOUNT_ATTR_RO_NOSUID_NODEV = 1 | MOUNT_ATTR_NOSUID_NODEV;
    private static final int AT_SYMLINK_NOFOLLOW = 0x100;
    private static final int AT_EMPTY_PATH = 0x1000;
    /** struct stat on x86_64. */
    private static final long STAT_SIZE = 144;
    private static final class Close {
        static final MethodHandle H = handle("close",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT), CAPTURE);
    }
    private static final class Strerror {
        static final MethodHandle H = handle("strerror",
                FunctionDescriptor.of(ValueLayout.ADDRESS.withTargetLayout(MemoryLayout.sequenceLayout(256, ValueLayout.JAVA_BYTE)),
                        ValueLayout.JAVA_INT));
    }

    private Syscalls() {}

    /** pidfd_open(2) and poll(2), made on first use: most daemons never wait for a stranger's exit. */
    private static final class Pidfd {
        static final long SYS_PIDFD_OPEN = 434; // x86_64
        static final MethodHandle SYSCALL = handle("syscall",
                FunctionDescriptor.of(ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT),
                CAPTURE, Linker.Option.firstVariadicArg(1));
        static final MethodHandle POLL = handle("poll",
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT),
                CAPTURE);
        static final int ESRCH = 3;
        static final int EINTR = 4;
        static final short POLLIN = 1;
    }

    /**
     * SIGKILLs {@code p} and waits up to {@code bound} for it to be gone ({@link #awaitExit});
     * false if it is not, or cannot be waited for.
     */
    public static boolean killAndAwait(ProcessHandle p, java.time.Duration bound) {
        p.destroyForcibly();
        try {
            return awaitExit(p.pid(), bound);
        } catch (SyscallException e) {
            return false;
        }
    }

    /**
     * Waits up to {@code bound} for process {@code pid} to end, whoever its parent: true once
     * it has (or never was), false when it still runs. The JDK's {@code onExit} of a process
     * that is not this one's child polls with a growing sleep (seconds, for a QEMU a dead
     * daemon left); a pidfd becomes readable the moment the process exits.
     */
    public static boolean awaitExit(long pid, java.time.Duration bound) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: pidfd_open takes a pid and flags, no memory; the descriptor is closed below.
            int fd = (int) (long) Pidfd.SYSCALL.invokeExact(state, Pidfd.SYS_PIDFD_OPEN, (int) pid, 0);
            if (fd < 0) {
                int errno = (int) ERRNO.get(state, 0L);
                if (errno == Pidfd.ESRCH) {
                    return true;
                }
                throw new SyscallException("pidfd_open(" + pid + ")", errno);
            }
            try {
                // struct pollfd { int fd; short events; short revents; }
                MemorySegment pfd = arena.allocate(8, 4);
                pfd.set(ValueLayout.JAVA_INT, 0, fd);
                pfd.set(ValueLayout.JAVA_SHORT, 4, Pidfd.POLLIN);
                long end = System.nanoTime() + bound.toNanos();
                while (true) {
                    int left = (int) Math.max(0, Math.min(Integer.MAX_VALUE, (end - System.nanoTime()) / 1_000_000));
                    // SAFETY: poll(2) reads and writes the one pollfd in this arena, alive until the call returns.
                    int n = (int) Pidfd.POLL.invokeExact(state, pfd, 1L, left);
                    if (n > 0) {
                        return true; // exited: what it held is released; its reaping is its parent's affair
                    }
                    if (n == 0) {
                        return false;
                    }
                    int errno = (int) ERRNO.get(state, 0L);
                    if (errno != Pidfd.EINTR) {
                        throw new SyscallException("poll(pidfd of " + pid + ")", errno);
                    }
                }
            } finally {
                closeQuietly(fd);
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("pidfd downcall", t);
        }
    }

    private static MethodHandle handle(String name, FunctionDescriptor fd, Linker.Option... options) {
        return LINKER.downcallHandle(LINKER.defaultLookup().find(name).orElseThrow(), fd, options);
    }

    public static int open(Path path, int flags, int mode) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: open(2) reads the NUL-terminated path, which lives in this arena until the call returns.
            int fd = (int) Open.H.invokeExact(state, arena.allocateFrom(path.toString()), flags, mode);
            if (fd < 0) {
                throw new SyscallException("open(" + path + ")", (int) ERRNO.get(state, 0L));
            }
            return fd;
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("open downcall", t);
        }
    }

    /** ioctl(fd, request, arg) for requests whose argument is an integer (e.g. FICLONE's fd). */
    public static int ioctl(int fd, long request, long arg) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: the requests used with this method take an integer, never a pointer into our memory.
            int r = (int) Ioctl.H.invokeExact(state, fd, request, arg);
            if (r < 0) {
                throw new SyscallException("ioctl(" + fd + ", 0x" + Long.toHexString(request) + ")",
                        (int) ERRNO.get(state, 0L));
            }
            return r;
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("ioctl downcall", t);
        }
    }

    public static void unlink(Path path) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: unlink(2) reads the NUL-terminated path, which lives in this arena until the call returns.
            if ((int) Unlink.H.invokeExact(state, arena.allocateFrom(path.toString())) < 0) {
                throw new SyscallException("unlink(" + path + ")", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("unlink downcall", t);
        }
    }

    public static void mkfifo(Path path, int mode) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: mkfifo(3) reads the NUL-terminated path, which lives in this arena until the call returns.
            if ((int) Mkfifo.H.invokeExact(state, arena.allocateFrom(path.toString()), mode) < 0) {
                throw new SyscallException("mkfifo(" + path + ")", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("mkfifo downcall", t);
        }
    }

    /** mount(2); null source, type or data are passed as NULL. */
    public static void mount(String source, Path target, String type, long flags, String data) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: every pointer is a NUL-terminated string in this arena, or NULL, for the duration of the call.
            int r = (int) Mount.H.invokeExact(state, str(arena, source), arena.allocateFrom(target.toString()),
                    str(arena, type), flags, str(arena, data));
            if (r < 0) {
                throw new SyscallException("mount(" + source + ", " + target + ", " + type + ")", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("mount downcall", t);
        }
    }

    /**
     * Bind-mounts {@code source} (not what is mounted below it) at {@code target}
     * read-only, nosuid and nodev from its first moment: the copy is made detached
     * (open_tree), made read-only (mount_setattr), then attached (move_mount). A bind made
     * with mount(2) and remounted read-only after would propagate to slave namespaces (a
     * sandbox's helper) while still writable, and stay writable there.
     */
    public static void bindReadOnly(Path source, Path target) throws SyscallException {
        bind(source, target, OPEN_TREE_CLONE | O_CLOEXEC, AT_EMPTY_PATH, MOUNT_ATTR_RO_NOSUID_NODEV, false);
    }

    /**
     * A host directory a container binds: {@link #bindReadOnly(Path, Path)}, with the mounts
     * below {@code source} too when {@code recursive} (each made read-only), and a symlink at
     * {@code source} not followed (the bind fails instead). With {@code followsHost} the copy
     * is a slave of the host's mounts (mounts made below {@code source} later appear in it,
     * as in a runc container's default rslave bind), else private; never their peer, so
     * nothing unmounted in the copy is unmounted on the host.
     */
    public static void bindDirectoryReadOnly(Path source, Path target, boolean recursive, boolean followsHost)
            throws SyscallException {
        bind(source, target, OPEN_TREE_CLONE | O_CLOEXEC | AT_SYMLINK_NOFOLLOW | (recursive ? AT_RECURSIVE : 0),
                AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), MOUNT_ATTR_RO_NOSUID_NODEV, followsHost);
    }

    /**
     * A host directory a container binds read-write: as {@link #bindDirectoryReadOnly}, but
     * writable; nosuid and nodev all the same (what the host sees through it is the
     * sandbox's helper, which executes nothing and opens no device).
     */
    public static void bindDirectoryWritable(Path source, Path target, boolean recursive, boolean followsHost)
            throws SyscallException {
        bind(source, target, OPEN_TREE_CLONE | O_CLOEXEC | AT_SYMLINK_NOFOLLOW | (recursive ? AT_RECURSIVE : 0),
                AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), MOUNT_ATTR_NOSUID_NODEV, followsHost);
    }

    /**
     * Makes {@code dir} a mount of its own (bound onto itself if it is not one), private with
     * everything below it: mounts made and unmounted below it (a daemon's shares) are no peers
     * of the host's, and neither appear in nor vanish from any other mount namespace.
     * Idempotent.
     */
    public static void makePrivateMount(Path dir) throws SyscallException {
        if (!isMountPoint(dir)) {
            mount(dir.toString(), dir, null, MS_BIND, null);
        }
        mount(null, dir, null, MS_PRIVATE | MS_REC, null);
    }

    /** Detaches every mount at {@code dir}, the last first (MNT_DETACH); none is no error. */
    public static void unmountAll(Path dir) throws SyscallException {
        while (isMountPoint(dir)) {
            umount2(dir, MNT_DETACH);
        }
    }

    /** Whether a mount of this mount namespace is at {@code dir} (read from /proc/self/mountinfo). */
    public static boolean isMountPoint(Path dir) {
        String want = dir.toAbsolutePath().normalize().toString();
        try {
            for (String line : java.nio.file.Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
                String[] f = line.split(" ");
                if (f.length > 4 && mountinfoPath(f[4]).equals(want)) {
                    return true;
                }
            }
        } catch (java.io.IOException e) {
            return false;
        }
        return false;
    }

    /** A path field of /proc/self/mountinfo, which writes space, tab, newline and backslash as \ooo, as it was. */
    public static String mountinfoPath(String field) {
        if (field.indexOf('\\') < 0) {
            return field;
        }
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < field.length(); i++) {
            char c = field.charAt(i);
            if (c == '\\' && i + 3 < field.length()) {
                b.append((char) Integer.parseInt(field.substring(i + 1, i + 4), 8));
                i += 3;
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    /**
     * Clones {@code source} detached (open_tree), sets its attributes and its propagation
     * (mount_setattr: a slave of the source's peer group, or private; before it is attached,
     * so not for a moment a peer of the host's mounts), then attaches it (move_mount).
     */
    private static void bind(Path source, Path target, int treeFlags, int attrFlags, long attrSet, boolean slave)
            throws SyscallException {
        int tree = -1;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: the path is a NUL-terminated string in this arena for the duration of the call.
            tree = (int) OpenTree.H.invokeExact(state, AT_FDCWD, arena.allocateFrom(source.toString()), treeFlags);
            if (tree < 0) {
                throw new SyscallException("open_tree(" + source + ")", (int) ERRNO.get(state, 0L));
            }
            // struct mount_attr: attr_set, attr_clr, propagation, userns_fd (u64 each).
            MemorySegment attr = arena.allocate(32, 8);
            attr.set(ValueLayout.JAVA_LONG, 0, attrSet);
            attr.set(ValueLayout.JAVA_LONG, 16, slave ? MS_SLAVE : MS_PRIVATE);
            // SAFETY: attr is a 32-byte struct mount_attr and the empty path is NUL-terminated, both in this arena.
            if ((int) MountSetattr.H.invokeExact(state, tree, arena.allocateFrom(""), attrFlags, attr, 32L) < 0) {
                throw new SyscallException("mount_setattr(" + source + ", " + attrSet + ")", (int) ERRNO.get(state, 0L));
            }
            // SAFETY: both paths are NUL-terminated strings in this arena for the duration of the call.
            if ((int) MoveMount.H.invokeExact(state, tree, arena.allocateFrom(""), AT_FDCWD,
                    arena.allocateFrom(target.toString()), MOVE_MOUNT_F_EMPTY_PATH) < 0) {
                throw new SyscallException("move_mount(" + source + ", " + target + ")", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("bind downcall", t);
        } finally {
            closeQuietly(tree);
        }
    }

    public static void umount2(Path target, int flags) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: the path is a NUL-terminated string in this arena for the duration of the call.
            if ((int) Umount2.H.invokeExact(state, arena.allocateFrom(target.toString()), flags) < 0) {
                throw new SyscallException("umount2(" + target + ")", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("umount2 downcall", t);
        }
    }

    /**
     * Renames {@code from} to {@code to}, failing with EEXIST when {@code to} exists, even
     * as an empty directory (which rename(2) would replace).
     */
    public static void renameNoReplace(Path from, Path to) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: both paths are NUL-terminated strings in this arena for the duration of the call.
            if ((int) Renameat2.H.invokeExact(state, AT_FDCWD, arena.allocateFrom(from.toString()), AT_FDCWD,
                    arena.allocateFrom(to.toString()), RENAME_NOREPLACE) < 0) {
                throw new SyscallException("renameat2(" + from + ", " + to + ", RENAME_NOREPLACE)", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("renameat2 downcall", t);
        }
    }

    /** struct stat: the fields rund reads. */
    public record Stat(long dev, long ino, long nlink, int mode, int uid, int gid, long rdev, long size, long blocks,
            long atime, long atimeNs, long mtime, long mtimeNs, long ctime, long ctimeNs) {
        /** The S_IFMT bits of the mode. */
        public int type() {
            return mode & S_IFMT;
        }
    }

    /** fstatat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW): the inode {@code fd} refers to, O_PATH descriptors included. */
    public static Stat fstat(int fd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment st = arena.allocate(STAT_SIZE, 8);
            // SAFETY: st holds a struct stat (STAT_SIZE bytes) and the empty path is NUL-terminated, both in this arena.
            if ((int) Fstatat.H.invokeExact(state, fd, arena.allocateFrom(""), st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
                throw new SyscallException("fstatat(" + fd + ")", (int) ERRNO.get(state, 0L));
            }
            ValueLayout.OfLong l = ValueLayout.JAVA_LONG;
            ValueLayout.OfInt i = ValueLayout.JAVA_INT;
            return new Stat(st.get(l, 0), st.get(l, 8), st.get(l, 16), st.get(i, 24), st.get(i, 28), st.get(i, 32),
                    st.get(l, 40), st.get(l, 48), st.get(l, 64), st.get(l, 72), st.get(l, 80), st.get(l, 88), st.get(l, 96),
                    st.get(l, 104), st.get(l, 112));
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("fstatat downcall", t);
        }
    }

    /**
     * Opens, with {@code flags}, exactly the inode an O_PATH descriptor refers to (through
     * its /proc/self/fd link), not whatever a path names by now.
     */
    public static int reopen(int pathFd, int flags) throws SyscallException {
        return open(Path.of("/proc/self/fd/" + pathFd), flags | O_CLOEXEC, 0);
    }

    /** read(2) of at most {@code len} bytes into {@code buf}, retrying on EINTR; returns 0 at end of file. */
    public static int read(int fd, MemorySegment buf, long len) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            while (true) {
                // SAFETY: the slice bounds len by buf's size; read writes at most len bytes into it.
                long n = (long) Read.H.invokeExact(state, fd, buf.asSlice(0, len), len);
                if (n >= 0) {
                    return (int) n;
                }
                int errno = (int) ERRNO.get(state, 0L);
                if (errno != 4 /* EINTR */) {
                    throw new SyscallException("read(" + fd + ")", errno);
                }
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("read downcall", t);
        }
    }

    /** What {@link #readNoFollow} found: the file's inode, and its bytes when it is a regular file. */
    public record HostFile(Stat stat, byte[] bytes) {}

    /**
     * Reads a host file that a caller names but does not control, once and by descriptor:
     * the last component is not followed (a symlink reads as a symlink), the inode is
     * checked before it is opened, and only a regular file is opened (without blocking)
     * and read, at most {@code limit} + 1 bytes, so that a larger file shows as such.
     * Anything else comes back with its stat and no bytes.
     */
    public static HostFile readNoFollow(Path path, int limit) throws SyscallException {
        int opath = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
        int fd = -1;
        try {
            Stat st = fstat(opath);
            if (st.type() != S_IFREG) {
                return new HostFile(st, new byte[0]);
            }
            fd = reopen(opath, O_RDONLY | O_NONBLOCK);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment buf = arena.allocate(limit + 1L);
                long got = 0;
                for (int n; got < buf.byteSize() && (n = read(fd, buf.asSlice(got), buf.byteSize() - got)) > 0; ) {
                    got += n;
                }
                return new HostFile(st, buf.asSlice(0, got).toArray(ValueLayout.JAVA_BYTE));
            }
        } finally {
            closeQuietly(fd);
            closeQuietly(opath);
        }
    }

    /** Closes a descriptor this process owns (once); -1 is nothing, and a failed close has nothing to undo. */
    public static void closeQuietly(int fd) {
        if (fd >= 0) {
            try {
                close(fd);
            } catch (SyscallException ignored) {
                // Linux releases the descriptor even when close reports an error
            }
        }
    }

    private static MemorySegment str(Arena arena, String s) {
        return s == null ? MemorySegment.NULL : arena.allocateFrom(s);
    }

    public static void close(int fd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: closes a descriptor this process opened; callers close each once.
            if ((int) Close.H.invokeExact(state, fd) < 0) {
                throw new SyscallException("close(" + fd + ")", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("close downcall", t);
        }
    }

    static String strerror(int errno) {
        try {
            // SAFETY: strerror returns a pointer to a static NUL-terminated string shorter than 256 bytes.
            MemorySegment s = (MemorySegment) Strerror.H.invokeExact(errno);
            return s.getString(0);
        } catch (Throwable t) {
            return "errno " + errno;
        }
    }
}
