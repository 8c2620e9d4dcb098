package io.rund.ttrpc;

import java.time.Duration;
import java.util.function.BooleanSupplier;

/** Waits for a condition by polling every 20 ms, up to a bound; never a bare sleep. */
final class Poll {

    private Poll() {}

    static boolean until(Duration bound, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + bound.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                return false;
            }
            Thread.sleep(20);
        }
        return true;
    }
}
