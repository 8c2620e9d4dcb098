package io.rund.sandbox.lifecycle;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * What a restarted daemon needs to find and clean a sandbox, in
 * {@code <state root>/<id>/state.json}, rewritten (atomically) at each step of a start.
 * A value of 0 means "not yet".
 */
public record SandboxState(String sandboxId, String phase, String cgroupSlot, long virtiofsdPid, long vmPid,
        String accelerator) {

    private static final ObjectMapper JSON = new ObjectMapper();

    static final String FILE = "state.json";

    SandboxState with(String newPhase) {
        return new SandboxState(sandboxId, newPhase, cgroupSlot, virtiofsdPid, vmPid, accelerator);
    }

    void write(Path dir) throws IOException {
        Path tmp = dir.resolve(FILE + ".tmp");
        JSON.writeValue(tmp.toFile(), this);
        Files.move(tmp, dir.resolve(FILE), StandardCopyOption.ATOMIC_MOVE);
    }

    static SandboxState read(Path dir) throws IOException {
        return JSON.readValue(dir.resolve(FILE).toFile(), SandboxState.class);
    }
}
