package io.rund.shim.cli;

import io.rund.control.v1.BuildTemplateRequest;
import io.rund.control.v1.BuildTemplateResponse;
import io.rund.control.v1.SandboxStatus;
import io.rund.control.v1.StatusRequest;
import io.rund.control.v1.StatusResponse;
import io.rund.control.v1.StartTrace;
import io.rund.control.v1.TraceRequest;
import io.rund.control.v1.TraceResponse;
import io.rund.control.v1.TraceStep;
import io.rund.shim.Version;
import io.rund.shim.control.Daemon;
import io.rund.shim.control.RundConfig;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.TtrpcException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

/**
 * The {@code rund} command: {@code rund check} reports whether this host can run rund's
 * sandboxes; {@code rund status}, {@code rund trace} and {@code rund template build} ask
 * the node's daemon, over its control socket, what it runs, where its latest starts spent
 * their time, or to build its VM template; {@code rund version}
 * prints this build's version. The socket is {@code <state_dir>/rund.sock} from the
 * daemon's configuration, or RUND_CONTROL_SOCKET. Exit codes: 0 done (check: the host can
 * run a sandbox), 1 the daemon failed or is not there (check: a check failed), 2 usage.
 */
public final class Cli {

    static final String USAGE = """
            usage: rund check              can this host run sandboxes: accelerator, QEMU, guest, store,
                                           cgroups, containerd, templates, daemon (works with the daemon down)
                   rund status             what the daemon runs: accelerator, template, spare VMs, sandboxes
                   rund template build     build the VM template for the daemon's guest now, and remove
                                           the templates of other keys
                   rund trace [SANDBOX]    where the latest starts spent their time, step by step (the
                                           daemon keeps the latest 512, also of sandboxes since gone)
                   rund version            this build's version, commit and date (and the daemon's, if up)
                   rund help               this text""";
    private static final String SERVICE = "rund.control.v1.Control";

    private Cli() {}

    public static void main(String[] args) {
        System.exit(run(List.of(args), System.getenv(), System.out, System.err));
    }

    static int run(List<String> args, Map<String, String> env, PrintStream out, PrintStream err) {
        String command = String.join(" ", args);
        switch (command) {
            case "help", "--help", "-h" -> {
                out.println(USAGE);
                return 0;
            }
            case "status", "template build", "check", "version", "--version" -> {
                // below: these need the configuration
            }
            default -> {
                if (!args.isEmpty() && args.size() <= 2 && args.get(0).equals("trace")) {
                    break; // below
                }
                err.println("rund: " + (args.isEmpty() ? "no command" : "unknown command: " + command));
                err.println(USAGE);
                return 2;
            }
        }
        Daemon.Config config;
        try {
            config = RundConfig.load(env);
        } catch (IOException | NumberFormatException e) {
            err.println("rund: configuration: " + e.getMessage());
            return 2;
        }
        Path socket = env.containsKey("RUND_CONTROL_SOCKET") ? Path.of(env.get("RUND_CONTROL_SOCKET"))
                : config.stateDir().resolve("rund.sock");
        if (command.equals("check")) {
            return check(config, env, socket, out);
        }
        if (command.equals("version") || command.equals("--version")) {
            out.print(Version.CURRENT.describe("rund"));
            out.println("  Java:       " + Runtime.version());
            out.println("  Daemon:     " + daemonVersion(socket));
            return 0;
        }
        try {
            if (command.equals("status")) {
                print(status(socket, Duration.ofSeconds(10)), out);
                return 0;
            }
            if (args.get(0).equals("trace")) {
                try (Client c = Client.connect(socket)) {
                    TraceResponse r = c.call(SERVICE, "Trace", TraceRequest.newBuilder().setId(args.size() > 1 ? args.get(1) : "")
                            .build(), TraceResponse.parser(), CallOptions.DEFAULT.withTimeout(Duration.ofSeconds(10)));
                    print(r, args.size() > 1, out);
                }
                return 0;
            }
            try (Client c = Client.connect(socket)) {
                BuildTemplateResponse r = c.call(SERVICE, "BuildTemplate", BuildTemplateRequest.getDefaultInstance(),
                        BuildTemplateResponse.parser(), CallOptions.DEFAULT.withTimeout(Duration.ofMinutes(5)));
                out.println("template " + r.getKey() + ": " + (r.getBuilt() ? "built in " + r.getBuildMillis() + " ms"
                        : "exists") + ", " + r.getDir());
                for (String old : r.getRemovedList()) {
                    out.println("template " + old + ": removed");
                }
            }
            return 0;
        } catch (IOException e) {
            err.println("rund: no daemon answers on " + socket + ": " + e.getMessage());
            return 1;
        } catch (TtrpcException e) {
            err.println("rund: " + command + ": " + e.getMessage());
            return 1;
        }
    }

