package io.rund.sandbox.agent;

import io.rund.sandbox.Fault;
import io.rund.ttrpc.TtrpcException;

/** A call to the guest agent failed; {@link #kind()} says how (the guest's code, mapped here once), the message says what. */
public final class AgentException extends Exception {

    private static final long serialVersionUID = 1L;

    private final Fault kind;
    private final boolean rejected;

    public AgentException(Fault kind, String message, Throwable cause) {
        this(kind, message, cause, false);
    }

    private AgentException(Fault kind, String message, Throwable cause, boolean rejected) {
        super(message, cause);
        this.kind = kind;
        this.rejected = rejected;
    }

    /** Whether the guest broke the protocol's promises (a hostile or broken guest), not just failed a call. */
    public boolean rejectedAnswer() {
        return rejected;
    }

    public Fault kind() {
        return kind;
    }

    /** The one place where ttrpc codes from the agent become kinds. */
    static AgentException from(String method, TtrpcException e) {
        Fault kind = switch (e.code()) {
            case NOT_FOUND -> Fault.NOT_FOUND;
            case INVALID_ARGUMENT, OUT_OF_RANGE -> Fault.INVALID_ARGUMENT;
            case ALREADY_EXISTS -> Fault.ALREADY_EXISTS;
            case FAILED_PRECONDITION, ABORTED -> Fault.FAILED_PRECONDITION;
            case DEADLINE_EXCEEDED, CANCELLED -> Fault.DEADLINE_EXCEEDED;
            case UNAVAILABLE -> Fault.UNAVAILABLE;
            case RESOURCE_EXHAUSTED -> Fault.RESOURCE_EXHAUSTED;
            case UNIMPLEMENTED -> Fault.UNIMPLEMENTED;
            default -> Fault.INTERNAL;
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
        return new AgentException(Fault.INTERNAL, "agent " + method + ": rejected answer: " + what, null, true);
    }

}
