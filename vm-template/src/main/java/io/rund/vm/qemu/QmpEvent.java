package io.rund.vm.qemu;

import com.fasterxml.jackson.databind.JsonNode;

/** An asynchronous QMP event: SHUTDOWN, STOP, RESUME, DEVICE_DELETED, ... */
public record QmpEvent(String name, JsonNode data) {}
