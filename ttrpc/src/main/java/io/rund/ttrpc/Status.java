package io.rund.ttrpc;

import java.util.Objects;

/** The outcome of one call: a code and a message for people. */
public record Status(Code code, String message) {

    public static final Status OK = new Status(Code.OK, "");

    public Status {
        Objects.requireNonNull(code, "code");
        message = message == null ? "" : message;
    }

    public static Status of(Code code, String format, Object... args) {
        return new Status(code, args.length == 0 ? format : String.format(format, args));
    }

    public boolean isOk() {
        return code == Code.OK;
    }

    public TtrpcException asException() {
        return new TtrpcException(this);
    }

    io.rund.ttrpc.wire.Status toWire() {
        return io.rund.ttrpc.wire.Status.newBuilder().setCode(code.value()).setMessage(message).build();
    }

    static Status fromWire(io.rund.ttrpc.wire.Status wire) {
        return new Status(Code.fromValue(wire.getCode()), wire.getMessage());
    }

    @Override
    public String toString() {
        return message.isEmpty() ? code.name() : code.name() + ": " + message;
    }
}
