package io.rund.sandbox.lifecycle;

import io.rund.rootfs.RootfsMount;
import java.util.List;
import java.util.Objects;

/**
 * What a sandbox runs: its image (containerd's rootfs mounts), its one container's
 * process, and its resources. Issue 5 fills it from an OCI bundle.
 *
 * @param memoryLimitBytes the container's memory limit; 0 for none
 * @param cpuQuotaMicros per 100 ms period; 0 for none
 * @param process the container's process in full (from an OCI spec); when null, one is
 *     made from args, env, cwd and terminal with a default capability set
 */
public record SandboxSpec(String sandboxId, List<RootfsMount> rootfs, List<String> args, List<String> env, String cwd,
        String hostname, boolean terminal, long memoryLimitBytes, long cpuQuotaMicros,
        io.rund.agent.v1.Process process) {

    public SandboxSpec(String sandboxId, List<RootfsMount> rootfs, List<String> args, List<String> env, String cwd,
            String hostname, boolean terminal, long memoryLimitBytes, long cpuQuotaMicros) {
        this(sandboxId, rootfs, args, env, cwd, hostname, terminal, memoryLimitBytes, cpuQuotaMicros, null);
    }

    public SandboxSpec {
        Objects.requireNonNull(sandboxId, "sandboxId");
        rootfs = List.copyOf(rootfs);
        args = List.copyOf(args);
        env = List.copyOf(env);
        cwd = cwd == null || cwd.isEmpty() ? "/" : cwd;
        hostname = hostname == null ? "" : hostname;
    }
}
