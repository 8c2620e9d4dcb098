package io.rund.shim.control;

import java.util.concurrent.CountDownLatch;

/** rund's daemon: wires the parts from the environment (see Daemon.Config) and serves until SIGTERM. */
public final class Main {

    private Main() {}

    public static void main(String[] args) throws Exception {
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
            System.err.println("rund: another daemon holds " + config.stateDir().resolve("rund.lock") + "; leaving it to serve");
            return;
        }
        Daemon daemon = new Daemon(config);
        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(Thread.ofPlatform().unstarted(() -> {
            daemon.close();
            stop.countDown();
        }));
        stop.await();
    }
}
