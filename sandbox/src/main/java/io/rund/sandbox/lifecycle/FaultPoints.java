package io.rund.sandbox.lifecycle;

import io.rund.sandbox.Fault;
import java.lang.System.Logger.Level;
import java.util.List;

/**
 * Named points in the daemon's work where a test makes it die (as a SIGKILL would, at that
 * very step) or makes the step fail, to prove that every step leaves nothing behind and
 * that containerd is told the truth. Armed only by configuration (`fault = "POINT=kill"`
 * or `"POINT=fail"` in rund.toml, or RUND_FAULT); unarmed, {@link #at} is one volatile read.
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

    private FaultPoints() {}

    /**
     * Arms one point from {@code spec} ("POINT=kill" or "POINT=fail"); empty or null disarms.
     *
     * @throws IllegalArgumentException naming what is wrong in the spec
     */
    public static void arm(String spec) {
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
        action = a;
        armed = point;
        LOG.log(Level.WARNING, "fault injection armed: {0} at {1}", a, point);
    }

    /** Point {@code name} is reached: dies or fails there if it is the armed one. */
    public static void at(String name) throws SandboxException {
        if (!name.equals(armed)) {
            return;
        }
        if (action == Action.KILL) {
            System.err.println("rund: fault injection: dying at " + name);
            Runtime.getRuntime().halt(137);
        }
        throw new SandboxException(Fault.INTERNAL, "fault injected at " + name, null);
    }
}
