package io.rund.vm.qemu;

import java.io.IOException;
import java.io.InputStream;
import java.lang.System.Logger.Level;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * Copies what a VM's process writes (the guest's serial console, QEMU's own messages) into
 * a file that never holds more than {@code cap} bytes: a guest that prints forever must not
 * fill the tmpfs its sandbox directory is on. When a write would pass the cap, the older
 * half is dropped: the file keeps its newest half, after a line saying how much was cut,
 * so the tail that failure reports show is always there.
 *
 * <p>The file stays open for the pump's life, so a directory renamed under it (a spare VM
 * taken by a sandbox) does not matter. Threads: one platform thread per stream, named for
 * the VM; it ends when the process closes the stream.
 */
final class CappedLog {

    private static final System.Logger LOG = System.getLogger(CappedLog.class.getName());
    /** The most of each VM log kept: the console's and QEMU's. */
    static final long CAP = 1 << 20;

    private final FileChannel file;
    private final long cap;
    private long dropped;
    /** The length of the "dropped" line the file starts with, once it has been cut. */
    private long markerLength;

    private CappedLog(FileChannel file, long cap) {
        this.file = file;
        this.cap = cap;
    }

    /** Starts copying {@code in} into {@code path} (created or emptied), at most {@code cap} bytes kept. */
    static Thread pump(InputStream in, Path path, long cap, String threadName) throws IOException {
        CappedLog log = open(path, cap);
        return Thread.ofPlatform().daemon().name(threadName).start(() -> log.copy(in, path));
    }

    private void copy(InputStream in, Path path) {
        byte[] buf = new byte[8192];
        try (in; file) {
            for (int n; (n = in.read(buf)) > 0; ) {
                write(ByteBuffer.wrap(buf, 0, n));
            }
        } catch (IOException e) {
            LOG.log(Level.DEBUG, "log {0}: {1}", path, e.getMessage());
        }
    }

    /** Appends, first cutting the file to its newest half when the write would pass the cap. */
    void write(ByteBuffer data) throws IOException {
        long half = cap / 2;
        if (data.remaining() >= half) {
            dropped += file.size() - markerLength + data.remaining() - half;
            data.position(data.limit() - (int) half);
            restart(ByteBuffer.allocate(0));
        } else if (file.size() + data.remaining() > cap) {
            long keepFrom = Math.max(markerLength, file.size() - half);
            ByteBuffer kept = ByteBuffer.allocate((int) (file.size() - keepFrom));
            while (kept.hasRemaining() && file.read(kept, keepFrom + kept.position()) > 0) {
                // reads the newest half
            }
            dropped += keepFrom - markerLength;
            kept.flip();
            restart(kept);
        }
        while (data.hasRemaining()) {
            file.write(data, file.size());
        }
    }

    /** Empties the file and starts it with the line saying how much was dropped, then {@code kept}. */
    private void restart(ByteBuffer kept) throws IOException {
        byte[] marker = ("[rund: " + dropped + " earlier bytes dropped; this log keeps at most " + cap + "]\n")
                .getBytes(StandardCharsets.US_ASCII);
        file.truncate(0);
        file.write(ByteBuffer.wrap(marker), 0);
        markerLength = marker.length;
        while (kept.hasRemaining()) {
            file.write(kept, file.size());
        }
    }

    /** A log on {@code path}, created or emptied, written through {@link #write}. */
    static CappedLog open(Path path, long cap) throws IOException {
        return new CappedLog(FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.READ, StandardOpenOption.TRUNCATE_EXISTING), cap);
    }

    void close() throws IOException {
        file.close();
    }

    /** The last {@code max} characters of a log, for error messages. */
    static String tail(Path log, int max) {
        try {
            String s = java.nio.file.Files.readString(log, StandardCharsets.UTF_8).strip();
            return s.isEmpty() ? "(nothing)" : s.length() > max ? s.substring(s.length() - max) : s;
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }
}
