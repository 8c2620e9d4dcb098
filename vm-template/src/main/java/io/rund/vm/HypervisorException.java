package io.rund.vm;

/** A hypervisor operation failed; the message says which, for which sandbox, and why. */
public final class HypervisorException extends Exception {

    private static final long serialVersionUID = 1L;

    public HypervisorException(String message) {
        super(message);
    }

    public HypervisorException(String message, Throwable cause) {
        super(message, cause);
    }
}
