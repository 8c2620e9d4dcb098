package io.rund.sandbox.lifecycle;

import io.rund.rootfs.Dirs;
import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.SandboxHelper;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.network.PodNetwork;
import io.rund.vm.Vm;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Takes over a sandbox a previous daemon started and that still runs: its state file names
 * its VM, helpers, cgroup, pod interface and containers; each is checked to be alive and
 * what the file says (the VM by its directory, the helpers by their answers, the cgroup by
 * the pool's claim), and the agent is connected again. The sandbox's releases are pushed as
 * a start pushes them, so its stop is a started sandbox's.
 *
 * <p>Nothing is changed when adoption fails: the caller cleans the sandbox by recovery.
 */
final class Adoption {

    private static final System.Logger LOG = System.getLogger(Adoption.class.getName());

    /** How long a running guest's agent gets to answer a new connection. */
    private static final Duration AGENT = Duration.ofSeconds(10);

    private Adoption() {}

    static Sandbox adopt(SandboxManager m, String id, Path dir) throws SandboxException {
        SandboxState state;
        try {
            state = SandboxState.read(dir);
        } catch (IOException e) {
            throw fail(id, "no readable state: " + e.getMessage());
        }
        if (state.phase() != SandboxState.Phase.RUNNING) {
            throw fail(id, "it was " + state.phase() + ", not running");
        }
        ProcessHandle qemu = ProcessHandle.of(state.vmPid())
                .filter(p -> m.hypervisor().isVmOf(p, dir))
                .orElseThrow(() -> fail(id, "its VM (pid " + state.vmPid() + ") is gone"));
        Cgroup cgroup = m.pool().claimed().get(id);
        if (cgroup == null) {
            throw fail(id, "it holds no cgroup of the pool");
        }
        int uid = uidOf(qemu);
        if (!m.hypervisor().jail().reserve(uid)) {
            throw fail(id, "its VM runs as uid " + uid + ", not one of " + m.hypervisor().jail());
        }
        Teardown undo = new Teardown(id);
        SandboxHelper[] helpers = {null, null};
        Vm[] vm = {null};
        AgentClient agent = null;
        // What adoption asks of the sandbox's processes (each helper whether it serves, QEMU's
        // QMP greeting, the agent's health) waits on their answers, slow on a busy node: asked
        // at once, they cost the slowest of them, not their sum.
        var images = ask(() -> SandboxHelper.adopt(id, dir, SandboxHelper.Kind.IMAGES, state.helperPid()));
        var hostHelper = ask(() -> SandboxHelper.adopt(id, dir, SandboxHelper.Kind.HOST_DIRS, state.hostHelperPid()));
        var qmp = ask(() -> m.hypervisor().adopt(id, dir, qemu, uid));
        var health = ask(() -> AgentClient.connect(dir.resolve("agent.sock"), AGENT, Duration.ofSeconds(30)));
        try {
            undo.push(Resource.STATE_DIR, dir.toString(), () -> Dirs.removeShallow(dir));
            undo.push(Resource.CGROUP, "pool", () -> Recovery.killAndRelease(m.pool(), cgroup));
            undo.push(Resource.VM, "uid " + uid, () -> m.releaseWhenGone(uid, vm[0], helpers));
            helpers[0] = answer(images);
            helpers[1] = answer(hostHelper);
            ReadOnlyLayer readOnly = ReadOnlyLayer.adopt(id, dir, helpers[0]);
            undo.push(Resource.SHARE, "image share and helper", readOnly::close);
            HostDirShare hostDirs = HostDirShare.adopt(id, dir, helpers[1]);
            undo.push(Resource.SHARE, "host-directory share and helper", hostDirs::close);
            vm[0] = answer(qmp);
            undo.push(Resource.VM, "QEMU", vm[0]::close);
            if (!m.store().adopt(id, qemu.pid(), vm[0].exited())) {
                // It runs on: what is lost is the store's count of its layer, which a start may then overcommit.
                LOG.log(System.Logger.Level.WARNING, "sandbox={0}: its VM (pid {1}) holds no writable layer of {2}", id,
                        qemu.pid(), m.store().dir());
            }
            if (state.netns() != null) {
                Path netns = Path.of(state.netns());
                undo.push(Resource.POD_NETWORK, state.podInterface(), () -> PodNetwork.disconnect(netns, state.podInterface()));
            }
            agent = answer(health);
            undo.push(Resource.AGENT, "connection", agent::close);
            return new Sandbox(id, dir, cgroup, readOnly, hostDirs, vm[0], agent, state, null, undo);
        } catch (Exception e) {
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            // The VM and helpers are left as they are, for the caller's cleanup; a connection
            // made meanwhile to the agent is closed.
            health.thenAccept(AgentClient::close);
            m.hypervisor().jail().release(uid);
            throw e instanceof SandboxException se ? se : fail(id, e.getMessage());
        }
    }

    /** Something adoption asks of a sandbox's process, which may fail. */
    private interface Question<T> {
        T ask() throws Exception;
    }

    private static <T> java.util.concurrent.CompletableFuture<T> ask(Question<T> q) {
        var answer = new java.util.concurrent.CompletableFuture<T>();
        Thread.ofVirtual().name("adopt-ask").start(() -> {
            try {
                answer.complete(q.ask());
            } catch (Throwable t) {
                answer.completeExceptionally(t);
            }
        });
        return answer;
    }

    private static <T> T answer(java.util.concurrent.CompletableFuture<T> f) throws Exception {
        try {
            return f.get();
        } catch (java.util.concurrent.ExecutionException e) {
            throw e.getCause() instanceof Exception x ? x : new IllegalStateException(e.getCause());
        }
    }

    /** The real uid of a process, from /proc. */
    private static int uidOf(ProcessHandle p) throws SandboxException {
        try {
            for (String line : Files.readAllLines(Path.of("/proc", Long.toString(p.pid()), "status"))) {
                if (line.startsWith("Uid:")) {
                    return Integer.parseInt(line.substring(4).trim().split("\\s+")[0]);
                }
            }
        } catch (IOException | NumberFormatException e) {
            throw new SandboxException(Fault.INTERNAL, "pid " + p.pid() + ": its uid: " + e.getMessage(), e);
        }
        throw new SandboxException(Fault.INTERNAL, "pid " + p.pid() + ": no Uid line in its status", null);
    }

    private static SandboxException fail(String id, String why) {
        return new SandboxException(Fault.FAILED_PRECONDITION, "adopt sandbox=" + id + ": " + why, null);
    }
}
