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
 * The few system calls the JDK does not offer, through the FFM API: open(2) with flags,
 * ioctl(2) with an integer argument, unlink(2), close(2). Failures become
 * {@link SyscallException} carrying errno and the call that failed. Thread-safe.
 */
public final class Syscalls {

    public static final int O_RDONLY = 0;
    public static final int O_WRONLY = 1;
    public static final int O_RDWR = 2;
    public static final int O_NONBLOCK = 0x800;
    public static final int O_CREAT = 0x40;
    public static final int O_EXCL = 0x80;
    public static final int O_CLOEXEC = 0x80000;

    public static final long MS_RDONLY = 1;
    public static final long MS_NOSUID = 2;
    public static final long MS_NODEV = 4;
    public static final long MS_REMOUNT = 32;
    public static final long MS_BIND = 4096;
    public static final long MS_REC = 16384;
    public static final long MS_PRIVATE = 1 << 18;
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
    private static final StructLayout STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CAPTURE = Linker.Option.captureCallState("errno");
    private static final MethodHandle OPEN = handle("open",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT),
            CAPTURE, Linker.Option.firstVariadicArg(2));
    private static final MethodHandle IOCTL = handle("ioctl",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG),
            CAPTURE, Linker.Option.firstVariadicArg(2));
    private static final MethodHandle UNLINK = handle("unlink",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS), CAPTURE);
    private static final MethodHandle MOUNT = handle("mount",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS,
                    ValueLayout.JAVA_LONG, ValueLayout.ADDRESS), CAPTURE);
    private static final MethodHandle UMOUNT2 = handle("umount2",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    private static final MethodHandle MKFIFO = handle("mkfifo",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    private static final MethodHandle RENAMEAT2 = handle("renameat2",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT,
                    ValueLayout.ADDRESS, ValueLayout.JAVA_INT), CAPTURE);
    private static final MethodHandle CLOSE = handle("close",
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT), CAPTURE);
    private static final MethodHandle STRERROR = handle("strerror",
            FunctionDescriptor.of(ValueLayout.ADDRESS.withTargetLayout(MemoryLayout.sequenceLayout(256, ValueLayout.JAVA_BYTE)),
                    ValueLayout.JAVA_INT));

    private Syscalls() {}

    private static MethodHandle handle(String name, FunctionDescriptor fd, Linker.Option... options) {
        return LINKER.downcallHandle(LINKER.defaultLookup().find(name).orElseThrow(), fd, options);
    }

    public static int open(Path path, int flags, int mode) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: open(2) reads the NUL-terminated path, which lives in this arena until the call returns.
            int fd = (int) OPEN.invokeExact(state, arena.allocateFrom(path.toString()), flags, mode);
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
            int r = (int) IOCTL.invokeExact(state, fd, request, arg);
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
            if ((int) UNLINK.invokeExact(state, arena.allocateFrom(path.toString())) < 0) {
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
            if ((int) MKFIFO.invokeExact(state, arena.allocateFrom(path.toString()), mode) < 0) {
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
            int r = (int) MOUNT.invokeExact(state, str(arena, source), arena.allocateFrom(target.toString()),
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

    public static void umount2(Path target, int flags) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: the path is a NUL-terminated string in this arena for the duration of the call.
            if ((int) UMOUNT2.invokeExact(state, arena.allocateFrom(target.toString()), flags) < 0) {
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
            if ((int) RENAMEAT2.invokeExact(state, AT_FDCWD, arena.allocateFrom(from.toString()), AT_FDCWD,
                    arena.allocateFrom(to.toString()), RENAME_NOREPLACE) < 0) {
                throw new SyscallException("renameat2(" + from + ", " + to + ", RENAME_NOREPLACE)", (int) ERRNO.get(state, 0L));
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("renameat2 downcall", t);
        }
    }

    private static MemorySegment str(Arena arena, String s) {
        return s == null ? MemorySegment.NULL : arena.allocateFrom(s);
    }

    public static void close(int fd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: closes a descriptor this process opened; callers close each once.
            if ((int) CLOSE.invokeExact(state, fd) < 0) {
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
            MemorySegment s = (MemorySegment) STRERROR.invokeExact(errno);
            return s.getString(0);
        } catch (Throwable t) {
            return "errno " + errno;
        }
    }
}
