package io.rund.sandbox.cgroup;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A sandbox's cgroup, claimed from the pool: one directory per hierarchy (v1) or one
 * directory (v2). The hypervisor and its helpers are bound to it, and its limits are the
 * sandbox's resources plus the VM's overhead.
 */
public final class Cgroup {

    /** Limits to write; 0 means unlimited (for {@code cpuShares}: the kernel's default, 1024). */
    public record Limits(long memoryBytes, long cpuQuotaMicros, long cpuPeriodMicros, long pids, long cpuShares) {
        public static final Limits NONE = new Limits(0, 0, 0, 0, 0);

        public Limits(long memoryBytes, long cpuQuotaMicros, long cpuPeriodMicros, long pids) {
            this(memoryBytes, cpuQuotaMicros, cpuPeriodMicros, pids, 0);
        }
    }

    /** cgroup v1 cpu.shares as cgroup v2 cpu.weight, by runc's conversion (2..262144 onto 1..10000). */
    static long weightOf(long shares) {
        return shares <= 0 ? 100 : 1 + ((long) Math.clamp(shares, 2, 262144) - 2) * 9999 / 262142;
    }

    private final CgroupLayout layout;
    private final String sandboxId;
    private final String slot;
    private final Map<String, Path> dirs;

    Cgroup(CgroupLayout layout, String sandboxId, String slot, Map<String, Path> dirs) {
        this.layout = layout;
        this.sandboxId = sandboxId;
        this.slot = slot;
        this.dirs = Map.copyOf(dirs);
    }

    public String sandboxId() {
        return sandboxId;
    }

    /** The directory name on disk: the sandbox id on v1, the slot name on v2. */
    public String slot() {
        return slot;
    }

    public List<Path> dirs() {
        return List.copyOf(dirs.values());
    }

    /** Moves a process (with its threads) into this cgroup in every hierarchy. */
    public void bind(long pid) throws CgroupException {
        for (Path dir : dirs.values()) {
            write(dir, "cgroup.procs", Long.toString(pid));
        }
    }

    /** The processes in the cgroup (read from the first hierarchy). */
    public List<Long> pids() throws CgroupException {
        Path file = dirs.values().iterator().next().resolve("cgroup.procs");
        try {
            List<Long> pids = new ArrayList<>();
            for (String line : Files.readAllLines(file)) {
                if (!line.isBlank()) {
                    pids.add(Long.parseLong(line.trim()));
                }
            }
            return pids;
        } catch (IOException | NumberFormatException e) {
            throw new CgroupException("read " + file + ": " + e.getMessage(), e);
        }
    }

    public void setLimits(Limits limits) throws CgroupException {
        boolean v1 = layout.version() == CgroupLayout.Version.V1;
        if (v1) {
            write(dir("memory"), "memory.limit_in_bytes", limits.memoryBytes() > 0 ? Long.toString(limits.memoryBytes()) : "-1");
            write(dir("cpu"), "cpu.cfs_period_us", Long.toString(limits.cpuPeriodMicros() > 0 ? limits.cpuPeriodMicros() : 100_000));
            write(dir("cpu"), "cpu.cfs_quota_us", limits.cpuQuotaMicros() > 0 ? Long.toString(limits.cpuQuotaMicros()) : "-1");
            write(dir("cpu"), "cpu.shares", Long.toString(limits.cpuShares() > 0 ? limits.cpuShares() : 1024));
            write(dir("pids"), "pids.max", limits.pids() > 0 ? Long.toString(limits.pids()) : "max");
            return;
        }
        Path dir = dirs.values().iterator().next();
        if (layout.controllers().contains("memory")) {
            write(dir, "memory.max", limits.memoryBytes() > 0 ? Long.toString(limits.memoryBytes()) : "max");
        } else if (limits.memoryBytes() > 0) {
            throw new CgroupException("cgroup " + dir + ": a memory limit needs the memory controller, which is not enabled");
        }
        if (layout.controllers().contains("cpu")) {
            long period = limits.cpuPeriodMicros() > 0 ? limits.cpuPeriodMicros() : 100_000;
            write(dir, "cpu.max", (limits.cpuQuotaMicros() > 0 ? Long.toString(limits.cpuQuotaMicros()) : "max") + " " + period);
            write(dir, "cpu.weight", Long.toString(weightOf(limits.cpuShares())));
        } else if (limits.cpuQuotaMicros() > 0) {
            throw new CgroupException("cgroup " + dir + ": a cpu quota needs the cpu controller, which is not enabled");
        }
        if (layout.controllers().contains("pids")) {
            write(dir, "pids.max", limits.pids() > 0 ? Long.toString(limits.pids()) : "max");
        } else if (limits.pids() > 0) {
            throw new CgroupException("cgroup " + dir + ": a pids limit needs the pids controller, which is not enabled");
        }
    }

    private Path dir(String controller) {
        return dirs.get(controller);
    }

    static void write(Path dir, String file, String value) throws CgroupException {
        try {
            Files.writeString(dir.resolve(file), value);
        } catch (IOException e) {
            throw new CgroupException("write " + value + " to " + dir.resolve(file) + ": " + e.getMessage(), e);
        }
    }

    @Override
    public String toString() {
        return "cgroup " + slot + " of sandbox " + sandboxId;
    }
}
