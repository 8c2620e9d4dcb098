package io.rund.shim;

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
 * Carries a process's stdio between containerd's endpoints and the guest agent: a virtual
 * thread per stream. An endpoint is a fifo path (containerd's default) or a file:// URI
 * (appended to); an empty one means the stream is not wanted.
 */
final class Stdio {

    private static final System.Logger LOG = System.getLogger(Stdio.class.getName());
    private static final int CHUNK = 64 * 1024;

    private Stdio() {}

    /** Checks an endpoint before anything starts; empty is fine. */
    static void check(String what, String uri) throws TaskFault {
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
        Thread.ofVirtual().name("stdio-" + containerId + "-" + execId + (stderr ? "-err" : "-out")).start(() -> {
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

    /** Copies containerd's stdin into the process until it ends, then closes the process's stdin. */
    static void pumpIn(AgentClient agent, String containerId, String execId, String uri) {
        if (uri.isEmpty()) {
            return;
        }
        Thread.ofVirtual().name("stdio-" + containerId + "-" + execId + "-in").start(() -> {
            try (FileChannel in = FileChannel.open(Path.of(uri), StandardOpenOption.READ)) {
                ByteBuffer b = ByteBuffer.allocate(CHUNK);
                while (in.read(b.clear()) >= 0) {
                    byte[] data = Arrays.copyOf(b.array(), b.position());
                    int off = 0;
                    while (off < data.length) {
                        off += agent.writeStdin(containerId, execId, Arrays.copyOfRange(data, off, data.length));
                    }
                }
                agent.closeStdin(containerId, execId);
            } catch (IOException | AgentException e) {
                LOG.log(Level.DEBUG, "stdin {0}/{1}: {2}", containerId, execId, e.getMessage());
            }
        });
    }
}
