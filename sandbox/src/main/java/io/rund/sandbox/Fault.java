package io.rund.sandbox;

/**
 * How a request to rund failed, in the terms callers act on. The one fault vocabulary of the
 * daemon: the agent client maps the guest's ttrpc codes to it, the sandbox layer raises it,
 * and the task adapter maps it to the code containerd sees (StatusMapper). Nothing else
 * translates faults, and no fault is chosen by reading a message.
 */
public enum Fault {
    /** No such sandbox, container or process. */
    NOT_FOUND,
    /** What was asked is malformed or cannot be honoured: bad user input, named in the message. */
    INVALID_ARGUMENT,
    ALREADY_EXISTS,
    /** The object is in the wrong state for the call. */
    FAILED_PRECONDITION,
    /** No answer in time. */
    DEADLINE_EXCEEDED,
    /** The guest (or its connection) is gone. */
    UNAVAILABLE,
    /** A limit was reached. */
    RESOURCE_EXHAUSTED,
    /** The call is not implemented (by rund, or by an older agent). */
    UNIMPLEMENTED,
    /** rund or the guest failed, or answered something that cannot be accepted. */
    INTERNAL,
    /**
     * The daemon is stopping and did not run the call (or gave up waiting in it before it
     * did anything): the endpoint's relay sends it to the next daemon (shim/launcher/relay.c).
     */
    NOT_RUN,
}
