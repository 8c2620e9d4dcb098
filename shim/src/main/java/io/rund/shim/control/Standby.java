package io.rund.shim.control;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * The standby daemon: a second daemon process, started by the serving one and warm (it has
 * rehearsed a start, {@link Rehearsal}), blocked on the node's daemon lock. When the serving
 * daemon dies or is stopped, the kernel hands the lock to the standby at once, and it takes
 * every sandbox over with code that has run before: a restart costs containerd a fifth of
 * what a JVM started then would (docs/BENCHMARKS.md, "restart").
 *
 * <p>Locks, all in the state directory: {@code rund.lock} (POSIX, {@link Daemon#lock}) is held
 * by the serving daemon; {@code rund.standby} (POSIX) by the one standby; a relay or launcher
 * that finds no daemon starts one only when neither is held, nor {@code rund.start} (flock,
 * held by a daemon being started: shim/launcher/daemon.c). The standby lets go of
 * {@code rund.standby} only once it holds {@code rund.lock}, so at every moment one of them
 * says a daemon is coming.
 *
 * <p>An upgrade replaces rund's files while the standby waits: a standby whose classpath
 * changed does not take over but leaves, and the next daemon a relay starts is the new build.
 */
final class Standby {

    private static final System.Logger LOG = System.getLogger(Standby.class.getName());
    /** How long after the serving daemon is ready its standby starts: the node's own work goes first. */
    static final Duration AFTER_READY = Duration.ofSeconds(2);
    /** A standby's exit status when another waits already. */
    static final int NOT_NEEDED = 3;
    /** How long after finding another's standby waiting the keeper tries again. */
    static final Duration OTHERS_AFTER = Duration.ofSeconds(60);
    /** How long a standby that died waits to be started again. */
    static final Duration RESPAWN_AFTER = Duration.ofSeconds(10);

    private Standby() {}

    /**
     * Waits as the node's standby: rehearses a start, then blocks until the serving daemon
     * has gone. Returns the daemon lock once this process is to serve, or null when it is to
     * leave (another standby waits already, or rund was reinstalled meanwhile).
     */
    static FileLock await(Daemon.Config config) throws IOException {
        Path dir = config.stateDir();
        FileChannel standbyFile = FileChannel.open(dir.resolve("rund.standby"), StandardOpenOption.CREATE,
                StandardOpenOption.WRITE);
        FileLock standby = standbyFile.tryLock();
        if (standby == null) {
            standbyFile.close();
            LOG.log(Level.INFO, "standby: another standby daemon waits already; leaving");
            return null;
        }
        long pid = ProcessHandle.current().pid();
        Files.writeString(dir.resolve("standby.pid"), Long.toString(pid));
        long t0 = System.nanoTime();
        try {
            Rehearsal.run(config, 3);
        } catch (Exception e) {
            LOG.log(Level.WARNING, "standby: rehearsing a start failed ({0}); it will take over cold", e.toString());
        }
        System.gc(); // what the rehearsal made is garbage, and a heap of it would sit in the node's memory while this waits
        String build = build();
        LOG.log(Level.INFO, "standby: pid {0} rehearsed a start in {1} ms; waiting to take over", Long.toString(pid),
                (System.nanoTime() - t0) / 1_000_000);
        FileChannel lockFile = FileChannel.open(dir.resolve("rund.lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        FileLock lock = lockFile.lock(); // the serving daemon's end hands it over
        Files.deleteIfExists(dir.resolve("standby.pid"));
        if (!build().equals(build)) {
            LOG.log(Level.INFO, "standby: rund was installed anew while it waited; leaving the node to the new build");
            lock.release();
            lockFile.close();
            standby.release();
            standbyFile.close();
            return null;
        }
        standby.release(); // only now: until here rund.standby said a daemon is coming, from here rund.lock does
        standbyFile.close();
        LOG.log(Level.INFO, "standby: pid {0} takes over", Long.toString(pid));
        return lock;
    }

    /** The standby waiting on the node of {@code stateDir}, if one does: its pid file names a live process. */
    static java.util.Optional<ProcessHandle> waiting(Path stateDir) {
        try {
            return ProcessHandle.of(Long.parseLong(Files.readString(stateDir.resolve("standby.pid")).strip()));
        } catch (IOException | NumberFormatException e) {
            return java.util.Optional.empty();
        }
    }

    /** What this JVM runs: its classpath's files as they are now (size and time) and the JDK. */
    private static String build() {
        StringBuilder b = new StringBuilder(System.getProperty("java.home"));
        for (String entry : System.getProperty("java.class.path").split(java.io.File.pathSeparator)) {
            Path p = Path.of(entry);
            try {
                b.append('|').append(entry).append(':').append(Files.size(p)).append(':')
                        .append(Files.getLastModifiedTime(p).toMillis());
            } catch (IOException e) {
                b.append('|').append(entry).append(":gone");
            }
        }
        return b.toString();
    }

    /**
     * The serving daemon's keeper of its standby: starts one (this JVM's own command line,
     * its output into the daemon's) {@link #AFTER_READY} after it is told to, and again
     * {@link #RESPAWN_AFTER} after one died, until closed.
     */
    static final class Keeper implements AutoCloseable {
        private volatile boolean closed;

        void start() {
            Thread.ofVirtual().name("standby-keeper").start(this::keep);
        }

        private void keep() {
            Duration wait = AFTER_READY;
            while (!closed) {
                try {
                    Thread.sleep(wait);
                    if (closed) {
                        return;
                    }
                    List<String> argv = new ArrayList<>();
                    ProcessHandle.Info self = ProcessHandle.current().info();
                    argv.add(self.command().orElseThrow(() -> new IOException("this JVM's command is not known")));
                    argv.addAll(List.of(self.arguments().orElse(new String[0])));
                    Process p = new ProcessBuilder(argv).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                            .redirectOutput(ProcessBuilder.Redirect.INHERIT).redirectError(ProcessBuilder.Redirect.INHERIT)
                            .start();
                    int status = p.waitFor();
                    if (status == NOT_NEEDED) {
                        // One this daemon did not start waits (a daemon that lost the race to
                        // start became it): looked at again later, not at once.
                        LOG.log(Level.INFO, "standby: another waits already; none started");
                        wait = OTHERS_AFTER;
                        continue;
                    }
                    if (!closed) {
                        LOG.log(Level.WARNING, "standby: pid {0} ended with status {1}; another in {2} s", Long.toString(p.pid()), status,
                                RESPAWN_AFTER.toSeconds());
                    }
                } catch (InterruptedException e) {
                    return;
                } catch (IOException e) {
                    LOG.log(Level.WARNING, "standby: could not start one: {0}", e.getMessage());
                }
                wait = RESPAWN_AFTER;
            }
        }

        /** Stops keeping one; a standby that waits stays, to take over from this daemon. */
        @Override
        public void close() {
            closed = true;
        }
    }
}
