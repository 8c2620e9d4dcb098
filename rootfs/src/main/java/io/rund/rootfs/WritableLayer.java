package io.rund.rootfs;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A sandbox's writable layer: an open descriptor of an ext4 image that no path names. The
 * hypervisor opens it through {@link #procPath()}; once it has, the daemon closes its own
 * descriptor, and the kernel frees the file when the hypervisor exits, however it exits.
 * Its store counts it (what it may still take of the store) until then: {@link #heldUntil}.
 */
public final class WritableLayer implements AutoCloseable {

    private final int fd;
    private final long sizeBytes;
    private final WritableLayerStore store;
    private final WritableLayerStore.Held held;
    private final AtomicBoolean closed = new AtomicBoolean();
    private final AtomicBoolean handed = new AtomicBoolean();

    WritableLayer(int fd, long sizeBytes, WritableLayerStore store, WritableLayerStore.Held held) {
        this.fd = fd;
        this.sizeBytes = sizeBytes;
        this.store = store;
        this.held = held;
    }

    /**
     * The layer is a VM's from now on: its store counts it until {@code gone} completes (the
     * VM has exited, and with it the last descriptor of the file).
     */
    public void heldUntil(java.util.concurrent.CompletableFuture<?> gone) {
        if (handed.compareAndSet(false, true)) {
            store.holdUntil(held, gone);
        }
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

    /** Drops the daemon's descriptor (and, for a layer no VM was handed, the store's count of it); idempotent. */
    @Override
    public void close() {
        if (!handed.get()) {
            store.release(held);
        }
        if (closed.compareAndSet(false, true)) {
            try {
                Syscalls.close(fd);
            } catch (Syscalls.SyscallException e) {
                // A descriptor that cannot be closed was already gone; nothing is left to free.
            }
        }
    }
}
