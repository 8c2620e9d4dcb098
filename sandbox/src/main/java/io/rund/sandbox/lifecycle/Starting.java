package io.rund.sandbox.lifecycle;

import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.network.PodNetwork;
import io.rund.vm.Vm;
import io.rund.vm.template.SparePool;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/**
 * One sandbox start under way: what it was asked (checked before anything was made), what
 * its {@link Resource}s have acquired so far, the releases pushed for them, and the step it
 * is at (named in the error when one fails).
 */
final class Starting {

    final SandboxManager manager;
    final String id;
    final Path dir;
    final ContainerSpec spec;
    /** The first container's image layers, top first. */
    final List<Path> lowers;
    /** The pod network the VM joins; null for none. */
    final PodNetwork network;
    /** The VM's size: the default's, or larger for what the containers are allowed. */
    final VmSize size;
    final Teardown undo;
    /** The step under way, as a failure names it; each is timed by {@link #trace}. */
    private String step;
    final StartTrace.Recorder trace;

    /** A spare VM the start began with; null for a VM of its own. */
    SparePool.Spare spare;
    SandboxState state;
    Cgroup cgroup;
    ReadOnlyLayer readOnly;
    HostDirShare hostDirs;
    /** The VM's uid when the start reserved it (0 with a spare, whose uid goes with its processes). */
    int uid;
    /** The first container's image directory on the share. */
    String image;
    /** Its host directories on the host-directory share. */
    List<String> dirs = List.of();
    Vm vm;
    /** How the VM started: "cold", "clone <key>", "... (spare)". */
    String boot = "";
    String tap;
    AgentClient agent;

    Starting(SandboxManager manager, String id, Path dir, ContainerSpec spec, List<Path> lowers, PodNetwork network,
            VmSize size) {
        this.manager = manager;
        this.id = id;
        this.dir = dir;
        this.spec = spec;
        this.lowers = lowers;
        this.network = network;
        this.size = size;
        this.undo = new Teardown(id);
        this.trace = new StartTrace.Recorder(id);
    }

    /** Enters the start's next step: named by a failure, timed in its trace. */
    void step(String next) {
        step = next;
        trace.enter(next);
    }

    /** The step under way. */
    String step() {
        return step;
    }

    /** Records {@code next} in the state file, for a restarted daemon to find. */
    void write(SandboxState next) throws IOException {
        state = next;
        next.write(dir);
    }
}
