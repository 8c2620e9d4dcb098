package io.rund.sandbox.guest;

import java.util.List;
import java.util.Objects;

/**
 * A process as the guest runs it: an OCI process, the fields rund applies.
 *
 * @param capabilities capability names ("CAP_CHOWN") per set; what a set does not name is dropped
 * @param terminal a pseudo-terminal instead of pipes
 * @param umask null: 0022
 * @param oomScoreAdj null: inherited
 */
public record ProcessSpec(List<String> args, List<String> env, String cwd, int uid, int gid,
        List<Integer> additionalGids, List<Rlimit> rlimits, boolean noNewPrivileges, Capabilities capabilities,
        boolean terminal, Integer umask, Integer oomScoreAdj) {

    /** A resource limit by its OCI name ("RLIMIT_NOFILE"). */
    public record Rlimit(String type, long soft, long hard) {
        public Rlimit {
            Objects.requireNonNull(type, "type");
        }
    }

    /** The five capability sets of a process. */
    public record Capabilities(List<String> bounding, List<String> effective, List<String> permitted,
            List<String> inheritable, List<String> ambient) {

        /** No capability in any set. */
        public static final Capabilities NONE = new Capabilities(List.of(), List.of(), List.of(), List.of(), List.of());

        public Capabilities {
            bounding = List.copyOf(bounding);
            effective = List.copyOf(effective);
            permitted = List.copyOf(permitted);
            inheritable = List.copyOf(inheritable);
            ambient = List.copyOf(ambient);
        }
    }

    public ProcessSpec {
        args = List.copyOf(args);
        env = List.copyOf(env);
        cwd = cwd == null || cwd.isEmpty() ? "/" : cwd;
        additionalGids = List.copyOf(additionalGids);
        rlimits = List.copyOf(rlimits);
        Objects.requireNonNull(capabilities, "capabilities");
    }

    /** {@code args} as root in {@code cwd} with {@code env}, no capabilities, no limits, no terminal. */
    public static ProcessSpec of(List<String> args, List<String> env, String cwd) {
        return new ProcessSpec(args, env, cwd, 0, 0, List.of(), List.of(), false, Capabilities.NONE, false, null, null);
    }

    public ProcessSpec withTerminal(boolean terminal) {
        return new ProcessSpec(args, env, cwd, uid, gid, additionalGids, rlimits, noNewPrivileges, capabilities, terminal,
                umask, oomScoreAdj);
    }

    public ProcessSpec withCapabilities(Capabilities capabilities) {
        return new ProcessSpec(args, env, cwd, uid, gid, additionalGids, rlimits, noNewPrivileges, capabilities, terminal,
                umask, oomScoreAdj);
    }
}
