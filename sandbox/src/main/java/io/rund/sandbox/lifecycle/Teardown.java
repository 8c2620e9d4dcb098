package io.rund.sandbox.lifecycle;

import java.lang.System.Logger.Level;
import java.util.ArrayDeque;
import java.util.Deque;

/**
 * How a sandbox's resources go: each step of a start that acquires something (a
 * {@link Resource}: state directory, pool cgroup, share and helper, VM, pod network, agent
 * connection; a spare VM's, and a reserved uid) pushes its release here at once. A start that fails runs them; the sandbox a
 * start made keeps them, and its stop runs them. Either way in reverse order of
 * acquisition. Recovery, which has only the disk, ends what a dead daemon left in the same
 * order, by {@link Resource#recover}.
 *
 * <p>Threads: pushed by one start; run once (later calls find nothing left).
 */
final class Teardown {

    private static final System.Logger LOG = System.getLogger(Teardown.class.getName());

    /** Releases one resource. */
    interface Step {
        void run() throws Exception;
    }

    private record Named(String what, Step step) {}

    private final String sandboxId;
    private final Deque<Named> steps = new ArrayDeque<>();

    Teardown(String sandboxId) {
        this.sandboxId = sandboxId;
    }

    /** Registers the release of {@code what}, a {@code kind} of resource just acquired. */
    synchronized void push(Resource kind, String what, Step step) {
        steps.push(new Named(kind + " (" + what + ")", step));
    }

    /** Releases everything pushed, newest first; a failed release is logged and the rest still run. */
    void run() {
        while (true) {
            Named n;
            synchronized (this) {
                n = steps.poll();
            }
            if (n == null) {
                return;
            }
            try {
                n.step().run();
            } catch (Exception e) {
                if (e instanceof InterruptedException) {
                    Thread.currentThread().interrupt();
                }
                LOG.log(Level.WARNING, "sandbox={0}: release {1}: {2}", sandboxId, n.what(), e.getMessage());
            }
        }
    }
}
