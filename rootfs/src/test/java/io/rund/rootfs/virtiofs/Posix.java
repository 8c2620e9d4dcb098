package io.rund.rootfs.virtiofs;

import io.rund.rootfs.Syscalls;
import io.rund.rootfs.Syscalls.SyscallException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * The system calls a vhost-user back-end needs and the JDK lacks, through the FFM API:
 * a unix socket that receives file descriptors (SCM_RIGHTS), its peer's pid, eventfds,
 * poll(2), reading and writing another process's memory (process_vm_readv/writev), and
 * the descriptor-relative file calls the share is served with (openat2, readlinkat,
 * pread, getdents64, lseek; fstat is {@link Syscalls#fstat}). Failures become {@link SyscallException} naming
 * the call and errno.
 */
final class Posix {

    static final int AF_UNIX = 1;
    static final int SOCK_STREAM = 1;
    static final int SOCK_CLOEXEC = 0x80000;
    static final int EFD_CLOEXEC = 0x80000;
    static final short POLLIN = 1;
    static final int SHUT_RDWR = 2;
    private static final int SOL_SOCKET = 1;
    private static final int SCM_RIGHTS = 1;
    private static final int SO_PEERCRED = 17;
    private static final int EINTR = 4;
    private static final int EAGAIN = 11;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CAPTURE = Linker.Option.captureCallState("errno");
    private static final ValueLayout.OfInt I = ValueLayout.JAVA_INT;
    private static final ValueLayout.OfLong L = ValueLayout.JAVA_LONG;
    private static final java.lang.foreign.AddressLayout P = ValueLayout.ADDRESS;

    private static final MethodHandle SOCKET = handle("socket", FunctionDescriptor.of(I, I, I, I));
    private static final MethodHandle BIND = handle("bind", FunctionDescriptor.of(I, I, P, I));
    private static final MethodHandle LISTEN = handle("listen", FunctionDescriptor.of(I, I, I));
    private static final MethodHandle ACCEPT4 = handle("accept4", FunctionDescriptor.of(I, I, P, P, I));
    private static final MethodHandle SHUTDOWN = handle("shutdown", FunctionDescriptor.of(I, I, I));
    private static final MethodHandle RECVMSG = handle("recvmsg", FunctionDescriptor.of(L, I, P, I));
    private static final MethodHandle SENDMSG = handle("sendmsg", FunctionDescriptor.of(L, I, P, I));
    private static final MethodHandle CONNECT = handle("connect", FunctionDescriptor.of(I, I, P, I));
    private static final MethodHandle READ = handle("read", FunctionDescriptor.of(L, I, P, L)); // eventfd drain: EAGAIN is "clear"
    private static final MethodHandle WRITE = handle("write", FunctionDescriptor.of(L, I, P, L));
    private static final MethodHandle POLL = handle("poll", FunctionDescriptor.of(I, P, L, I));
    private static final MethodHandle EVENTFD = handle("eventfd", FunctionDescriptor.of(I, I, I));
    private static final MethodHandle GETSOCKOPT = handle("getsockopt", FunctionDescriptor.of(I, I, I, I, P, P));
    private static final MethodHandle PROCESS_VM_READV = handle("process_vm_readv", FunctionDescriptor.of(L, I, P, L, P, L, L));
    private static final MethodHandle PROCESS_VM_WRITEV = handle("process_vm_writev", FunctionDescriptor.of(L, I, P, L, P, L, L));

    private static final MethodHandle SYSCALL4 = LINKER.downcallHandle(LINKER.defaultLookup().find("syscall").orElseThrow(),
            FunctionDescriptor.of(L, L, I, P, P, L), CAPTURE, Linker.Option.firstVariadicArg(1));
    private static final MethodHandle SYSCALL3 = LINKER.downcallHandle(LINKER.defaultLookup().find("syscall").orElseThrow(),
            FunctionDescriptor.of(L, L, I, P, L), CAPTURE, Linker.Option.firstVariadicArg(1));
    private static final MethodHandle READLINKAT = handle("readlinkat", FunctionDescriptor.of(L, I, P, P, L));
    private static final MethodHandle PREAD = handle("pread", FunctionDescriptor.of(L, I, P, L, L));
    private static final MethodHandle LSEEK = handle("lseek", FunctionDescriptor.of(L, I, L, I));
    private static final MethodHandle SYSCALL_III = LINKER.downcallHandle(LINKER.defaultLookup().find("syscall").orElseThrow(),
            FunctionDescriptor.of(L, L, I, I, I), CAPTURE, Linker.Option.firstVariadicArg(1));
    private static final long SYS_PIDFD_OPEN = 434;
    private static final long SYS_PIDFD_GETFD = 438;
    private static final long SYS_OPENAT2 = 437;
    private static final long SYS_GETDENTS64 = 217;

    static final long RESOLVE_NO_XDEV = 0x01, RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_NO_SYMLINKS = 0x04,
            RESOLVE_BENEATH = 0x08;

    /** struct iovec: base pointer, length. */
    static final long IOVEC = 16;

    private Posix() {}

    private static MethodHandle handle(String name, FunctionDescriptor fd) {
        return LINKER.downcallHandle(LINKER.defaultLookup().find(name).orElseThrow(), fd, CAPTURE);
    }

    private static SyscallException fail(String call, MemorySegment state) {
        return new SyscallException(call, (int) ERRNO.get(state, 0L));
    }

    private static RuntimeException downcall(String call, Throwable t) {
        return new IllegalStateException(call + " downcall", t);
    }

    /** A listening AF_UNIX stream socket bound to {@code path} (which must not exist). */
    static int listenUnix(Path path) throws SyscallException {
        return unixSocket(path, true);
    }

    /**
     * A unix stream socket connected to {@code path}: the front-end's side of vhost-user,
     * which the tests play (this back-end itself only listens).
     */
    static int connectUnix(Path path) throws SyscallException {
        return unixSocket(path, false);
    }

    /** An AF_UNIX stream socket at {@code path}: bound and listening, or connected. */
    private static int unixSocket(Path path, boolean listen) throws SyscallException {
        byte[] name = path.toString().getBytes(StandardCharsets.UTF_8);
        if (name.length >= 108) {
            throw new IllegalArgumentException("socket path " + path + " is longer than a unix socket address holds");
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            int fd = (int) SOCKET.invokeExact(state, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                throw fail("socket(AF_UNIX)", state);
            }
            MemorySegment addr = arena.allocate(110);
            addr.set(ValueLayout.JAVA_SHORT, 0, (short) AF_UNIX);
            MemorySegment.copy(name, 0, addr, ValueLayout.JAVA_BYTE, 2, name.length);
            // SAFETY: addr is a sockaddr_un of 110 bytes in this arena, NUL-terminated path (zeroed arena memory).
            boolean failed = listen ? (int) BIND.invokeExact(state, fd, addr, 110) < 0 || (int) LISTEN.invokeExact(state, fd, 1) < 0
                    : (int) CONNECT.invokeExact(state, fd, addr, 110) < 0;
            if (failed) {
                SyscallException e = fail((listen ? "bind/listen(" : "connect(") + path + ")", state);
                closeQuietly(fd);
                throw e;
            }
            return fd;
        } catch (SyscallException | IllegalArgumentException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("socket", t);
        }
    }

    /** Sends all of {@code buf} in one sendmsg with {@code fds} attached (SCM_RIGHTS); a short send is an error. */
    static void sendWithFds(int fd, MemorySegment buf, int... fds) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment iov = arena.allocate(IOVEC, 8);
            iov.set(P, 0, buf);
            iov.set(L, 8, buf.byteSize());
            MemorySegment msg = arena.allocate(56, 8);
            msg.set(P, 16, iov);
            msg.set(L, 24, 1);
            if (fds.length > 0) {
                long len = 16 + 4L * fds.length;
                MemorySegment control = arena.allocate((len + 7) & ~7L, 8);
                control.set(L, 0, len);
                control.set(I, 8, SOL_SOCKET);
                control.set(I, 12, SCM_RIGHTS);
                for (int i = 0; i < fds.length; i++) {
                    control.set(I, 16 + 4L * i, fds[i]);
                }
                msg.set(P, 32, control);
                msg.set(L, 40, control.byteSize());
            }
            // SAFETY: msg, iov and control live in this arena; buf is the caller's, of byteSize() bytes.
            long n = (long) SENDMSG.invokeExact(state, fd, msg, 0);
            if (n != buf.byteSize()) {
                throw n < 0 ? fail("sendmsg", state) : new SyscallException("sendmsg sent " + n + " of " + buf.byteSize(), 5);
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("sendmsg", t);
        }
    }

    static int accept(int listenFd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            while (true) {
                // SAFETY: no address is asked for; both pointers are NULL.
                int fd = (int) ACCEPT4.invokeExact(state, listenFd, MemorySegment.NULL, MemorySegment.NULL, SOCK_CLOEXEC);
                if (fd >= 0) {
                    return fd;
                }
                if ((int) ERRNO.get(state, 0L) != EINTR) {
                    throw fail("accept4", state);
                }
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("accept4", t);
        }
    }

    /** The pid of the process at the other end of a connected unix socket. */
    static int peerPid(int fd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment cred = arena.allocate(12);
            MemorySegment len = arena.allocate(I);
            len.set(I, 0, 12);
            // SAFETY: struct ucred is 12 bytes; len holds its size; both in this arena.
            if ((int) GETSOCKOPT.invokeExact(state, fd, SOL_SOCKET, SO_PEERCRED, cred, len) < 0) {
                throw fail("getsockopt(SO_PEERCRED)", state);
            }
            return cred.get(I, 0);
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("getsockopt", t);
        }
    }

    static void shutdown(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            // SAFETY: plain integer arguments.
            int ignored = (int) SHUTDOWN.invokeExact(arena.allocate(STATE), fd, SHUT_RDWR);
        } catch (Throwable t) {
            throw downcall("shutdown", t);
        }
    }

    /**
     * Reads up to {@code buf.byteSize()} bytes with recvmsg, collecting the descriptors
     * that came with them into {@code fds} (at most fds.length; the count is returned in
     * {@code fdCount[0]}).
     *
     * @return bytes read; 0 at end of stream
     */
    static int recvWithFds(int fd, MemorySegment buf, int[] fds, int[] fdCount) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment iov = arena.allocate(IOVEC, 8);
            iov.set(P, 0, buf);
            iov.set(L, 8, buf.byteSize());
            MemorySegment control = arena.allocate(256, 8);
            MemorySegment msg = arena.allocate(56, 8);
            msg.set(P, 16, iov);
            msg.set(L, 24, 1);
            msg.set(P, 32, control);
            msg.set(L, 40, control.byteSize());
            long n;
            do {
                // SAFETY: msg, iov and control live in this arena; buf is the caller's, of byteSize() bytes.
                n = (long) RECVMSG.invokeExact(state, fd, msg, 0);
            } while (n < 0 && (int) ERRNO.get(state, 0L) == EINTR);
            if (n < 0) {
                throw fail("recvmsg", state);
            }
            fdCount[0] = 0;
            long controlLen = msg.get(L, 40);
            for (long off = 0; off + 16 <= controlLen; ) {
                long len = control.get(L, off);
                if (len < 16) {
                    break;
                }
                if (control.get(I, off + 8) == SOL_SOCKET && control.get(I, off + 12) == SCM_RIGHTS) {
                    for (long p = off + 16; p + 4 <= off + len; p += 4) {
                        int received = control.get(I, p);
                        if (fdCount[0] < fds.length) {
                            fds[fdCount[0]++] = received;
                        } else {
                            closeQuietly(received); // more than any message carries: refuse to leak it
                        }
                    }
                }
                off += (len + 7) & ~7L;
            }
            return (int) n;
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("recvmsg", t);
        }
    }

    /** read(2) into a native buffer, retrying on EINTR; returns 0 at end of file. */
    static int read(int fd, MemorySegment buf, long len) throws SyscallException {
        return Syscalls.read(fd, buf, len);
    }

    /** Writes all of {@code buf}. */
    static void writeAll(int fd, MemorySegment buf) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            long off = 0;
            while (off < buf.byteSize()) {
                // SAFETY: the slice is within buf.
                long n = (long) WRITE.invokeExact(state, fd, buf.asSlice(off), buf.byteSize() - off);
                if (n < 0) {
                    int errno = (int) ERRNO.get(state, 0L);
                    if (errno == EINTR) {
                        continue;
                    }
                    throw new SyscallException("write(" + fd + ")", errno);
                }
                off += n;
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("write", t);
        }
    }

    /** Adds 1 to an eventfd's counter. */
    static void signal(int eventFd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment one = arena.allocate(L);
            one.set(L, 0, 1L);
            writeAll(eventFd, one);
        }
    }

    /** Reads and clears an eventfd's counter (non-blocking descriptors return 0 when it is clear). */
    static long drain(int eventFd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment v = arena.allocate(L);
            // SAFETY: v holds the eventfd's 8-byte counter.
            long n = (long) READ.invokeExact(state, eventFd, v, 8L);
            if (n < 0) {
                int errno = (int) ERRNO.get(state, 0L);
                if (errno == EAGAIN || errno == EINTR) {
                    return 0;
                }
                throw new SyscallException("read(eventfd " + eventFd + ")", errno);
            }
            return v.get(L, 0);
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("read", t);
        }
    }

    /**
     * A copy of descriptor {@code target} of process {@code pid} (pidfd_open, pidfd_getfd):
     * how a test takes the connection a process made as another uid.
     */
    static int takeFd(long pid, int target) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: plain integer arguments.
            int pidfd = (int) (long) SYSCALL_III.invokeExact(state, SYS_PIDFD_OPEN, (int) pid, 0, 0);
            if (pidfd < 0) {
                throw fail("pidfd_open(" + pid + ")", state);
            }
            try {
                // SAFETY: plain integer arguments.
                int fd = (int) (long) SYSCALL_III.invokeExact(state, SYS_PIDFD_GETFD, pidfd, target, 0);
                if (fd < 0) {
                    throw fail("pidfd_getfd(" + pid + ", " + target + ")", state);
                }
                return fd;
            } finally {
                closeQuietly(pidfd);
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("pidfd_getfd", t);
        }
    }

    static int eventfd() throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: plain integer arguments.
            int fd = (int) EVENTFD.invokeExact(state, 0, EFD_CLOEXEC);
            if (fd < 0) {
                throw fail("eventfd", state);
            }
            return fd;
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("eventfd", t);
        }
    }

    /**
     * Waits until one of {@code fds} is readable.
     *
     * @return for each fd, whether it is readable (or hung up)
     */
    static boolean[] pollIn(int[] fds) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment pfds = arena.allocate(8L * fds.length, 8);
            for (int i = 0; i < fds.length; i++) {
                pfds.set(I, 8L * i, fds[i]);
                pfds.set(ValueLayout.JAVA_SHORT, 8L * i + 4, POLLIN);
            }
            int n;
            do {
                // SAFETY: pfds is an array of fds.length struct pollfd in this arena.
                n = (int) POLL.invokeExact(state, pfds, (long) fds.length, -1);
            } while (n < 0 && (int) ERRNO.get(state, 0L) == EINTR);
            if (n < 0) {
                throw fail("poll", state);
            }
            boolean[] ready = new boolean[fds.length];
            for (int i = 0; i < fds.length; i++) {
                ready[i] = pfds.get(ValueLayout.JAVA_SHORT, 8L * i + 6) != 0;
            }
            return ready;
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("poll", t);
        }
    }

    /**
     * Copies between {@code local} and the address range [remote, remote+local.byteSize())
     * of process {@code pid}: from it ({@code write} false) or to it.
     */
    static void transfer(int pid, MemorySegment local, long remote, boolean write) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment liov = arena.allocate(IOVEC, 8);
            MemorySegment riov = arena.allocate(IOVEC, 8);
            long done = 0;
            long len = local.byteSize();
            while (done < len) {
                liov.set(P, 0, local.asSlice(done));
                liov.set(L, 8, len - done);
                riov.set(L, 0, remote + done);
                riov.set(L, 8, len - done);
                // SAFETY: the local iovec covers the rest of `local`; the remote one is the peer's memory, checked by the kernel.
                long n = write ? (long) PROCESS_VM_WRITEV.invokeExact(state, pid, liov, 1L, riov, 1L, 0L)
                        : (long) PROCESS_VM_READV.invokeExact(state, pid, liov, 1L, riov, 1L, 0L);
                if (n <= 0) {
                    throw n == 0 ? new SyscallException((write ? "process_vm_writev" : "process_vm_readv") + "(pid " + pid
                            + ", 0x" + Long.toHexString(remote + done) + ") made no progress", 5)
                            : fail((write ? "process_vm_writev" : "process_vm_readv") + "(pid " + pid + ", 0x"
                                    + Long.toHexString(remote + done) + ", " + (len - done) + ")", state);
                }
                done += n;
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("process_vm", t);
        }
    }

    /**
     * openat2(2): opens {@code name} relative to {@code dirFd} with {@code flags} and the
     * RESOLVE_* bits in {@code resolve}, retrying EAGAIN (which RESOLVE_BENEATH returns when
     * a rename raced the walk) a few times. Each char of {@code name} is one byte (ISO-8859-1):
     * file names are bytes, not text.
     */
    static int openat2(int dirFd, String name, int flags, long resolve) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment path = arena.allocateFrom(name, StandardCharsets.ISO_8859_1);
            MemorySegment how = arena.allocate(24, 8); // struct open_how: flags, mode, resolve
            how.set(L, 0, Integer.toUnsignedLong(flags));
            how.set(L, 16, resolve);
            for (int attempt = 0; ; attempt++) {
                // SAFETY: path is NUL-terminated and how is a 24-byte open_how, both in this arena.
                long fd = (long) SYSCALL4.invokeExact(state, SYS_OPENAT2, dirFd, path, how, 24L);
                if (fd >= 0) {
                    return (int) fd;
                }
                int errno = (int) ERRNO.get(state, 0L);
                if ((errno != EAGAIN && errno != EINTR) || attempt == 8) {
                    throw new SyscallException("openat2(" + dirFd + ")", errno);
                }
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("openat2", t);
        }
    }

    /** readlinkat(fd, ""): the target of the symlink an O_PATH {@code fd} refers to, at most {@code max} bytes. */
    static byte[] readlink(int fd, int max) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            MemorySegment buf = arena.allocate(max);
            // SAFETY: buf holds max bytes; readlinkat writes at most that many and no NUL.
            long n = (long) READLINKAT.invokeExact(state, fd, arena.allocateFrom(""), buf, (long) max);
            if (n < 0) {
                throw fail("readlinkat(" + fd + ")", state);
            }
            return buf.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE);
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("readlinkat", t);
        }
    }

    /** pread(2) into {@code buf}, retrying on EINTR; returns the bytes read, 0 at end of file. */
    static int pread(int fd, MemorySegment buf, long offset) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            while (true) {
                // SAFETY: buf is a native segment of the caller's; pread writes at most its size.
                long n = (long) PREAD.invokeExact(state, fd, buf, buf.byteSize(), offset);
                if (n >= 0) {
                    return (int) n;
                }
                if ((int) ERRNO.get(state, 0L) != EINTR) {
                    throw fail("pread(" + fd + ")", state);
                }
            }
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("pread", t);
        }
    }

    /**
     * Positions directory {@code fd} at {@code offset} (a d_off cookie from an earlier
     * entry, or 0) and reads linux_dirent64 records into {@code buf}; returns the bytes read.
     */
    static int getdents(int fd, long offset, MemorySegment buf) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            // SAFETY: integer arguments.
            if ((long) LSEEK.invokeExact(state, fd, offset, 0 /* SEEK_SET */) < 0) {
                throw fail("lseek(" + fd + ", " + offset + ")", state);
            }
            // SAFETY: buf is a native segment of the caller's; getdents64 writes at most its size.
            long n = (long) SYSCALL3.invokeExact(state, SYS_GETDENTS64, fd, buf, buf.byteSize());
            if (n < 0) {
                throw fail("getdents64(" + fd + ")", state);
            }
            return (int) n;
        } catch (SyscallException e) {
            throw e;
        } catch (Throwable t) {
            throw downcall("getdents64", t);
        }
    }

    /** Closes a descriptor this process owns (once); -1 is nothing, and a failed close has nothing to undo. */
    static void closeQuietly(int fd) {
        Syscalls.closeQuietly(fd);
    }
}
