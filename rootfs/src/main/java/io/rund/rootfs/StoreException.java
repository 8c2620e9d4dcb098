package io.rund.rootfs;

/** The writable-layer store cannot do what was asked; the message names the store and why. */
public final class StoreException extends Exception {

    private static final long serialVersionUID = 1L;

    public StoreException(String message) {
        super(message);
    }

    public StoreException(String message, Throwable cause) {
        super(message, cause);
    }

    /** The file system had no space left (ENOSPC): nothing is wrong but room. */
    public boolean noSpace() {
        return getCause() instanceof Syscalls.SyscallException e && e.errno() == 28;
    }
}
