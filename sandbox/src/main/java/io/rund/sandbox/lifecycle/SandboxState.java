package io.rund.sandbox.lifecycle;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;

/**
 * What a restarted daemon needs to find and clean a sandbox, in
 * {@code <state root>/<id>/state.json}, rewritten (atomically) at each step of a start.
 * A value of 0 means "not yet". {@code boot} says how the VM started: "cold", or
 * "clone &lt;template key&gt;". {@code vmDir} is the directory the VM was launched in: the
 * sandbox's own, or the spare VM's it was renamed from; "" in files written before it. (A
 * restarted daemon knows the pid is still that VM's by its working directory, which follows
 * the rename: see {@code Hypervisor.vmDirKey}.)
 * {@code netns} and {@code podInterface} name the pod interface the VM's tap is connected
 * to, whose redirect a cleanup removes; null without a pod network.
 * {@code helperPid} and {@code hostHelperPid} are its shares' helpers, and {@code containers}
 * what each container has on the shares: a restarted daemon adopts a running sandbox by
 * them ({@link Adoption}).
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record SandboxState(String sandboxId, Phase phase, String cgroupSlot, long vmPid, String accelerator,
        String boot, String vmDir, String netns, String podInterface, long helperPid, long hostHelperPid,
        Map<String, Attached> containers) {

    /** What a container has on the shares: its image's directory and its host directories'. */
    public record Attached(String image, List<String> dirs) {}

    public SandboxState {
        containers = containers == null ? Map.of() : Map.copyOf(containers);
    }

    /** Where a sandbox is in its life; written as the lower-case name (state files and `rund status`). */
    public enum Phase {
        @JsonProperty("spare") SPARE,
        @JsonProperty("starting") STARTING,
        @JsonProperty("running") RUNNING;

        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** A sandbox (or spare VM) {@code id} in {@code phase}, whose VM runs under {@code accelerator}, and nothing else yet. */
    static SandboxState of(String id, Phase phase, String accelerator) {
        return new SandboxState(id, phase, "", 0, accelerator, "", "", null, null, 0, 0, Map.of());
    }

    SandboxState with(Phase newPhase) {
        return new SandboxState(sandboxId, newPhase, cgroupSlot, vmPid, accelerator, boot, vmDir, netns, podInterface,
                helperPid, hostHelperPid, containers);
    }

    SandboxState withCgroup(String slot) {
        return new SandboxState(sandboxId, phase, slot, vmPid, accelerator, boot, vmDir, netns, podInterface,
                helperPid, hostHelperPid, containers);
    }

    /** Its VM: process, how it booted, the directory it was launched in. */
    SandboxState withVm(long pid, String newBoot, String newVmDir) {
        return new SandboxState(sandboxId, phase, cgroupSlot, pid, accelerator, newBoot, newVmDir, netns, podInterface,
                helperPid, hostHelperPid, containers);
    }

    SandboxState withNetwork(String newNetns, String newInterface) {
        return new SandboxState(sandboxId, phase, cgroupSlot, vmPid, accelerator, boot, vmDir, newNetns, newInterface,
                helperPid, hostHelperPid, containers);
    }

    /** Its shares' helpers: the image share's and the host-directory share's. */
    SandboxState withHelpers(long images, long hostDirs) {
        return new SandboxState(sandboxId, phase, cgroupSlot, vmPid, accelerator, boot, vmDir, netns, podInterface,
                images, hostDirs, containers);
    }

    SandboxState withContainers(Map<String, Attached> now) {
        return new SandboxState(sandboxId, phase, cgroupSlot, vmPid, accelerator, boot, vmDir, netns, podInterface,
                helperPid, hostHelperPid, now);
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    static final String FILE = "state.json";

    void write(Path dir) throws IOException {
        Path tmp = dir.resolve(FILE + ".tmp");
        JSON.writeValue(tmp.toFile(), this);
        Files.move(tmp, dir.resolve(FILE), StandardCopyOption.ATOMIC_MOVE);
    }

    static SandboxState read(Path dir) throws IOException {
        return JSON.readValue(dir.resolve(FILE).toFile(), SandboxState.class);
    }
}
