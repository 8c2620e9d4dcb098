package io.rund.sandbox.guest;

/** StreamChunk read from a process in the guest: some bytes, or the end of the stream. */
public record StreamChunk(byte[] data, boolean eof) {}
