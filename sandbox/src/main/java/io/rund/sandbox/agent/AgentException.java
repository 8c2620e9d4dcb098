package io.rund.sandbox.agent;

import io.rund.ttrpc.TtrpcException;

/** A call to the guest agent failed; {@link #kind()} says how, the message says what. */
public final class AgentException extends Exception {

    private static final long serialVersionUID = 1L;

    /** The ways an agent call fails that callers act on differently. */
    public enum Kind {
        /** No such container or process in the guest. */
        NOT_FOUND,
        /** Something we sent was malformed; a bug on our side or bad user input. */
        INVALID_ARGUMENT,
        ALREADY_EXISTS,
        /** The guest object is in the wrong state for the call. */
        FAILED_PRECONDITION,
        /** No answer in time. */
        DEADLINE_EXCEEDED,
        /** The connection to the agent is gone. */
        UNAVAILABLE,
        /** A limit of the agent. */
        RESOURCE_EXHAUSTED,
        /** The agent does not know the call (an older agent). */
        UNIMPLEMENTED,
        /** The agent failed, or answered something we cannot accept. */
        INTERNAL,
    }

    private final Kind kind;

    AgentException(Kind kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public Kind kind() {
        return kind;
    }

    /** The one place where ttrpc codes from the agent become kinds. */
    static AgentException from(String method, TtrpcException e) {
        Kind kind = switch (e.code()) {
            case NOT_FOUND -> Kind.NOT_FOUND;
            case INVALID_ARGUMENT, OUT_OF_RANGE -> Kind.INVALID_ARGUMENT;
            case ALREADY_EXISTS -> Kind.ALREADY_EXISTS;
            case FAILED_PRECONDITION, ABORTED -> Kind.FAILED_PRECONDITION;
            case DEADLINE_EXCEEDED, CANCELLED -> Kind.DEADLINE_EXCEEDED;
            case UNAVAILABLE -> Kind.UNAVAILABLE;
            case RESOURCE_EXHAUSTED -> Kind.RESOURCE_EXHAUSTED;
            case UNIMPLEMENTED -> Kind.UNIMPLEMENTED;
            default -> Kind.INTERNAL;
        };
        return new AgentException(kind, "agent " + method + ": " + e.status().message(), e);
    }

    /** The guest answered something that breaks the protocol's promises. */
    static AgentException badAnswer(String method, String what) {
        return new AgentException(Kind.INTERNAL, "agent " + method + ": rejected answer: " + what, null);
    }

}
