package io.rund.shim.containerd;

import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentException;
import io.rund.sandbox.lifecycle.SandboxException;
import io.rund.shim.TaskFault;
import io.rund.ttrpc.Code;
import io.rund.ttrpc.ErrorMapper;
import io.rund.ttrpc.Status;
import io.rund.ttrpc.TtrpcException;

/**
 * The one place where rund's faults become the codes containerd acts on (NotFound,
 * AlreadyExists, InvalidArgument, FailedPrecondition, Unimplemented, ...). A known fault is
 * never flattened to Unknown; every exception that carries a {@link Fault} maps by it alone.
 */
public final class StatusMapper {

    private StatusMapper() {}

    public static final ErrorMapper MAPPER = ((ErrorMapper) StatusMapper::map).orElse(ErrorMapper.standard());

    private static Status map(Throwable t) {
        return switch (t) {
            case TaskFault f -> new Status(code(f.kind), f.getMessage());
            case SandboxException e -> new Status(code(e.kind()), e.getMessage());
            case AgentException e -> new Status(code(e.kind()), e.getMessage());
            // ABORTED tells the relay "not run, send it to the next daemon" (NOT_RUN): another
            // peer's ABORTED passing through would make it repeat a call that ran.
            case TtrpcException e when e.code() == Code.ABORTED -> new Status(Code.INTERNAL, e.getMessage());
            default -> null;
        };
    }

    static Code code(Fault fault) {
        return switch (fault) {
            case NOT_FOUND -> Code.NOT_FOUND;
            case INVALID_ARGUMENT -> Code.INVALID_ARGUMENT;
            case ALREADY_EXISTS -> Code.ALREADY_EXISTS;
            case FAILED_PRECONDITION -> Code.FAILED_PRECONDITION;
            case DEADLINE_EXCEEDED -> Code.DEADLINE_EXCEEDED;
            case UNAVAILABLE -> Code.UNAVAILABLE;
            case RESOURCE_EXHAUSTED -> Code.RESOURCE_EXHAUSTED;
            case UNIMPLEMENTED -> Code.UNIMPLEMENTED;
            case INTERNAL -> Code.INTERNAL;
            // The relay's signal to keep the request for the next daemon; containerd never sees it.
            case NOT_RUN -> Code.ABORTED;
        };
    }
}
