package io.rund.shim;

import com.google.protobuf.Timestamp;
import java.time.Instant;

/** The one conversion of a JDK instant to the protobuf Timestamp containerd's messages carry. */
public final class Timestamps {

    private Timestamps() {}

    public static Timestamp of(Instant t) {
        return Timestamp.newBuilder().setSeconds(t.getEpochSecond()).setNanos(t.getNano()).build();
    }
}
