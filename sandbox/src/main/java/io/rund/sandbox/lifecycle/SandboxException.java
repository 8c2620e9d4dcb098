package io.rund.sandbox.lifecycle;

/** A sandbox could not be started or stopped; the message names the sandbox and the step. */
public final class SandboxException extends Exception {

    private static final long serialVersionUID = 1L;

    /** How callers (the task service) tell failures apart. */
    public enum Kind {
        INVALID_ARGUMENT,
        ALREADY_EXISTS,
        NOT_FOUND,
        FAILED
    }

    private final Kind kind;

    public SandboxException(Kind kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public Kind kind() {
        return kind;
    }
}
