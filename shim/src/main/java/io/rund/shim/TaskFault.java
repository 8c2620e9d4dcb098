package io.rund.shim;

import io.rund.sandbox.Fault;

/** A task call that cannot be served as asked; its kind becomes the status containerd sees. */
public final class TaskFault extends Exception {

    private static final long serialVersionUID = 1L;

    public final Fault kind;

    public TaskFault(Fault kind, String message) {
        super(message);
        this.kind = kind;
    }
}
