package io.rund.sandbox.guest;

/**
 * One step of the agent's own work in a call, as it reports it, timed on the guest's clock:
 * where the guest's time inside a host step went ({@code rund trace}).
 *
 * @param name a few printable words, "mount the writable layer"
 * @param micros its length
 */
public record GuestStep(String name, long micros) {}
