package io.rund.shim;

/** A task call that cannot be served as asked; its kind becomes the status containerd sees. */
final class TaskFault extends Exception {

    private static final long serialVersionUID = 1L;

    enum Kind {
        NOT_FOUND,
        ALREADY_EXISTS,
        INVALID_ARGUMENT,
        FAILED_PRECONDITION,
        UNIMPLEMENTED
    }

    final Kind kind;

    TaskFault(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }
}
