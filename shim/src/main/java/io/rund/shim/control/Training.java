package io.rund.shim.control;

/**
 * The training run of the daemon's ahead-of-time cache (JDK 25: {@code -XX:AOTCacheOutput},
 * made by hack/install): a daemon's start rehearsed on a private node ({@link Rehearsal}).
 * A daemon that starts from the cache finds the classes of its start loaded and linked and
 * their first profiles made: a cold start takes a third less (docs/BENCHMARKS.md, "restart").
 */
public final class Training {

    private Training() {}

    public static void main(String[] args) throws Exception {
        Rehearsal.run(RundConfig.load(System.getenv()), 20);
    }
}
