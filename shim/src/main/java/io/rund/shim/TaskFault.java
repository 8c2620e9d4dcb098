package io.rund.shim;

import io.rund.sandbox.Fault;

/** A task call that cannot be served as asked; its kind becomes the status containerd sees. */
final class TaskFault extends Exception {

    private static final long serialVersionUID = 1L;

    final Fault kind;

    TaskFault(Fault kind, String message) {
        super(message);
        this.kind = kind;
    }
}
