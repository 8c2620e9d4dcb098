package io.rund.ttrpc;

import java.time.Duration;
import java.util.Objects;

/**
 * How one client call is made.
 *
 * @param timeout how long to wait for the answer; null waits for as long as the
 *     connection lives. The server is told too (Request.timeout_nano).
 * @param metadata sent with the request
 */
public record CallOptions(Duration timeout, Metadata metadata) {

    public static final CallOptions DEFAULT = new CallOptions(null, Metadata.EMPTY);

    public CallOptions {
        Objects.requireNonNull(metadata, "metadata");
        if (timeout != null && (timeout.isNegative() || timeout.isZero())) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
    }

    public CallOptions withTimeout(Duration timeout) {
        return new CallOptions(timeout, metadata);
    }

    public CallOptions withMetadata(Metadata metadata) {
        return new CallOptions(timeout, metadata);
    }
}
