package io.rund.ttrpc;

import java.util.concurrent.TimeoutException;

/**
 * Turns whatever a handler threw into the status its caller receives. This is the one
 * place where failures become codes: a server has exactly one mapper, and an application
 * with its own fault types wraps {@link #standard()} with {@link #orElse(ErrorMapper)}.
 */
@FunctionalInterface
public interface ErrorMapper {

    /** The status for {@code failure}, or null when this mapper does not know it. */
    Status map(Throwable failure);

    /**
     * The library's mapping: a {@link TtrpcException} keeps its status; an
     * {@link UnsupportedOperationException} is UNIMPLEMENTED; a {@link TimeoutException}
     * is DEADLINE_EXCEEDED. Anything else is not known here.
     */
    static ErrorMapper standard() {
        return failure -> switch (failure) {
            case TtrpcException e -> e.status();
            case UnsupportedOperationException e -> new Status(Code.UNIMPLEMENTED, message(e));
            case TimeoutException e -> new Status(Code.DEADLINE_EXCEEDED, message(e));
            default -> null;
        };
    }

    /** This mapper, and where it does not know a failure, {@code next}. */
    default ErrorMapper orElse(ErrorMapper next) {
        return failure -> {
            Status s = map(failure);
            return s != null ? s : next.map(failure);
        };
    }

    /** The final status: UNKNOWN, with the failure's own words, for what no mapper knew. */
    default Status resolve(Throwable failure) {
        Status s = map(failure);
        return s != null ? s : new Status(Code.UNKNOWN, failure.toString());
    }

    private static String message(Throwable t) {
        return t.getMessage() != null ? t.getMessage() : t.toString();
    }
}
