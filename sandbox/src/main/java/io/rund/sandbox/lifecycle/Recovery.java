package io.rund.sandbox.lifecycle;

import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.cgroup.CgroupException;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.sandbox.id.Ids;
import io.rund.vm.Hypervisor;
import io.rund.vm.template.SparePool;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

/**
 * What a restarted daemon finds of the sandboxes a previous one ran, and how it ends them:
 * their processes (through their cgroups, and through their state files for those not yet
 * bound), their shares, cgroups and directories; spare VMs; processes of rund's provably
 * left without a directory. Only processes the hypervisor proves are its VMs of a directory
 * of the state root are killed.
 */
final class Recovery {

    private static final System.Logger LOG = System.getLogger(Recovery.class.getName());
    /** Sandboxes adopted at once: each mostly waits on its guest (its agent, QMP, helpers), so all of a node's, up to 64. */
    private static final int ADOPTING_AT_ONCE = 64;

    private final Path stateRoot;
    private final CgroupPool pool;
    private final Hypervisor hypervisor;

    Recovery(Path stateRoot, CgroupPool pool, Hypervisor hypervisor) {
        this.stateRoot = stateRoot;
        this.pool = pool;
        this.hypervisor = hypervisor;
    }

    /** Kills whatever is left in the cgroup (bounded wait) and gives it back to the pool. */
    static void killAndRelease(CgroupPool pool, Cgroup cgroup) throws CgroupException {
        long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        List<Long> left;
        while (!(left = cgroup.pids()).isEmpty()) {
            for (long pid : left) {
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
            }
            if (System.nanoTime() > end) {
                throw new CgroupException(cgroup + " still holds " + left + " after SIGKILL");
            }
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new CgroupException("interrupted while emptying " + cgroup);
            }
        }
        pool.release(cgroup);
    }

    /** What recovery did: sandboxes cleaned, and sandboxes adopted (running, and wanted). */
    record Result(List<String> cleaned, Map<String, Sandbox> adopted) {}

    /**
     * Takes over or cleans everything a previous daemon left. Each sandbox in {@code keep}
     * (containerd still has its task: its relay lives) that still runs is adopted
     * ({@link Adoption}); every other state directory is cleaned: its processes (found
     * through its cgroup, and through the state file for those not yet bound), its mounts,
     * its cgroup and the directory; then cgroups claimed with no directory, and VMs of the
     * state root that no adopted sandbox owns.
     */
    Result recover(SandboxManager manager, Set<String> keep) throws IOException {
        List<String> cleaned = new java.util.ArrayList<>();
        Map<String, Sandbox> adopted = new java.util.HashMap<>();
        Set<Path> kept = new java.util.HashSet<>();
        for (String id : keep) {
            if (Ids.isValid(id)) {
                kept.add(stateRoot.resolve(Ids.dirName(id)));
            }
        }
        long t0 = System.nanoTime();
        killStrays(kept);
        long strays = System.nanoTime();
        Map<String, Path> toAdopt = new java.util.LinkedHashMap<>();
        List<Map.Entry<String, Path>> toClean = new java.util.ArrayList<>();
        try (Stream<Path> dirs = Files.list(stateRoot)) {
            for (Path dir : dirs.filter(Files::isDirectory).toList()) {
                String id = dir.getFileName().toString();
                if (id.startsWith(SparePool.PREFIX)) {
                    // A spare has a VM, two shares and a directory; its helpers exit with its VM.
                    releaseAll(id, dir);
                    LOG.log(Level.INFO, "spare VM {0}: removed after a previous daemon", id);
                    continue;
                }
                if (!Ids.isValid(id)) {
                    continue; // not a sandbox's: no sandbox id has this form
                }
                try {
                    // A long id's directory is named by its hash; the state file has the id.
                    String recorded = SandboxState.read(dir).sandboxId();
                    if (recorded != null && Ids.isValid(recorded) && Ids.dirName(recorded).equals(id)) {
                        id = recorded;
                    }
                } catch (IOException e) {
                    // no state yet: the directory's name is all there is
                }
                if (keep.contains(id)) {
                    toAdopt.put(id, dir);
                } else {
                    toClean.add(Map.entry(id, dir));
                }
            }
        }
        // Adoptions wait mostly on their guests and QEMUs (an agent's answer, QMP's greeting):
        // taken in parallel, 50 sandboxes cost about what a few do one after another.
        Map<String, Sandbox> taken = new java.util.concurrent.ConcurrentHashMap<>();
        Map<String, Path> failed = new java.util.concurrent.ConcurrentHashMap<>();
        java.util.concurrent.Semaphore slots = new java.util.concurrent.Semaphore(ADOPTING_AT_ONCE);
        List<Thread> adopting = new java.util.ArrayList<>();
        for (var e : toAdopt.entrySet()) {
            adopting.add(Thread.ofVirtual().name("adopt-" + e.getKey()).start(() -> {
                slots.acquireUninterruptibly();
                try {
                    taken.put(e.getKey(), Adoption.adopt(manager, e.getKey(), e.getValue()));
                    LOG.log(Level.INFO, "sandbox={0}: adopted from a previous daemon", e.getKey());
                } catch (SandboxException ex) {
                    LOG.log(Level.WARNING, "{0}; cleaning it", ex.getMessage());
                    failed.put(e.getKey(), e.getValue());
                } catch (RuntimeException ex) {
                    LOG.log(Level.WARNING, "adopt sandbox=" + e.getKey() + " failed; cleaning it", ex);
                    failed.put(e.getKey(), e.getValue());
                } finally {
                    slots.release();
                }
            }));
        }
        boolean interrupted = false;
        for (Thread t : adopting) {
            while (true) { // each adoption is bounded (its agent's and QMP's deadlines): none is left half done
                try {
                    t.join();
                    break;
                } catch (InterruptedException ie) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        adopted.putAll(taken);
        long adoptedAt = System.nanoTime();
        for (var e : failed.entrySet()) {
            kill(e.getValue());
            toClean.add(e);
        }
        for (var e : toClean) {
            cleanup(e.getKey());
            cleaned.add(e.getKey());
            LOG.log(Level.INFO, "sandbox={0}: cleaned up after a previous daemon", e.getKey());
        }
        long end = System.nanoTime();
        LOG.log(Level.INFO, "recover: stray VMs {0} ms, spares and adoption of {1} sandbox(es) {2} ms, cleaning {3} {4} ms",
                (strays - t0) / 1_000_000, adopted.size(), (adoptedAt - strays) / 1_000_000, toClean.size(),
                (end - adoptedAt) / 1_000_000);
        for (Cgroup orphan : pool.claimed().values()) {
            if (adopted.containsKey(orphan.sandboxId())) {
                continue;
            }
            try {
                killAndRelease(pool, orphan);
                cleaned.add(orphan.sandboxId());
            } catch (CgroupException e) {
                LOG.log(Level.WARNING, "{0}: {1}", orphan, e.getMessage());
            }
        }
        return new Result(cleaned, adopted);
    }

    /**
     * Cleans one sandbox from what is on disk: its processes (through its cgroup, and
     * through the state file for those not yet bound), its image mount, its cgroup and its
     * directory. For a sandbox whose daemon-side object is gone (a crash, or containerd's
     * last-resort delete). Cleaning a sandbox that does not exist is a no-op.
     */
    public void cleanup(String id) throws IOException {
        if (!Ids.isValid(id)) {
            throw new IllegalArgumentException("sandbox id " + id + " is not valid");
        }
        Path dir = stateRoot.resolve(Ids.dirName(id));
        if (Files.notExists(dir)) {
            // The directory is the first resource a start takes and the last a release gives
            // back, so without it nothing else of the sandbox was made, or all was released
            // (containerd's delete after every stop that completed). Only a claim of the pool
            // is named by the id alone; the walk of every host process is not needed.
            try {
                releaseCgroup(id);
            } catch (CgroupException e) {
                LOG.log(Level.WARNING, "{0}: release its cgroup: {1}", id, e.getMessage());
            }
            return;
        }
        releaseAll(id, dir);
    }

    /** Releases every {@link Resource} of the sandbox (or spare VM) {@code name} in {@code dir}, newest first. */
    private void releaseAll(String name, Path dir) {
        SandboxState state = null;
        if (Files.isDirectory(dir)) {
            try {
                state = SandboxState.read(dir);
            } catch (IOException e) {
                LOG.log(Level.INFO, "{0}: no readable state ({1}); cleaning what is there", dir, e.getMessage());
            }
        }
        Resource[] order = Resource.values();
        for (int i = order.length - 1; i >= 0; i--) {
            try {
                order[i].recover(this, name, dir, state);
            } catch (Exception e) {
                LOG.log(Level.WARNING, "{0}: release {1} after a previous daemon: {2}", name, order[i], e.getMessage());
            }
        }
    }

    /** Kills what is left in sandbox {@code id}'s cgroup and gives it back to the pool, if it holds one. */
    void releaseCgroup(String id) throws CgroupException {
        Cgroup cgroup = pool.claimed().get(id);
        if (cgroup != null) {
            killAndRelease(pool, cgroup);
        }
    }

    /**
     * Kills every VM of this hypervisor whose directory is one of the state root's: QEMUs a
     * dead daemon launched but had not yet written into a state file or bound to a cgroup
     * (a spare being launched when it died, a start between launch and its next step).
     * Only processes the hypervisor proves are its VMs (its binary, its control socket in
     * such a directory) are killed. Only for recovery, which cleans every sandbox but those
     * in {@code kept} (their directories), which it may adopt.
     */
    private void killStrays(Set<Path> kept) {
        Map<Object, Path> dirs;
        try (Stream<Path> s = Files.list(stateRoot)) {
            dirs = Hypervisor.dirsByKey(s.filter(d -> !kept.contains(d)).toList());
        } catch (IOException e) {
            LOG.log(Level.WARNING, "recover: list {0}: {1}", stateRoot, e.getMessage());
            return;
        }
        ProcessHandle.allProcesses().forEach(p -> hypervisor.vmDirOf(p, dirs).ifPresent(d -> {
            LOG.log(Level.INFO, "recover: killing VM pid {0} of {1}, left by a previous daemon", p.pid(), d);
            killAndWait(p);
        }));
    }

    /** Kills every VM of this hypervisor whose directory is {@code dir} (an adoption that failed). */
    private void kill(Path dir) {
        ProcessHandle.allProcesses().filter(p -> hypervisor.isVmOf(p, dir)).forEach(Recovery::killAndWait);
    }

    /** Kills {@code pid} only if it runs the sandboxes' helper binary: pids get reused. */
    void killHelper(long pid) {
        if (pid > 0) {
            ProcessHandle.of(pid).filter(this::isHelper).ifPresent(Recovery::killAndWait);
        }
    }

    /**
     * Kills the helpers started for {@code name} (a sandbox's id or a spare's name: the
     * helper's --name), which a daemon that died right after starting them never recorded.
     */
    void killHelpersNamed(String name) {
        ProcessHandle.allProcesses().filter(this::isHelper)
                .filter(p -> p.info().arguments().map(a -> List.of(a).indexOf("--name")).filter(i -> i >= 0)
                        .flatMap(i -> p.info().arguments().filter(a -> a.length > i + 1).map(a -> a[i + 1]))
                        .filter(name::equals).isPresent())
                .forEach(Recovery::killAndWait);
    }

    /** Whether {@code p} runs this daemon's helper binary. */
    private boolean isHelper(ProcessHandle p) {
        if (hypervisor.jail() == null) {
            return false;
        }
        String helper = hypervisor.jail().helper().toString();
        try {
            String exe = java.nio.file.Files.readSymbolicLink(Path.of("/proc", Long.toString(p.pid()), "exe")).toString();
            return exe.equals(helper) || exe.equals(helper + " (deleted)");
        } catch (IOException e) {
            return false; // gone, or not ours to read
        }
    }

    private static void killAndWait(ProcessHandle p) {
        io.rund.rootfs.Syscalls.killAndAwait(p, java.time.Duration.ofSeconds(10));
    }

    /** Kills {@code pid} only if it is the hypervisor's VM of {@code dir}: pids get reused. */
    void killIfOurs(long pid, Path dir) {
        if (pid <= 0) {
            return;
        }
        ProcessHandle.of(pid).ifPresent(p -> {
            if (hypervisor.isVmOf(p, dir)) {
                killAndWait(p);
            }
        });
    }
}
