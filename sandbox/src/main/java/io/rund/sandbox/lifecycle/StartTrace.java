package io.rund.sandbox.lifecycle;

import io.rund.sandbox.guest.GuestStep;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Where one sandbox start spent its time: each step the start took, in order, with how
 * long it took on the host's monotonic clock, and how it ended. A start marks each step as
 * it enters it ({@link Recorder#enter}); the trace is kept after the sandbox is gone, so that a
 * start that is over (a {@code ctr run --rm}) can still be read ({@link Kept}, `rund trace`).
 *
 * @param id the sandbox
 * @param began wall-clock time the start began
 * @param boot how its VM started ("clone KEY (spare)", "cold"), once known
 * @param steps each step and its length, in the order taken
 * @param totalMicros the whole start
 * @param error why the start failed; empty when it started
 */
public record StartTrace(String id, Instant began, String boot, List<Step> steps, long totalMicros, String error) {

    /**
     * One step: its name (as a failed start names it in its error), its length, and the
     * steps the guest's agent reported taking within it, on the guest's clock (empty for a
     * step of the host's alone).
     */
    public record Step(String name, long micros, List<Step> guest) {
        public Step {
            guest = List.copyOf(guest);
        }

        public Step(String name, long micros) {
            this(name, micros, List.of());
        }
    }

    /** The steps of one start under way; confined to the thread that runs the start. */
    static final class Recorder {
        private final String id;
        private final Instant began = Instant.now();
        private final long start = System.nanoTime();
        private final List<Step> steps = new ArrayList<>();
        private String current;
        private List<Step> guest = List.of();
        private long since = start;

        Recorder(String id) {
            this.id = id;
        }

        /** Ends the step under way, if any, and begins {@code step}. */
        void enter(String step) {
            long now = System.nanoTime();
            if (current != null) {
                steps.add(new Step(current, (now - since) / 1_000, guest));
            }
            current = step;
            guest = List.of();
            since = now;
        }

        /** Records the steps the guest reported for the step under way. */
        void guest(List<GuestStep> reported) {
            guest = reported.stream().map(g -> new Step(g.name(), g.micros())).toList();
        }

        /** The finished trace: the step under way ends now. */
        StartTrace finish(String boot, String error) {
            enter(null);
            return new StartTrace(id, began, boot, List.copyOf(steps), (System.nanoTime() - start) / 1_000,
                    error == null ? "" : error);
        }
    }

    /** Each step and its milliseconds, in order, as the daemon logs them after a start's total. */
    public String summary() {
        StringBuilder b = new StringBuilder();
        for (Step s : steps) {
            b.append(b.isEmpty() ? "" : ", ").append(s.name()).append(' ').append(s.micros() / 1_000).append(" ms");
            for (int i = 0; i < s.guest().size(); i++) {
                Step g = s.guest().get(i);
                b.append(i == 0 ? " (guest: " : ", ").append(g.name()).append(' ').append(g.micros() / 1_000).append(" ms")
                        .append(i == s.guest().size() - 1 ? ")" : "");
            }
        }
        return b.toString();
    }

    /**
     * The traces of the latest starts, newest last, at most {@link #KEPT} of them (a few
     * hundred bytes each): a start's own is kept after its sandbox is gone, until
     * {@code KEPT} later starts have pushed it out. Only the latest start of an id is kept.
     */
    public static final class Kept {
        /** How many traces are kept. */
        public static final int KEPT = 512;
        private final Map<String, StartTrace> byId = new LinkedHashMap<>(64, 0.75f, false) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<String, StartTrace> eldest) {
                return size() > KEPT;
            }
        };

        synchronized void add(StartTrace t) {
            byId.remove(t.id()); // a newer start of the same id moves to the end
            byId.put(t.id(), t);
        }

        /** The latest start of sandbox {@code id}, if it is still kept. */
        public synchronized Optional<StartTrace> of(String id) {
            return Optional.ofNullable(byId.get(id));
        }

        /** Every kept trace, oldest first. */
        public synchronized List<StartTrace> all() {
            return List.copyOf(byId.values());
        }
    }
}
