package io.rund.shim.stdio;

import io.rund.rootfs.Syscalls;
import io.rund.sandbox.Fault;
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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A binary:// logging program. It gets its descriptors through fifos, opened by a
 * shell in the child before it becomes the program (ProcessBuilder passes only 0-2).
 */
final class LoggingProgram {

    private static final System.Logger LOG = System.getLogger(LoggingProgram.class.getName());

    private static final Duration TERM_GRACE = Duration.ofSeconds(12);
    private static final String EXEC = "exec 3<\"$1\" 4<\"$2\" 5>\"$3\" </dev/null >/dev/null 2>&1; shift 3; exec \"$@\"";

    private final Process process;
    private final String uri;
    final FileChannel out;
    final FileChannel err;

    private LoggingProgram(Process process, String uri, FileChannel out, FileChannel err) {
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

    static LoggingProgram start(String uri, String namespace, String id, Path workDir) throws TaskFault {
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
            return new LoggingProgram(p, uri, o, e);
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
        Stdio.closeQuietly(out);
        Stdio.closeQuietly(err);
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
