package io.rund.rootfs;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A sandbox's helper process ({@code rund-helper}, C): a virtio-fs back-end serving one of
 * the sandbox's shares to its VM ({@link Kind}): the images, read-only, or the host
 * directories its containers bind. The daemon never parses a byte the guest
 * wrote into a virtqueue; this process does, confined by the kernel:
 *
 * <ul>
 *   <li>started by {@code rund-jail} as the uid its VM's QEMU will run as, in group
 *       {@code gid}, with no_new_privs and one capability, CAP_DAC_READ_SEARCH (the guest's
 *       root reads every file of its image, whatever its mode; writes need none);
 *   <li>in a mount namespace of its own whose root is the share: the images of this sandbox
 *       and nothing else exist for it (mounts the daemon adds below the share later appear
 *       there; the namespace is a slave, so nothing flows back);
 *   <li>under a seccomp allow-list (no open_by_handle_at, no sockets, no exec) and, once
 *       its VM connects, with process_vm_readv/writev pinned to that one process: the
 *       kernel lets it reach its own VM's memory and nobody else's;
 *   <li>in the sandbox's cgroup once the sandbox claims one, so what a guest makes it
 *       allocate is the sandbox's own; descriptors, node count and log size are capped.
 * </ul>
 *
 * <p>The host-directory share's helper holds more capabilities than that one ({@link
 * Kind#HOST_DIRS}); both are confined alike otherwise. Its stderr is its kind's log in the
 * sandbox's directory ({@code helper.log}, {@code hostfs.log}; at most 1 MiB, by rlimit).
 * It exits by itself when its VM disconnects, or when no VM connected within five minutes.
 * The daemon asks it for counters over its control socket ({@code helper.sock},
 * {@code hostctl.sock}).
 *
 * <p>Threads: any; {@link #stats} opens a connection per call.
 */
public final class SandboxHelper implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(SandboxHelper.class.getName());
    private static final Duration READY = Duration.ofSeconds(10);
    private static final Duration ANSWER = Duration.ofSeconds(5);
    private static final int MAX_ANSWER = 4096;

    /** How helpers are confined: the jail that starts them, the helper binary, its uid and group. */
    public record Jail(Path jailer, Path helper, int uid, int gid) {
        public Jail {
            if (uid <= 0 || gid <= 0) {
                throw new IllegalArgumentException("a helper runs as a uid and group of its sandbox, not " + uid + ":" + gid);
            }
        }
    }

    /**
     * Which share a helper serves, and so the share's, its sockets' and its log's names in the
     * sandbox's directory, the
     * capabilities rund-jail leaves it and how it serves.
     */
    public enum Kind {
        /** The images: served read-only, cached by the guest for long (an image never changes). */
        IMAGES("shared", "virtiofs.sock", "helper.sock", "helper.log", List.of("--cap", "dac_read_search"), List.of()),
        /**
         * Host directories, bound read-only or read-write: served writable (a read-only one is
         * read-only by its mount) and cached for a second, as the host may change them; what the
         * guest creates belongs to its caller's uid and gid, as a container's root makes it
         * under runc, which takes CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER over a namespace
         * holding those directories alone; owners only among those the daemon allowed (see
         * {@link #allowOwners}), and never a set-ID bit, so no CAP_FSETID.
         */
        HOST_DIRS("hostdirs", "hostfs.sock", "hostctl.sock", "hostfs.log", List.of("--cap", "dac_read_search", "--cap",
                "dac_override", "--cap", "chown", "--cap", "fowner"), List.of("--writable"));

        private final String share;
        private final String socket;
        private final String control;
        private final String log;
        private final List<String> jailOptions;
        private final List<String> helperOptions;

        Kind(String share, String socket, String control, String log, List<String> jailOptions,
                List<String> helperOptions) {
            this.share = share;
            this.socket = socket;
            this.control = control;
            this.log = log;
            this.jailOptions = jailOptions;
            this.helperOptions = helperOptions;
        }

        /** Where a sandbox directory's share of this kind is mounted. */
        public Path share(Path dir) {
            return dir.resolve(share);
        }

        /** Where a sandbox directory's back-end of this kind listens. */
        public Path socket(Path dir) {
            return dir.resolve(socket);
        }
    }

    /** The guest's caps: looked-up nodes and the bytes of their paths (ENOMEM past either), open files and directories (EMFILE). */
    public record Limits(int nodes, int handles, long pathBytes) {
        public static final Limits DEFAULT = new Limits(1 << 16, 512);

        /** The helper's own cap on the bytes of node paths it holds (32 MiB). */
        public Limits(int nodes, int handles) {
            this(nodes, handles, 32L << 20);
        }
    }

    private final String name;
    private final Path socket;
    private final Path control;
    /** Ours when this daemon started it; null for one adopted from a previous daemon. */
    private final Process process;
    private final ProcessHandle handle;

    private SandboxHelper(String name, Path socket, Path control, Process process) {
        this(name, socket, control, process, process.toHandle());
    }

    private SandboxHelper(String name, Path socket, Path control, Process process, ProcessHandle handle) {
        this.name = name;
        this.socket = socket;
        this.control = control;
        this.process = process;
        this.handle = handle;
    }

    /**
     * The same helper after its directory was renamed to {@code dir} (a spare VM's, taken by
     * a sandbox): its sockets are reached there now.
     */
    SandboxHelper in(Path dir, Kind kind) {
        return new SandboxHelper(name, kind.socket(dir), dir.resolve(kind.control), process, handle);
    }

    /** {@link #start(String, Path, Path, Jail, Limits, Kind)} of the image share's helper. */
    public static SandboxHelper start(String name, Path dir, Path share, Jail jail, Limits limits) throws StoreException {
        return start(name, dir, share, jail, limits, Kind.IMAGES);
    }

    /**
     * Starts {@code dir}'s helper of {@code kind} serving {@code share} (a directory; mounts
     * below it come and go) and returns once it answers.
     *
     * @param name names it in logs (the sandbox's id, or the spare's name)
     */
    public static SandboxHelper start(String name, Path dir, Path share, Jail jail, Limits limits, Kind kind)
            throws StoreException {
        Path socket = kind.socket(dir);
        Path control = dir.resolve(kind.control);
        Path log = dir.resolve(kind.log);
        List<String> argv = new ArrayList<>(List.of(jail.jailer().toString(),
                "--uid", Integer.toString(jail.uid()), "--gid", Integer.toString(jail.gid()),
                "--pivot", share.toAbsolutePath().toString()));
        argv.addAll(kind.jailOptions);
        argv.addAll(List.of("--listen", "3=" + socket, "--listen", "4=" + control, "--",
                jail.helper().toString(), "--name", name,
                "--nodes", Integer.toString(limits.nodes()), "--handles", Integer.toString(limits.handles()),
                "--path-bytes", Long.toString(limits.pathBytes())));
        argv.addAll(kind.helperOptions);
        Process p;
        try {
            p = new ProcessBuilder(argv).directory(dir.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .redirectErrorStream(true).start();
        } catch (IOException e) {
            throw new StoreException("helper " + name + ": start " + jail.helper() + " by " + jail.jailer() + ": "
                    + e.getMessage(), e);
        }
        SandboxHelper h = new SandboxHelper(name, socket, control, p);
        long end = System.nanoTime() + READY.toNanos();
        IOException last = null;
        while (System.nanoTime() < end) {
            if (!p.isAlive()) {
                h.close();
                throw new StoreException("helper " + name + " exited with status " + p.exitValue() + ": " + tail(log), null);
            }
            if (Files.exists(control)) {
                try {
                    h.stats();
                    p.onExit().thenAccept(x -> {
                        if (x.exitValue() != 0) {
                            LOG.log(Level.WARNING, "helper {0} (pid {1}) exited with status {2}: {3}", name, x.pid(),
                                    x.exitValue(), tail(log));
                        }
                    });
                    LOG.log(Level.DEBUG, "helper {0}: pid {1}, uid {2}, serving {3}", name, p.pid(), jail.uid(), share);
                    return h;
                } catch (IOException e) {
                    last = e; // bound by the jail, not yet serving
                }
            }
            try {
                Thread.sleep(2);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        h.close();
        throw new StoreException("helper " + name + " did not answer in " + READY.toSeconds() + " s"
                + (last == null ? "" : " (" + last.getMessage() + ")") + ": " + tail(log), last);
    }

    /**
     * The helper of {@code kind} that a previous daemon started for {@code dir} and that
     * still serves its VM: {@code pid}, if it is alive and answers on its control socket.
     */
    public static SandboxHelper adopt(String name, Path dir, Kind kind, long pid) throws StoreException {
        ProcessHandle h = ProcessHandle.of(pid).filter(ProcessHandle::isAlive).orElseThrow(() -> new StoreException(
                "helper " + name + ": pid " + pid + " of " + kind.socket(dir) + " is gone", null));
        SandboxHelper helper = new SandboxHelper(name, kind.socket(dir), dir.resolve(kind.control), null, h);
        try {
            String frontEnd = helper.stats().getOrDefault("front_end", "0");
            if (frontEnd.equals("0")) {
                throw new StoreException("helper " + name + " (pid " + pid + ") serves no VM", null);
            }
        } catch (IOException e) {
            throw new StoreException("helper " + name + " (pid " + pid + "): " + e.getMessage(), e);
        }
        return helper;
    }

    /** The last lines of a helper's log, for an error message. */
    private static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
            return String.join(" | ", lines.subList(Math.max(0, lines.size() - 3), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    public Path socket() {
        return socket;
    }

    public String name() {
        return name;
    }

    /** The helper's process (for binding it to a cgroup, and to know when it is gone). */
    public ProcessHandle process() {
        return handle;
    }

    /**
     * The helper's exit status if it exits within {@code wait}: 0 when its VM left (or none
     * came), 1 when it dropped a front-end that broke the protocol, 126 when it could not
     * confine itself; 128 + N when signal N killed it (SIGSYS, 159: its seccomp filter).
     */
    public java.util.OptionalInt awaitExit(Duration wait) throws InterruptedException {
        if (process == null) {
            throw new IllegalStateException("helper " + name + " was adopted: its exit status is not ours to read");
        }
        return process.waitFor(wait.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS)
                ? java.util.OptionalInt.of(process.exitValue()) : java.util.OptionalInt.empty();
    }

    /**
     * The helper's counters, by name: {@code mounted}, {@code nodes}, {@code handles},
     * {@code refused_nodes}, {@code refused_handles}, {@code path_bytes}, {@code front_end}
     * (its VM's pid, 0 before it connected), {@code queue0}, {@code queue1}.
     */
    public Map<String, String> stats() throws IOException {
        return parse(ask("stats"));
    }

    /** Most ids one "owners" request carries (the helper reads a request in 1 KiB). */
    private static final int IDS_PER_REQUEST = 32;

    /**
     * Lets the guest give files of a writable share to {@code uid} and {@code gids} (a
     * process's user, group and additional groups), or with {@code any} to every id (a process
     * that holds CAP_CHOWN), beside those allowed before. Before any such call the guest may
     * make no file there at all.
     */
    public void allowOwners(boolean any, int uid, List<Integer> gids) throws IOException {
        if (any) {
            expectOk(ask("owners any"));
            return;
        }
        for (int from = 0; from < Math.max(1, gids.size()); from += IDS_PER_REQUEST) {
            StringBuilder b = new StringBuilder("owners ").append(Integer.toUnsignedString(uid));
            for (int g : gids.subList(from, Math.min(gids.size(), from + IDS_PER_REQUEST))) {
                b.append(' ').append(Integer.toUnsignedString(g));
            }
            expectOk(ask(b.toString()));
        }
    }

    private void expectOk(String answer) throws IOException {
        if (!answer.equals("ok")) {
            throw new IOException("helper " + name + ": " + answer);
        }
    }

    /** One request line on the control socket, and its one-line answer. */
    private String ask(String request) throws IOException {
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
             Selector selector = Selector.open()) {
            ch.connect(UnixDomainSocketAddress.of(control));
            ch.write(ByteBuffer.wrap((request + "\n").getBytes(StandardCharsets.US_ASCII)));
            ch.configureBlocking(false);
            ch.register(selector, SelectionKey.OP_READ);
            ByteBuffer in = ByteBuffer.allocate(MAX_ANSWER);
            long end = System.nanoTime() + ANSWER.toNanos();
            while (true) {
                long left = (end - System.nanoTime()) / 1_000_000;
                if (left <= 0) {
                    throw new IOException("helper " + name + " did not answer in " + ANSWER.toSeconds() + " s");
                }
                selector.select(left);
                if (ch.read(in) < 0) {
                    throw new IOException("helper " + name + " closed its control connection");
                }
                String got = new String(in.array(), 0, in.position(), StandardCharsets.US_ASCII);
                int nl = got.indexOf('\n');
                if (nl >= 0) {
                    return got.substring(0, nl);
                }
                if (!in.hasRemaining()) {
                    throw new IOException("helper " + name + " answered more than " + MAX_ANSWER + " bytes without a line");
                }
            }
        }
    }

    static Map<String, String> parse(String line) throws IOException {
        String[] words = line.split(" ");
        if (!words[0].equals("ok")) {
            throw new IOException("helper answered: " + line);
        }
        Map<String, String> m = new LinkedHashMap<>();
        for (int i = 1; i < words.length; i++) {
            int eq = words[i].indexOf('=');
            if (eq > 0) {
                m.put(words[i].substring(0, eq), words[i].substring(eq + 1));
            }
        }
        return m;
    }

    /** Kills the helper (its VM, if any, loses its file system), waits for it, removes its sockets. */
    @Override
    public void close() {
        handle.destroyForcibly();
        try {
            handle.onExit().get(5, java.util.concurrent.TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException | java.util.concurrent.ExecutionException e) {
            LOG.log(Level.WARNING, "helper {0} (pid {1}) survived SIGKILL for 5 s", name, handle.pid());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (Path p : List.of(socket, control)) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                LOG.log(Level.WARNING, "helper {0}: remove {1}: {2}", name, p, e.getMessage());
            }
        }
    }

    @Override
    public String toString() {
        return "helper " + name + " (pid " + handle.pid() + ")";
    }
}
