package io.rund.sandbox.lifecycle;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * What a restarted daemon needs to find and clean a sandbox, in
 * {@code <state root>/<id>/state.json}, rewritten (atomically) at each step of a start.
 * A value of 0 means "not yet". {@code boot} says how the VM started: "cold", or
 * "clone &lt;template key&gt;". {@code vmDir} is the directory the VM was launched in: the
 * sandbox's own, or the spare VM's it was renamed from; "" in files written before it. (A
 * restarted daemon knows the pid is still that VM's by its working directory, which follows
 * the rename: see {@code Hypervisor.vmDirOf}.)
 * {@code netns} and {@code podInterface} name the pod interface the VM's tap is connected
 * to, whose redirect a cleanup removes; null without a pod network.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record SandboxState(String sandboxId, String phase, String cgroupSlot, long vmPid, String accelerator,
        String boot, String vmDir, String netns, String podInterface) {

    SandboxState(String sandboxId, String phase, String cgroupSlot, long vmPid, String accelerator, String boot,
            String vmDir) {
        this(sandboxId, phase, cgroupSlot, vmPid, accelerator, boot, vmDir, null, null);
    }

    SandboxState withNetwork(String newNetns, String newInterface) {
        return new SandboxState(sandboxId, phase, cgroupSlot, vmPid, accelerator, boot, vmDir, newNetns, newInterface);
    }


    private static final ObjectMapper JSON = new ObjectMapper();

    static final String FILE = "state.json";

    SandboxState with(String newPhase) {
        return new SandboxState(sandboxId, newPhase, cgroupSlot, vmPid, accelerator, boot, vmDir, netns, podInterface);
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
