package io.rund.ttrpc;

import java.time.Duration;
import java.util.OptionalLong;

/**
 * What a handler knows about the call it serves.
 *
 * @param deadlineNanos the caller's deadline on the {@link System#nanoTime()} clock, if it
 *     sent one
 */
public record CallContext(String service, String method, Metadata metadata, PeerCredentials peer,
        OptionalLong deadlineNanos) {

    /** Time left before the caller gives up; {@link Duration#ZERO} once passed, null without deadline. */
    public Duration remaining() {
        if (deadlineNanos.isEmpty()) {
            return null;
        }
        long left = deadlineNanos.getAsLong() - System.nanoTime();
        return Duration.ofNanos(Math.max(0, left));
    }
}
