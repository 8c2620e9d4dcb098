package io.rund.sandbox.lifecycle;

import io.rund.sandbox.Fault;

/** A sandbox could not be started, changed or stopped; {@link #kind()} says how, the message names the sandbox and the step. */
public final class SandboxException extends Exception {

    private static final long serialVersionUID = 1L;

    private final Fault kind;

    public SandboxException(Fault kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public Fault kind() {
        return kind;
    }
}
