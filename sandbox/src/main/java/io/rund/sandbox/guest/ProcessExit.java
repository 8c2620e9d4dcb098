package io.rund.sandbox.guest;

import java.time.Instant;

/** How a process in the guest ended: its exit code, or 128 + the signal that killed it. */
public record ProcessExit(int status, Instant exitedAt) {}
