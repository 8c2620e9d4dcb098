package io.rund.ttrpc;

/**
 * A call that ended with a non-OK status: thrown by handlers to choose the status the
 * caller sees, and by the client when the server (or the connection) failed the call.
 */
public class TtrpcException extends Exception {

    private static final long serialVersionUID = 1L;

    private final Status status;

    public TtrpcException(Status status) {
        this(status, null);
    }

    public TtrpcException(Status status, Throwable cause) {
        super(status.toString(), cause);
        if (status.isOk()) {
            throw new IllegalArgumentException("a TtrpcException needs a non-OK status");
        }
        this.status = status;
    }

    public TtrpcException(Code code, String message) {
        this(new Status(code, message));
    }

    public Status status() {
        return status;
    }

    public Code code() {
        return status.code();
    }
}
