package io.rund.shim.stdio;

import io.rund.rootfs.Syscalls;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.guest.GuestProcess;
import io.rund.sandbox.guest.StreamChunk;
import io.rund.shim.TaskFault;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Carries a process's stdio between containerd's endpoints and the guest agent: a thread
 * per stream. An endpoint is a fifo path (containerd's default), a file:// URI (appended
 * to), or for stdout and stderr together a binary:// URI: a logging program started as
 * containerd's own shims start it (its path and query arguments, CONTAINER_ID and
 * CONTAINER_NAMESPACE as its whole environment, stdout on fd 3, stderr on fd 4, and fd 5
 * which it closes when it is ready). An empty endpoint means the stream is not wanted.
 *
 * <p>The threads are platform threads: opening a fifo blocks in the kernel until the other
 * side opens it, and a virtual thread blocked there pins its carrier; with two cores two
 * such opens stopped every other virtual thread of the daemon. (Non-blocking fifos through
 * FFM and one poller would be lighter; noted for later.)
 */
public final class Stdio {

    private static final System.Logger LOG = System.getLogger(Stdio.class.getName());
    private static final int CHUNK = 64 * 1024;

    private Stdio() {}

    private static void check(String what, String uri) throws TaskFault {
        if (uri.isEmpty() || uri.startsWith("/") || uri.startsWith("file:///")) {
            return;
        }
        throw new TaskFault(Fault.INVALID_ARGUMENT, what + " " + uri + " is not a fifo path or file:// URI");
    }

