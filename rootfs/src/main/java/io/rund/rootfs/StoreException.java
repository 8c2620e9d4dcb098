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
}
