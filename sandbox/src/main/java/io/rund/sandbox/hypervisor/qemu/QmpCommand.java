package io.rund.sandbox.hypervisor.qemu;

import java.util.Map;

/** The QMP commands rund sends, typed; each knows its wire name and arguments. */
public sealed interface QmpCommand {

    String name();

    default Map<String, Object> arguments() {
        return Map.of();
    }

    /** Pauses every vCPU. */
    record Stop() implements QmpCommand {
        public String name() {
            return "stop";
        }
    }

    /** Resumes the vCPUs. */
    record Cont() implements QmpCommand {
        public String name() {
            return "cont";
        }
    }

    /** Ends QEMU at once (the guest is not asked). */
    record Quit() implements QmpCommand {
        public String name() {
            return "quit";
        }
    }

    record QueryStatus() implements QmpCommand {
        public String name() {
            return "query-status";
        }
    }
}
