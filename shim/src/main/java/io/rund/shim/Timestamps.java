package io.rund.shim;

import com.google.protobuf.Timestamp;
import java.time.Instant;

/** The one conversion of a JDK instant to the protobuf Timestamp containerd's messages carry, and to a state file's number. */
public final class Timestamps {

    private Timestamps() {}

    public static Timestamp of(Instant t) {
        return Timestamp.newBuilder().setSeconds(t.getEpochSecond()).setNanos(t.getNano()).build();
    }

    /** {@code t} as nanoseconds since the epoch (good until 2262), for state files. */
    public static long nanos(Instant t) {
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }

    public static Instant ofNanos(long nanos) {
        return Instant.ofEpochSecond(Math.floorDiv(nanos, 1_000_000_000L), Math.floorMod(nanos, 1_000_000_000L));
    }
}
