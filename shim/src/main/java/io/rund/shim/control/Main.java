package io.rund.shim.control;

import java.util.concurrent.CountDownLatch;

/** rund's daemon: wires the parts from the environment (see Daemon.Config) and serves until SIGTERM. */
public final class Main {

    /** When main began (System.nanoTime): a restart's time is logged from here. */
    static long began;

    private Main() {}

    public static void main(String[] args) throws Exception {
        began = System.nanoTime();
        Daemon.Config config;
        try {
            config = RundConfig.load(System.getenv());
        } catch (java.io.IOException | NumberFormatException e) {
            System.err.println("rund: configuration: " + e.getMessage());
            System.exit(2);
            return;
        }
        java.nio.channels.FileLock lock = Daemon.lock(config.stateDir());
        if (lock == null) {
            if (!config.standby()) {
                System.err.println("rund: another daemon holds " + config.stateDir().resolve("rund.lock") + "; leaving it to serve");
                return;
            }
            // Another daemon serves: this one waits, warm, to take over from it (or leaves, if one waits already).
            lock = Standby.await(config);
            if (lock == null) {
                System.exit(Standby.NOT_NEEDED);
                return;
            }
            began = System.nanoTime();
            try {
                config = RundConfig.load(System.getenv()); // it may have changed while this one waited
            } catch (java.io.IOException | NumberFormatException e) {
                System.err.println("rund: configuration: " + e.getMessage());
                System.exit(2);
                return;
            }
        }
        Daemon daemon = new Daemon(config);
        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(Thread.ofPlatform().unstarted(() -> {
            daemon.close();
            stop.countDown();
        }));
        stop.await();
        // The lock's channel is closed (and the lock let go) when it is collected: not before the end.
        java.lang.ref.Reference.reachabilityFence(lock);
    }
}