    /** Checks a process's endpoints before anything starts: one binary:// URI for both outputs, or each on its own. */
    public static void check(String stdin, String stdout, String stderr) throws TaskFault {
        check("stdin", stdin);
        if (stdout.startsWith("binary://")) {
            if (!stderr.equals(stdout)) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, "stderr " + stderr + " must be the same binary:// URI as stdout "
                        + stdout + ": one logging program takes both");
            }
            LoggingProgram.binary(stdout);
            return;
        }
        check("stdout", stdout);
        check("stderr", stderr);
    }

    /**
     * The output side of a process: its destinations, opened (a logging program started
     * and ready) before the process starts, then the pumps once it has.
     */
    public static final class Output {
        private final Path workDir;
        private final String containerId;
        private final String execId;
        private final String stdout;
        private final String stderr;
        private final boolean terminal;
        private final LoggingProgram logger;
        private CompletableFuture<Void> drained = CompletableFuture.completedFuture(null);

        private Output(Path workDir, String containerId, String execId, String stdout, String stderr, boolean terminal,
                LoggingProgram logger) {
            this.workDir = workDir;
            this.containerId = containerId;
            this.execId = execId;
            this.stdout = stdout;
            this.stderr = stderr;
            this.terminal = terminal;
            this.logger = logger;
        }

        /** Starts the pumps: the process has started, so its streams exist in the guest. */
        public void begin(GuestProcess process) {
            CompletableFuture<Void> out;
            CompletableFuture<Void> err;
            if (logger != null) {
                out = pumpOut(process, opened(logger.out), offsets("out"), false);
                if (terminal) {
                    closeQuietly(logger.err);
                    err = CompletableFuture.completedFuture(null);
                } else {
                    err = pumpOut(process, opened(logger.err), offsets("err"), true);
                }
            } else {
                out = stdout.isEmpty() ? CompletableFuture.completedFuture(null)
                        : pumpOut(process, () -> openOut(stdout), offsets("out"), false);
                err = terminal || stderr.isEmpty() ? CompletableFuture.completedFuture(null)
                        : pumpOut(process, () -> openOut(stderr), offsets("err"), true);
            }
            drained = CompletableFuture.allOf(out, err);
        }

        /** Waits, at most {@code limit}, until all the process wrote has been passed on; then lets the logger go. */
        public void awaitDrained(Duration limit) {
            await(drained, limit);
            abandon();
            for (String stream : List.of("out", "err")) {
                try {
                    Files.deleteIfExists(offsets(stream));
                } catch (IOException e) {
                    LOG.log(Level.DEBUG, "stdio: remove {0}: {1}", offsets(stream), e.getMessage());
                }
            }
        }

        /**
         * Where a stream's offset is kept: how much of it has been passed on, for the daemon
         * that takes the process up after this one (its read starts there).
         */
        private Path offsets(String stream) {
            return workDir.resolve("stdio-" + io.rund.sandbox.id.Ids.shortHash(containerId + "/" + execId) + "." + stream);
        }

        /** Lets the logging program go (the process did not start, or its output is done). */
        public void abandon() {
            if (logger != null) {
                logger.finish();
            }
        }
    }

    /** Opens a process's output destinations; a logging program's fifos go in {@code workDir}. */
    public static Output output(Path workDir, String namespace, String containerId, String execId, String stdout, String stderr,
            boolean terminal) throws TaskFault {
        LoggingProgram logger = stdout.startsWith("binary://")
                ? LoggingProgram.start(stdout, namespace, execId.isEmpty() ? containerId : execId, workDir) : null;
        return new Output(workDir, containerId, execId, stdout, stderr, terminal, logger);
    }

    private static void await(CompletableFuture<Void> f, Duration limit) {
        try {
            f.get(limit.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException | TimeoutException e) {
            LOG.log(Level.DEBUG, "stdio: output still open after {0}", limit);
        }
    }

    private static Opener opened(FileChannel ch) {
        return () -> ch;
    }

    /** A guest that broke the protocol ends the pump, and says so in the log (an ordinary end does not). */
    private static boolean rejected(Exception e) {
        return e instanceof AgentException a && a.rejectedAnswer();
    }

    static void closeQuietly(java.io.Closeable c) {
        try {
            c.close();
        } catch (IOException e) {
            // nothing to do: the other side is gone
        }
    }

    /** Opens a pump's destination. */
    private interface Opener {
        FileChannel open() throws IOException;
    }

    private static FileChannel openOffsets(Path file) throws IOException {
        return FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
    }

    private static FileChannel openOut(String uri) throws IOException {
        if (uri.startsWith("file://")) {
            return FileChannel.open(Path.of(uri.substring("file://".length())), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE, StandardOpenOption.APPEND);
        }
        return FileChannel.open(Path.of(uri), StandardOpenOption.WRITE);
    }

    /**
     * Copies stdout or stderr of a process until the guest says the stream ended, reading at
     * the offset it has passed on, which it keeps in {@code offsets} after each write: a
     * daemon that takes the process up reads from there, so a chunk read but never written
     * by a daemon that died is read again (one written but not yet counted is written twice).
     */
    private static CompletableFuture<Void> pumpOut(GuestProcess process, Opener opener, Path offsets, boolean stderr) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        Thread.ofPlatform().daemon().name("stdio-" + process.name() + (stderr ? "-err" : "-out")).start(() -> {
            try (FileChannel out = opener.open(); FileChannel kept = openOffsets(offsets)) {
                ByteBuffer at = ByteBuffer.allocate(Long.BYTES);
                long offset = kept.size() == Long.BYTES && kept.read(at, 0) == Long.BYTES ? at.getLong(0) : 0;
                while (true) {
                    StreamChunk c = process.readAt(stderr, offset, CHUNK, null);
                    ByteBuffer b = ByteBuffer.wrap(c.data());
                    while (b.hasRemaining()) {
                        out.write(b);
                    }
                    if (c.data().length > 0) {
                        offset += c.data().length;
                        kept.write(at.clear().putLong(0, offset), 0);
                    }
                    if (c.eof()) {
                        break;
                    }
                }
            } catch (IOException | AgentException e) {
                LOG.log(rejected(e) ? Level.WARNING : Level.DEBUG, "stdio {0}: {1}", process.name(), e.getMessage());
            } finally {
                done.complete(null);
            }
        });
        return done;
    }

    /** A running stdin pump; {@link #cancel} ends it even while containerd never opened the fifo. */
    public static final class Input {
        private final String fifo;
        private volatile boolean cancelled;

        private Input(String fifo) {
            this.fifo = fifo;
        }

        /**
         * Ends the pump: if it is still waiting in open(2) for containerd to open the fifo's
         * write end, opening that end here (non-blocking, at once closed) releases it.
         */
        public void cancel() {
            cancelled = true;
            if (fifo == null) {
                return;
            }
            try {
                int fd = Syscalls.open(Path.of(fifo), Syscalls.O_WRONLY | Syscalls.O_NONBLOCK | Syscalls.O_CLOEXEC, 0);
                Syscalls.close(fd);
            } catch (Syscalls.SyscallException e) {
                // ENXIO: nobody reads it any more, so nobody waits for it either.
            }
        }
    }

    /**
     * Copies containerd's stdin into the process until it ends, then closes the process's
     * stdin. {@code opened} runs once the fifo is open here: only then may another reader
     * (the relay's hold) open it. A reader that came first would let containerd write its
     * stdin and close the fifo before this open, which then waits for a writer that never
     * comes (ctr with stdin from a file hung so, now and then).
     */
    public static Input pumpIn(GuestProcess process, String uri, Runnable opened) {
        if (uri.isEmpty()) {
            return new Input(null);
        }
        Input input = new Input(uri);
        Thread.ofPlatform().daemon().name("stdio-" + process.name() + "-in").start(() -> {
            try (FileChannel in = FileChannel.open(Path.of(uri), StandardOpenOption.READ)) {
                opened.run();
                ByteBuffer b = ByteBuffer.allocate(CHUNK);
                while (!input.cancelled && in.read(b.clear()) >= 0) {
                    byte[] data = Arrays.copyOf(b.array(), b.position());
                    int off = 0;
                    while (off < data.length) {
                        off += process.writeStdin(Arrays.copyOfRange(data, off, data.length));
                    }
                }
                if (!input.cancelled) {
                    process.closeStdin();
                }
            } catch (IOException | AgentException e) {
                LOG.log(rejected(e) ? Level.WARNING : Level.DEBUG, "stdin {0}: {1}", process.name(), e.getMessage());
            }
        });
        return input;
    }
}
