package io.rund.shim;

import java.util.concurrent.CountDownLatch;

/** rund's daemon: wires the parts from the environment (see Daemon.Config) and serves until SIGTERM. */
public final class Main {

    private Main() {}

    public static void main(String[] args) throws Exception {
        Daemon daemon = new Daemon(Daemon.Config.fromEnvironment());
        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(Thread.ofPlatform().unstarted(() -> {
            daemon.close();
            stop.countDown();
        }));
        stop.await();
    }
}
