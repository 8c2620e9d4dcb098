package io.rund.shim;

import io.rund.control.v1.BuildTemplateRequest;
import io.rund.control.v1.BuildTemplateResponse;
import io.rund.control.v1.SandboxStatus;
import io.rund.control.v1.StatusRequest;
import io.rund.control.v1.StatusResponse;
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
 * The {@code rund} command: asks the node's daemon, over its control socket, what it runs
 * ({@code rund status}) or to build its VM template ({@code rund template build}). The
 * socket is {@code <state_dir>/rund.sock} from the daemon's configuration, or
 * RUND_CONTROL_SOCKET. Exit codes: 0 done, 1 the daemon failed or is not there, 2 usage.
 */
public final class Cli {

    static final String USAGE = """
            usage: rund status             what the daemon runs: accelerator, template, spare VMs, sandboxes
                   rund template build     build the VM template for the daemon's guest now, and remove
                                           the templates of other keys""";
    private static final String SERVICE = "rund.control.v1.Control";

    private Cli() {}

    public static void main(String[] args) {
        System.exit(run(List.of(args), System.getenv(), System.out, System.err));
    }

    static int run(List<String> args, Map<String, String> env, PrintStream out, PrintStream err) {
        String command = String.join(" ", args);
        if (!command.equals("status") && !command.equals("template build")) {
            err.println("rund: " + (args.isEmpty() ? "no command" : "unknown command: " + command));
            err.println(USAGE);
            return 2;
        }
        Path socket;
        try {
            socket = env.containsKey("RUND_CONTROL_SOCKET") ? Path.of(env.get("RUND_CONTROL_SOCKET"))
                    : RundConfig.load(env).stateDir().resolve("rund.sock");
        } catch (IOException | NumberFormatException e) {
            err.println("rund: configuration: " + e.getMessage());
            return 2;
        }
        try (Client c = Client.connect(socket)) {
            if (command.equals("status")) {
                print(c.call(SERVICE, "Status", StatusRequest.getDefaultInstance(), StatusResponse.parser(),
                        CallOptions.DEFAULT.withTimeout(Duration.ofSeconds(10))), out);
            } else {
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

    private static void print(StatusResponse s, PrintStream out) {
        out.println("daemon       pid " + s.getPid());
        out.println("accelerator  " + s.getAccelerator());
        if (s.getTemplates().isEmpty()) {
            out.println("templates    off: every VM boots cold");
        } else {
            out.println("templates    " + s.getTemplates() + ", current " + s.getTemplateKey()
                    + (s.getTemplateBuilt() ? "" : " (not built yet)"));
            out.println("spare VMs    " + s.getSpareVmsReady() + " ready of " + s.getSpareVms());
        }
        out.println();
        String row = "%-24s %-9s %-32s %-8s %-10s %s%n";
        out.printf(row, "SANDBOX", "PHASE", "BOOT", "VM PID", "CGROUP", "TASKS");
        for (SandboxStatus b : s.getSandboxesList()) {
            out.printf(row, b.getId(), b.getPhase(), b.getBoot(), b.getVmPid(), b.getCgroup(),
                    b.getTasksList().stream().sorted().reduce((x, y) -> x + "," + y).orElse("-"));
        }
    }
}
