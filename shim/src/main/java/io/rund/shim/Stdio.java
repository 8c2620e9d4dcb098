package io.rund.shim;

import io.rund.rootfs.Syscalls;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.agent.AgentException;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;

/**
 * Carries a process's stdio between containerd's endpoints and the guest agent: a thread
 * per stream. An endpoint is a fifo path (containerd's default) or a file:// URI
 * (appended to); an empty one means the stream is not wanted.
 *
 * <p>The threads are platform threads: opening a fifo blocks in the kernel until the other
 * side opens it, and a virtual thread blocked there pins its carrier; with two cores two
 * such opens stopped every other virtual thread of the daemon. (Non-blocking fifos through
 * FFM and one poller would be lighter; noted for later.)
 */
final class Stdio {

    private static final System.Logger LOG = System.getLogger(Stdio.class.getName());
    private static final int CHUNK = 64 * 1024;

    private Stdio() {}

    /** Checks a process's three endpoints before anything starts; empty ones are fine. */
    static void check(String stdin, String stdout, String stderr) throws TaskFault {
        check("stdin", stdin);
        check("stdout", stdout);
        check("stderr", stderr);
    }

    private static void check(String what, String uri) throws TaskFault {
        if (uri.isEmpty() || uri.startsWith("/") || uri.startsWith("file:///")) {
            return;
        }
        if (uri.startsWith("binary://")) {
            throw new TaskFault(TaskFault.Kind.UNIMPLEMENTED, what + " " + uri + ": binary:// logging is not supported yet");
        }
        throw new TaskFault(TaskFault.Kind.INVALID_ARGUMENT, what + " " + uri + " is not a fifo path or file:// URI");
    }

    private static FileChannel openOut(String uri) throws IOException {
        if (uri.startsWith("file://")) {
            return FileChannel.open(Path.of(uri.substring("file://".length())), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE, StandardOpenOption.APPEND);
        }
        return FileChannel.open(Path.of(uri), StandardOpenOption.WRITE);
    }

    /** Copies stdout or stderr of a process until the guest says the stream ended. */
    static CompletableFuture<Void> pumpOut(AgentClient agent, String containerId, String execId, String uri,
            boolean stderr) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        if (uri.isEmpty()) {
            done.complete(null);
            return done;
        }
        Thread.ofPlatform().daemon().name("stdio-" + containerId + "-" + execId + (stderr ? "-err" : "-out")).start(() -> {
            try (FileChannel out = openOut(uri)) {
                while (true) {
                    AgentClient.Chunk c = stderr ? agent.readStderr(containerId, execId, CHUNK, null)
                            : agent.readStdout(containerId, execId, CHUNK, null);
                    ByteBuffer b = ByteBuffer.wrap(c.data());
                    while (b.hasRemaining()) {
                        out.write(b);
                    }
                    if (c.eof()) {
                        break;
                    }
                }
            } catch (IOException | AgentException e) {
                LOG.log(Level.DEBUG, "stdio {0}/{1}: {2}", containerId, execId, e.getMessage());
            } finally {
                done.complete(null);
            }
        });
        return done;
    }

    /** A running stdin pump; {@link #cancel} ends it even while containerd never opened the fifo. */
    static final class Input {
        private final String fifo;
        private volatile boolean cancelled;

        private Input(String fifo) {
            this.fifo = fifo;
        }

        /**
         * Ends the pump: if it is still waiting in open(2) for containerd to open the fifo's
         * write end, opening that end here (non-blocking, at once closed) releases it.
         */
        void cancel() {
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

    /** Copies containerd's stdin into the process until it ends, then closes the process's stdin. */
    static Input pumpIn(AgentClient agent, String containerId, String execId, String uri) {
        if (uri.isEmpty()) {
            return new Input(null);
        }
        Input input = new Input(uri);
        Thread.ofPlatform().daemon().name("stdio-" + containerId + "-" + execId + "-in").start(() -> {
            try (FileChannel in = FileChannel.open(Path.of(uri), StandardOpenOption.READ)) {
                ByteBuffer b = ByteBuffer.allocate(CHUNK);
                while (!input.cancelled && in.read(b.clear()) >= 0) {
                    byte[] data = Arrays.copyOf(b.array(), b.position());
                    int off = 0;
                    while (off < data.length) {
                        off += agent.writeStdin(containerId, execId, Arrays.copyOfRange(data, off, data.length));
                    }
                }
                if (!input.cancelled) {
                    agent.closeStdin(containerId, execId);
                }
            } catch (IOException | AgentException e) {
                LOG.log(Level.DEBUG, "stdin {0}/{1}: {2}", containerId, execId, e.getMessage());
            }
        });
        return input;
    }
}
