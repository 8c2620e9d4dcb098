package io.rund.shim.containerd;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;

/**
 * A task endpoint as a restarted daemon needs it, in {@code <state>/t/<name>.json}: whom
 * it serves (namespace, sandbox id, the task ids routed to it), where containerd takes
 * events, its relay's pid, and each container's processes with their stdio, pid, state
 * and exit, and whether containerd has been told of that exit; {@code podFiles}, when
 * containerd's Sandbox API made the sandbox (SandboxApi), the directory of the pod's
 * /etc/hostname, /etc/hosts and /etc/resolv.conf; {@code deleted}, the answers of the last
 * Deletes (a Delete the relay sends again to a restarted daemon is answered as the first
 * was). Rewritten (atomically) at every change of a process's state.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record TaskRecord(String namespace, String id, String ttrpcAddress, long relayPid, List<String> routed,
        List<Container> containers, String podFiles, List<Deleted> deleted) {

    public TaskRecord {
        routed = routed == null ? List.of() : List.copyOf(routed);
        containers = containers == null ? List.of() : List.copyOf(containers);
        deleted = deleted == null ? List.of() : List.copyOf(deleted); // absent in a record of rund before it
    }

    /** A task's (empty {@code execId}) or an exec's Delete, as it was answered. */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Deleted(String id, String execId, int pid, int exitStatus, long exitedAtNanos) {}

    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Container(String id, String bundle, boolean paused, List<Proc> procs) {
        public Container {
            procs = procs == null ? List.of() : List.copyOf(procs);
        }
    }

    /**
     * A process: {@code state} is "created", "running" (since {@code sinceNanos}, epoch) or
     * "stopped" ({@code exitStatus} at {@code exitedAtNanos}; {@code reported} once its exit
     * event went to containerd).
     */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Proc(String execId, String stdin, String stdout, String stderr, boolean terminal, int pid, String state,
            long sinceNanos, int exitStatus, long exitedAtNanos, boolean reported) {}

    private static final ObjectMapper JSON = new ObjectMapper();

    public void write(Path file) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        JSON.writeValue(tmp.toFile(), this);
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE);
    }

    public static TaskRecord read(Path file) throws IOException {
        return JSON.readValue(file.toFile(), TaskRecord.class);
    }
}
