package io.rund.shim.stdio;

import io.rund.rootfs.Syscalls;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.lifecycle.SandboxManager;
import io.rund.shim.TaskFault;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

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
            Logger.binary(stdout);
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
        private final String containerId;
        private final String execId;
        private final String stdout;
        private final String stderr;
        private final boolean terminal;
        private final Logger logger;
        private CompletableFuture<Void> drained = CompletableFuture.completedFuture(null);

        private Output(String containerId, String execId, String stdout, String stderr, boolean terminal, Logger logger) {
            this.containerId = containerId;
            this.execId = execId;
            this.stdout = stdout;
            this.stderr = stderr;
            this.terminal = terminal;
            this.logger = logger;
        }

        /** Starts the pumps: the process has started, so its streams exist in the guest. */
        public void begin(AgentClient agent) {
            CompletableFuture<Void> out;
            CompletableFuture<Void> err;
            if (logger != null) {
                out = pumpOut(agent, containerId, execId, opened(logger.out), false);
                if (terminal) {
                    closeQuietly(logger.err);
                    err = CompletableFuture.completedFuture(null);
                } else {
                    err = pumpOut(agent, containerId, execId, opened(logger.err), true);
                }
            } else {
                out = stdout.isEmpty() ? CompletableFuture.completedFuture(null)
                        : pumpOut(agent, containerId, execId, () -> openOut(stdout), false);
                err = terminal || stderr.isEmpty() ? CompletableFuture.completedFuture(null)
                        : pumpOut(agent, containerId, execId, () -> openOut(stderr), true);
            }
            drained = CompletableFuture.allOf(out, err);
        }

        /** Waits, at most {@code limit}, until all the process wrote has been passed on; then lets the logger go. */
        public void awaitDrained(Duration limit) {
            await(drained, limit);
            abandon();
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
        Logger logger = stdout.startsWith("binary://")
                ? Logger.start(stdout, namespace, execId.isEmpty() ? containerId : execId, workDir) : null;
        return new Output(containerId, execId, stdout, stderr, terminal, logger);
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

    private static void closeQuietly(java.io.Closeable c) {
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

    /**
     * A binary:// logging program. It gets its descriptors through fifos, opened by a
     * shell in the child before it becomes the program (ProcessBuilder passes only 0-2).
     */
    static final class Logger {
        private static final Duration TERM_GRACE = Duration.ofSeconds(12);
        private static final String EXEC = "exec 3<\"$1\" 4<\"$2\" 5>\"$3\" </dev/null >/dev/null 2>&1; shift 3; exec \"$@\"";

        private final Process process;
        private final String uri;
        final FileChannel out;
        final FileChannel err;

        private Logger(Process process, String uri, FileChannel out, FileChannel err) {
            this.process = process;
            this.uri = uri;
            this.out = out;
            this.err = err;
        }

        /** The program and its arguments: the URI's path, then each query key and its first value. */
        static List<String> binary(String uri) throws TaskFault {
            URI u;
            try {
                u = new URI(uri);
            } catch (URISyntaxException e) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, "log URI " + uri + " is not a URI: " + e.getMessage());
            }
            String path = u.getPath();
            if (path == null || !path.startsWith("/") || u.getRawAuthority() != null) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, "log URI " + uri + " must name an absolute path (binary:///path)");
            }
            if (!Files.isExecutable(Path.of(path)) || Files.isDirectory(Path.of(path))) {
                throw new TaskFault(Fault.INVALID_ARGUMENT, "log URI " + uri + ": " + path + " is not an executable file");
            }
            List<String> argv = new ArrayList<>(List.of(path));
            Map<String, String> args = new LinkedHashMap<>();
            if (u.getRawQuery() != null) {
                for (String kv : u.getRawQuery().split("&")) {
                    if (kv.isEmpty()) {
                        continue;
                    }
                    int eq = kv.indexOf('=');
                    String k = URLDecoder.decode(eq < 0 ? kv : kv.substring(0, eq), StandardCharsets.UTF_8);
                    String v = eq < 0 ? "" : URLDecoder.decode(kv.substring(eq + 1), StandardCharsets.UTF_8);
                    args.putIfAbsent(k, v);
                }
            }
            args.forEach((k, v) -> {
                argv.add(k);
                argv.add(v);
            });
            return argv;
        }

        static Logger start(String uri, String namespace, String id, Path workDir) throws TaskFault {
            List<String> argv = binary(uri);
            Path dir = null;
            Process p = null;
            List<Integer> unblockers = new ArrayList<>();
            AtomicBoolean settled = new AtomicBoolean();
            try {
                dir = Files.createTempDirectory(workDir, "log-");
                Path out = dir.resolve("out");
                Path err = dir.resolve("err");
                Path ready = dir.resolve("ready");
                for (Path f : List.of(out, err, ready)) {
                    Syscalls.mkfifo(f, 0600);
                }
                List<String> cmd = new ArrayList<>(List.of("/bin/sh", "-c", EXEC, "rund-log", out.toString(),
                        err.toString(), ready.toString()));
                cmd.addAll(argv);
                ProcessBuilder pb = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                        .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(ProcessBuilder.Redirect.DISCARD);
                pb.environment().clear();
                pb.environment().put("CONTAINER_ID", id);
                pb.environment().put("CONTAINER_NAMESPACE", namespace);
                p = pb.start();
                // Should it die before opening its ends, ours would wait forever: open them for it.
                p.onExit().thenRun(() -> {
                    synchronized (unblockers) {
                        if (settled.get()) {
                            return;
                        }
                        for (Path f : List.of(out, err)) {
                            unblockers.add(openQuietly(f, Syscalls.O_RDONLY | Syscalls.O_NONBLOCK));
                        }
                        unblockers.add(openQuietly(ready, Syscalls.O_WRONLY | Syscalls.O_NONBLOCK));
                    }
                });
                FileChannel o = FileChannel.open(out, StandardOpenOption.WRITE);
                FileChannel e = FileChannel.open(err, StandardOpenOption.WRITE);
                try (FileChannel r = FileChannel.open(ready, StandardOpenOption.READ)) {
                    r.read(ByteBuffer.allocate(1)); // EOF once it closed fd 5 (or died)
                }
                if (!p.isAlive() && p.exitValue() != 0) {
                    o.close();
                    e.close();
                    throw new TaskFault(Fault.INVALID_ARGUMENT, "logging program " + argv.getFirst() + " of " + uri
                            + " exited with status " + p.exitValue() + " before it was ready");
                }
                LOG.log(Level.DEBUG, "stdio {0}: logging program pid {1} ready", id, p.pid());
                return new Logger(p, uri, o, e);
            } catch (IOException | Syscalls.SyscallException e) {
                if (p != null) {
                    p.destroyForcibly();
                }
                throw new TaskFault(Fault.INVALID_ARGUMENT, "start logging program of " + uri + ": " + e.getMessage());
            } catch (TaskFault e) {
                p.destroyForcibly();
                throw e;
            } finally {
                synchronized (unblockers) {
                    settled.set(true);
                    for (int fd : unblockers) {
                        if (fd >= 0) {
                            try {
                                Syscalls.close(fd);
                            } catch (Syscalls.SyscallException ignored) {
                                // it was ours and open
                            }
                        }
                    }
                }
                if (dir != null) {
                    try {
                        io.rund.rootfs.Dirs.removeShallow(dir);
                    } catch (IOException e) {
                        LOG.log(Level.WARNING, "stdio: remove {0}: {1}", dir, e.getMessage());
                    }
                }
            }
        }

        private static int openQuietly(Path fifo, int flags) {
            try {
                return Syscalls.open(fifo, flags | Syscalls.O_CLOEXEC, 0);
            } catch (Syscalls.SyscallException e) {
                return -1;
            }
        }

        /**
         * After the pumps closed its fds 3 and 4: a program that leaves on end of input has
         * a moment to; one that does not gets SIGTERM, then SIGKILL after 12 s, as
         * containerd's shims do.
         */
        void finish() {
            closeQuietly(out);
            closeQuietly(err);
            try {
                if (process.waitFor(2, TimeUnit.SECONDS)) {
                    return;
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            process.destroy();
            process.onExit().orTimeout(TERM_GRACE.toMillis(), TimeUnit.MILLISECONDS).exceptionally(t -> {
                LOG.log(Level.WARNING, "stdio: logging program of {0} ignored SIGTERM; killing it", uri);
                process.destroyForcibly();
                return null;
            });
        }
    }

    private static FileChannel openOut(String uri) throws IOException {
        if (uri.startsWith("file://")) {
            return FileChannel.open(Path.of(uri.substring("file://".length())), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE, StandardOpenOption.APPEND);
        }
        return FileChannel.open(Path.of(uri), StandardOpenOption.WRITE);
    }

    /** Copies stdout or stderr of a process until the guest says the stream ended. */
    private static CompletableFuture<Void> pumpOut(AgentClient agent, String containerId, String execId, Opener opener,
            boolean stderr) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        Thread.ofPlatform().daemon().name("stdio-" + containerId + "-" + execId + (stderr ? "-err" : "-out")).start(() -> {
            try (FileChannel out = opener.open()) {
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

    /** Copies containerd's stdin into the process until it ends, then closes the process's stdin. */
    public static Input pumpIn(AgentClient agent, String containerId, String execId, String uri) {
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
