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

/**
 * The system calls {@link HostileDriver} needs to play a vhost-user front-end and the JDK
 * lacks, through the FFM API: sending a message with descriptors (SCM_RIGHTS), eventfds,
 * and taking another process's descriptor (pidfd_getfd). Failures become
 * {@link SyscallException} naming the call and errno. (rund's own FFM layer is
 * {@link Syscalls}; this one is the tests'.)
 */
final class Posix {

    static final int EFD_CLOEXEC = 0x80000;
    private static final int SOL_SOCKET = 1;
    private static final int SCM_RIGHTS = 1;
    private static final int EINTR = 4;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CAPTURE = Linker.Option.captureCallState("errno");
    private static final ValueLayout.OfInt I = ValueLayout.JAVA_INT;
    private static final ValueLayout.OfLong L = ValueLayout.JAVA_LONG;
    private static final java.lang.foreign.AddressLayout P = ValueLayout.ADDRESS;

    private static final MethodHandle SENDMSG = handle("sendmsg", FunctionDescriptor.of(L, I, P, I));
    private static final MethodHandle WRITE = handle("write", FunctionDescriptor.of(L, I, P, L));
    private static final MethodHandle EVENTFD = handle("eventfd", FunctionDescriptor.of(I, I, I));

    private static final MethodHandle SYSCALL_III = LINKER.downcallHandle(LINKER.defaultLookup().find("syscall").orElseThrow(),
            FunctionDescriptor.of(L, L, I, I, I), CAPTURE, Linker.Option.firstVariadicArg(1));
    private static final long SYS_PIDFD_OPEN = 434;
    private static final long SYS_PIDFD_GETFD = 438;

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

    /** Adds 1 to an eventfd's counter. */
    static void signal(int eventFd) throws SyscallException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment one = arena.allocate(L);
            one.set(L, 0, 1L);
            writeAll(eventFd, one);
        }
    }

    /** write(2) of all of {@code buf}, retrying on EINTR. */
    private static void writeAll(int fd, MemorySegment buf) throws SyscallException {
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
                Syscalls.closeQuietly(pidfd);
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
}
