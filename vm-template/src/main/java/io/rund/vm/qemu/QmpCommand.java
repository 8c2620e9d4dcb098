package io.rund.vm.qemu;

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

    /**
     * Migration with x-ignore-shared: RAM in a file-backed region is left out of the
     * stream (a clone maps the same file), so only device state travels.
     */
    record IgnoreShared() implements QmpCommand {
        public String name() {
            return "migrate-set-capabilities";
        }

        @Override
        public Map<String, Object> arguments() {
            return Map.of("capabilities", java.util.List.of(Map.of("capability", "x-ignore-shared", "state", true)));
        }
    }

    /** Sends the VM's state to {@code uri} (e.g. "file:/path"). */
    record Migrate(String uri) implements QmpCommand {
        public String name() {
            return "migrate";
        }

        @Override
        public Map<String, Object> arguments() {
            return Map.of("uri", uri);
        }
    }

    /** Loads a VM's state from {@code uri} into a QEMU started with -incoming defer. */
    record MigrateIncoming(String uri) implements QmpCommand {
        public String name() {
            return "migrate-incoming";
        }

        @Override
        public Map<String, Object> arguments() {
            return Map.of("uri", uri);
        }
    }

    record QueryMigrate() implements QmpCommand {
        public String name() {
            return "query-migrate";
        }
    }
}
