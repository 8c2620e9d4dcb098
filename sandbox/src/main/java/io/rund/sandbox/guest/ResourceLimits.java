package io.rund.sandbox.guest;

/**
 * Limits to apply to a container's processes in the guest. 0 leaves a value as it is.
 */
public record ResourceLimits(long memoryLimitBytes, long cpuQuotaMicros, long cpuPeriodMicros, long pidsLimit) {

    public ResourceLimits {
        if (memoryLimitBytes < 0 || cpuQuotaMicros < 0 || cpuPeriodMicros < 0 || pidsLimit < 0) {
            throw new IllegalArgumentException("negative limit in " + memoryLimitBytes + "/" + cpuQuotaMicros + "/"
                    + cpuPeriodMicros + "/" + pidsLimit);
        }
    }

    /** No limit at all. */
    public static final ResourceLimits NONE = new ResourceLimits(0, 0, 0, 0);

    /** The cpu quota per 100 ms period (the period cgroups default to); 0 for none. */
    public long quotaPer100ms() {
        long period = cpuPeriodMicros > 0 ? cpuPeriodMicros : 100_000;
        return cpuQuotaMicros > 0 ? cpuQuotaMicros * 100_000 / period : 0;
    }
}
