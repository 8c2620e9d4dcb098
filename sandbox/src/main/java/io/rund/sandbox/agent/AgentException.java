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
        return new AgentException(kind, "agent " + method + ": " + guestText(e.status().message()), e);
    }

    /** The most of a guest's error text that reaches logs and containerd. */
    static final int MAX_GUEST_TEXT = 1024;

    /**
     * A string the guest wrote, made safe to log and to hand to containerd: at most
     * {@link #MAX_GUEST_TEXT} characters (the rest counted, not kept), and every control
     * character (newlines included, which could forge log lines) written as \xNN.
     */
    static String guestText(String s) {
        StringBuilder b = new StringBuilder(Math.min(s.length(), MAX_GUEST_TEXT) + 16);
        int i = 0;
        for (; i < s.length() && b.length() < MAX_GUEST_TEXT; i++) {
            char c = s.charAt(i);
            if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || c == 0x2028 || c == 0x2029) {
                b.append(String.format("\\x%02x", (int) c & 0xffff));
            } else {
                b.append(c);
            }
        }
        if (i < s.length()) {
            b.append("... (").append(s.length() - i).append(" more characters from the guest)");
        }
        return b.toString();
    }

    /** The guest answered something that breaks the protocol's promises. */
    static AgentException badAnswer(String method, String what) {
        return new AgentException(Kind.INTERNAL, "agent " + method + ": rejected answer: " + what, null);
    }

}
