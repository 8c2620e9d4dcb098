package io.rund.rootfs;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A sandbox's writable layer: an open descriptor of an ext4 image that no path names. The
 * hypervisor opens it through {@link #procPath()}; once it has, the daemon closes its own
 * descriptor, and the kernel frees the file when the hypervisor exits, however it exits.
 */
public final class WritableLayer implements AutoCloseable {

    private final int fd;
    private final long sizeBytes;
    private final AtomicBoolean closed = new AtomicBoolean();

    WritableLayer(int fd, long sizeBytes) {
        this.fd = fd;
        this.sizeBytes = sizeBytes;
    }

    /** /proc/&lt;daemon pid&gt;/fd/&lt;fd&gt;: another process (as root) opens the same file through it. */
    public Path procPath() {
        return Path.of("/proc", Long.toString(ProcessHandle.current().pid()), "fd", Integer.toString(fd));
    }

    public int fd() {
        return fd;
    }

    public long sizeBytes() {
        return sizeBytes;
    }

    /** Drops the daemon's descriptor; idempotent. */
    @Override
    public void close() {
        if (closed.compareAndSet(false, true)) {
            try {
                Syscalls.close(fd);
            } catch (Syscalls.SyscallException e) {
                // A descriptor that cannot be closed was already gone; nothing is left to free.
            }
        }
    }
}
