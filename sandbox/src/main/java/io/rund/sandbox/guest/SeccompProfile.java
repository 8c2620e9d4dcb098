package io.rund.sandbox.guest;

import java.util.List;
import java.util.Objects;

/**
 * A seccomp profile as the OCI runtime spec writes it (linux.seccomp), which the guest
 * compiles with libseccomp as runc does and installs in every process of the container.
 *
 * @param defaultErrnoRet null: EPERM
 */
public record SeccompProfile(String defaultAction, Integer defaultErrnoRet, List<String> architectures,
        List<String> flags, List<Rule> syscalls) {

    /** One rule: {@code action} for each of {@code names} when every condition holds. */
    public record Rule(List<String> names, String action, Integer errnoRet, List<Arg> args) {
        public Rule {
            names = List.copyOf(names);
            Objects.requireNonNull(action, "action");
            args = List.copyOf(args);
        }
    }

    /** A condition on argument {@code index}: {@code op} (SCMP_CMP_*) against value (and valueTwo). */
    public record Arg(int index, long value, long valueTwo, String op) {}

    public SeccompProfile {
        Objects.requireNonNull(defaultAction, "defaultAction");
        architectures = List.copyOf(architectures);
        flags = List.copyOf(flags);
        syscalls = List.copyOf(syscalls);
    }
}
