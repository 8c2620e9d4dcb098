package io.rund.sandbox.lifecycle;

import io.rund.sandbox.Fault;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Named points in the daemon's work where a test makes it die (as a SIGKILL would, at that
 * very step) or makes the step fail, to prove that every step leaves nothing behind and
 * that containerd is told the truth. Armed only by configuration (`fault = "POINT=kill"`
 * or `"POINT=fail"` in rund.toml, or RUND_FAULT); unarmed, {@link #at} is one volatile read.
 *
 * <p>A kill is a crash, then a healthy restart: it happens once per arming. Before it halts,
 * the daemon writes the spec into its marker file ({@link #arm(String, Path)}); a daemon that
 * finds the marker naming the spec it was given does not arm it, so the next daemon (which
 * reads the same configuration) finishes what the dead one left instead of dying there too.
 * Whoever arms a kill anew removes the marker. A fail stays armed.
 */
public final class FaultPoints {

    private static final System.Logger LOG = System.getLogger(FaultPoints.class.getName());

    /**
     * Every point, in the order work meets them. {@code start.X}: a sandbox start has just
     * acquired resource X (and {@code start.container}: created its first container, not yet
     * recorded as running); {@code container.add} / {@code container.remove}: a pod's other
     * container is made / removed in the guest, not yet recorded; {@code task.start}: a process
     * started in the guest, not yet recorded; {@code task.exit}: an exit seen, not yet sent to
     * containerd; {@code stop}: a sandbox's containers and VM are ended, nothing else released;
     * {@code spare.refill}: a spare VM was launched, not yet recorded; {@code template.build}: a
     * template's build VM was launched, its guest not yet ready.
     */
    public static final List<String> POINTS = List.of("start.state_dir", "start.cgroup", "start.share", "start.vm",
            "start.pod_network", "start.agent", "start.container", "container.add", "task.start", "task.exit",
            "container.remove", "stop", "spare.refill", "template.build");

    /** What an armed point does. */
    public enum Action {
        /** The daemon halts at once, with status 137, as if killed. */
        KILL,
        /** The step fails with an internal error naming the point. */
        FAIL
    }

    private static volatile String armed;
    private static volatile Action action;
    /** Where a kill leaves its spec (null: nowhere, and it may fire again in the next daemon). */
    private static volatile Path fired;

    private FaultPoints() {}

    /**
     * Arms one point from {@code spec} ("POINT=kill" or "POINT=fail"); empty or null disarms.
     *
     * @throws IllegalArgumentException naming what is wrong in the spec
     */
    public static void arm(String spec) {
        arm(spec, null);
    }

    /**
     * Arms {@code spec} as {@link #arm(String)} does, unless it is a kill that already fired:
     * {@code marker} names it. A kill that fires writes its spec there first.
     *
     * @throws IllegalArgumentException naming what is wrong in the spec
     */
    public static void arm(String spec, Path marker) {
        if (spec == null || spec.isEmpty()) {
            armed = null;
            return;
        }
        int eq = spec.indexOf('=');
        String point = eq < 0 ? spec : spec.substring(0, eq);
        String what = eq < 0 ? "" : spec.substring(eq + 1);
        if (!POINTS.contains(point)) {
            throw new IllegalArgumentException("fault point " + point + " is not one of " + POINTS);
        }
        Action a = switch (what) {
            case "kill" -> Action.KILL;
            case "fail" -> Action.FAIL;
            default -> throw new IllegalArgumentException("fault " + spec + ": the action must be kill or fail, not " + what);
        };
        if (a == Action.KILL && marker != null && spec.equals(readQuietly(marker))) {
            armed = null;
            LOG.log(Level.WARNING, "fault injection: {0} fired in an earlier daemon; not armed again", spec);
            return;
        }
        fired = marker;
        action = a;
        armed = point;
        LOG.log(Level.WARNING, "fault injection armed: {0} at {1}", a, point);
    }

    private static String readQuietly(Path marker) {
        try {
            return Files.readString(marker).strip();
        } catch (IOException e) {
            return null;
        }
    }

    /** Point {@code name} is reached: dies or fails there if it is the armed one. */
    public static void at(String name) throws SandboxException {
        if (!name.equals(armed)) {
            return;
        }
        if (action == Action.KILL) {
            System.err.println("rund: fault injection: dying at " + name);
            Path marker = fired;
            if (marker != null) {
                try {
                    Files.writeString(marker, name + "=kill\n");
                } catch (IOException e) {
                    System.err.println("rund: fault injection: " + marker + ": " + e.getMessage());
                }
            }
            Runtime.getRuntime().halt(137);
        }
        throw new SandboxException(Fault.INTERNAL, "fault injected at " + name, null);
    }
}