    /** Prints one line per check and a verdict; 0 when nothing failed. */
    private static int check(Daemon.Config config, Map<String, String> env, Path socket, PrintStream out) {
        List<HostCheck.Line> lines = HostCheck.run(config, env, socket);
        for (HostCheck.Line l : lines) {
            out.printf("%-4s  %-16s %s%n", l.level().word(), l.check(), l.detail());
        }
        List<String> failed = lines.stream().filter(l -> l.level() == HostCheck.Level.FAIL).map(HostCheck.Line::check).toList();
        long warned = lines.stream().filter(l -> l.level() == HostCheck.Level.WARN).count();
        if (failed.isEmpty()) {
            out.println("rund can run sandboxes on this host" + (warned == 0 ? "" : " (" + warned + " warning(s) above)"));
            return 0;
        }
        out.println("rund cannot run sandboxes on this host: " + String.join(", ", failed) + " failed");
        return 1;
    }

    /** The daemon's build, or why none answers: `rund version` works without a daemon. */
    private static String daemonVersion(Path socket) {
        try {
            StatusResponse s = status(socket, Duration.ofSeconds(5));
            return s.getVersion() + ", pid " + s.getPid();
        } catch (IOException | TtrpcException e) {
            return "not running (" + socket + ")";
        }
    }

    /** One Status call on the control socket at {@code socket}: `rund status`, `rund version`, `rund check`. */
    static StatusResponse status(Path socket, Duration timeout) throws IOException, TtrpcException {
        try (Client c = Client.connect(socket)) {
            return c.call(SERVICE, "Status", StatusRequest.getDefaultInstance(), StatusResponse.parser(),
                    CallOptions.DEFAULT.withTimeout(timeout));
        }
    }

    /** One start step by step ({@code detailed}), or one line per start. */
    private static void print(TraceResponse r, boolean detailed, PrintStream out) {
        String row = "%-24s %-24s %9s  %-40s %s%n";
        if (!detailed) {
            out.printf(row, "SANDBOX", "BEGAN", "TOTAL", "BOOT", "RESULT");
        }
        for (StartTrace t : r.getStartsList()) {
            String began = java.time.Instant.ofEpochMilli(t.getBeganUnixMillis()).toString();
            String result = t.getError().isEmpty() ? "started" : "failed: " + t.getError();
            if (!detailed) {
                out.printf(row, t.getId(), began, millis(t.getTotalMicros()), t.getBoot(), result);
                continue;
            }
            out.println("sandbox  " + t.getId());
            out.println("began    " + began);
            out.println("boot     " + (t.getBoot().isEmpty() ? "-" : t.getBoot()));
            out.println("result   " + result);
            out.println();
            for (TraceStep s : t.getStepsList()) {
                out.printf("  %-40s %9s%n", s.getName(), millis(s.getMicros()));
                for (TraceStep g : s.getGuestList()) { // the guest's own steps within it, on its clock
                    out.printf("    guest: %-32s %9s%n", g.getName(), millis(g.getMicros()));
                }
            }
            out.printf("  %-40s %9s%n", "total", millis(t.getTotalMicros()));
        }
    }

    private static String millis(long micros) {
        return String.format(java.util.Locale.ROOT, "%.1f ms", micros / 1000.0); // a point, whatever the locale: scripts read it
    }

    private static void print(StatusResponse s, PrintStream out) {
        out.println("daemon       pid " + s.getPid() + ", rund " + s.getVersion());
        out.println("cgroup pool  " + s.getCgroupPool());
        out.println("accelerator  " + s.getAccelerator());
        if (s.getTemplates().isEmpty()) {
            out.println("templates    off: every VM boots cold");
        } else {
            out.println("templates    " + s.getTemplates() + ", current " + s.getTemplateKey()
                    + (s.getTemplateBuilt() ? "" : " (not built yet)"));
            out.println("spare VMs    " + s.getSpareVmsReady() + " ready of " + s.getSpareVms());
        }
        out.println("layer store  " + s.getLayerStore());
        out.println("standby      " + (s.getStandbyPid() == 0 ? "none" : "pid " + s.getStandbyPid()
                + ", waiting to take over"));
        out.println();
        String row = "%-24s %-9s %-32s %-8s %-10s %s%n";
        out.printf(row, "SANDBOX", "PHASE", "BOOT", "VM PID", "CGROUP", "TASKS");
        for (SandboxStatus b : s.getSandboxesList()) {
            out.printf(row, b.getId(), b.getPhase(), b.getBoot(), b.getVmPid(), b.getCgroup(),
                    b.getTasksList().stream().sorted().reduce((x, y) -> x + "," + y).orElse("-"));
        }
    }
}
