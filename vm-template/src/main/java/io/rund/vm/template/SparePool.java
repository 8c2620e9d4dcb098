package io.rund.vm.template;

import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.SandboxHelper;
import io.rund.rootfs.WritableLayer;
import io.rund.vm.Vm;
import java.lang.System.Logger.Level;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.BooleanSupplier;

/**
 * Spare VMs: clones of the current template, launched ahead of need and left paused with
 * the template's state loaded, each in its own directory ({@code <state root>/.spare-<daemon pid>-N})
 * with its own writable disk, and its helpers serving shares that hold nothing yet. A
 * sandbox start takes one, renames its directory (share mount included) to the sandbox's,
 * mounts its image on the share, gives it a cgroup and its identity, and resumes it; QEMU's process start and the state load, about half of a
 * clone's start under TCG, are then behind it.
 *
 * <p>One thread keeps {@code size} spares ready, one launch at a time, and only while no
 * sandbox is starting (nor in the pool's first second, when the start that launched the
 * daemon is on its way): a launch beside a start takes CPU from it, and a start that finds
 * no spare clones as before, never waiting for one. Launch failures back off
 * (1 s doubling to a minute). A spare of a template whose key is no longer current is
 * discarded when met. A spare is a paused process outside any sandbox cgroup: what it has
 * touched is charged to the daemon's cgroup until a sandbox takes it.
 */
public final class SparePool implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(SparePool.class.getName());
    /** The prefix of a spare's directory; never a sandbox id (ids start with a letter or digit). */
    public static final String PREFIX = ".spare-";
    /**
     * How long a new pool waits before its first launch. A daemon is mostly started by the
     * start that found none (a node's first, or the first after an upgrade), whose request
     * arrives a few milliseconds after the pool exists: a launch begun in that gap runs
     * beside it (QEMU's start and state load, two helpers), as {@code busy} keeps launches
     * from doing at any other time. A start arriving in the wait holds the launch as
     * {@code busy} does; without one the pool fills a second late.
     */
    static final Duration FIRST_LAUNCH_AFTER = Duration.ofSeconds(1);

    /**
     * A paused clone of template {@code key}, not yet anybody's. The writable layer stays
     * open until the VM has resumed: QEMU opened it by its /proc path and opens it again
     * when it activates its disks, on resume after an incoming migration. {@code tap} is
     * its network device's, in the host's namespace until a pod takes the VM. The helper
     * serves {@code dir/shared}, mounted for it, and {@code hostHelper} {@code dir/hostdirs}.
     */
    public record Spare(String name, Path dir, String key, Vm vm, SandboxHelper helper, SandboxHelper hostHelper,
            WritableLayer disk, String tap) implements AutoCloseable {
        @Override
        public void close() {
            closeIn(dir);
        }

        /** Ends it after its directory became {@code where}: the VM, the helpers, the shares mounted there, the disk. */
        public void closeIn(Path where) {
            vm.close();
            helper.close();
            hostHelper.close();
            ReadOnlyLayer.unmountIn(where);
            HostDirShare.unmountIn(where);
            disk.close();
        }
    }

    /** Launches one spare named {@code name} in {@code <state root>/name}; leaves nothing on failure. */
    public interface Maker {
        Spare make(String name) throws Exception;
    }

    private final int size;
    private final Maker maker;
    private final BooleanSupplier busy;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final Deque<Spare> ready = new ArrayDeque<>();
    private final AtomicLong sequence = new AtomicLong();
    private final Thread refill;
    private boolean closed;

    /** {@code busy}: whether a launch now would compete with a sandbox start. */
    public SparePool(int size, Maker maker, BooleanSupplier busy) {
        if (size < 1) {
            throw new IllegalArgumentException("a spare pool holds at least one VM, not " + size);
        }
        this.size = size;
        this.maker = maker;
        this.busy = busy;
        this.refill = Thread.ofVirtual().name("spare-vms").unstarted(this::refill);
        refill.start();
    }

    /**
     * A ready spare of template {@code key}, or null when there is none; spares of other
     * keys are closed on the way.
     */
    public Spare take(String key) {
        while (true) {
            Spare s;
            lock.lock();
            try {
                s = ready.pollFirst();
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            if (s == null) {
                return null;
            }
            if (s.key().equals(key) && !s.vm().exited().isDone()) {
                return s;
            }
            LOG.log(Level.INFO, "spare VM {0}: discarded ({1})", s.name(),
                    s.vm().exited().isDone() ? "its QEMU exited" : "template " + s.key() + " is no longer current");
            discard(s);
        }
    }

    /** How many spares the pool keeps ready. */
    public int size() {
        return size;
    }

    /** How many spares are ready now. */
    public int ready() {
        lock.lock();
        try {
            return ready.size();
        } finally {
            lock.unlock();
        }
    }

    private void refill() {
        Duration backoff = Duration.ofSeconds(1);
        if (!sleep(FIRST_LAUNCH_AFTER)) {
            return;
        }
        while (true) {
            lock.lock();
            try {
                while (!closed && ready.size() >= size) {
                    changed.awaitUninterruptibly();
                }
                if (closed) {
                    return;
                }
            } finally {
                lock.unlock();
            }
            while (busy.getAsBoolean()) {
                if (!sleep(Duration.ofMillis(10))) {
                    return;
                }
            }
            // The daemon's pid in the name: a dead daemon's spares never share a name with ours.
            String name = PREFIX + ProcessHandle.current().pid() + "-" + sequence.incrementAndGet();
            Spare s;
            try {
                s = maker.make(name);
                backoff = Duration.ofSeconds(1);
            } catch (Exception e) {
                LOG.log(Level.WARNING, "spare VM {0}: launch failed, next try in {1} s: {2}", name, backoff.toSeconds(),
                        e.getMessage());
                if (!sleep(backoff)) {
                    return;
                }
                backoff = backoff.multipliedBy(2).compareTo(Duration.ofMinutes(1)) > 0 ? Duration.ofMinutes(1)
                        : backoff.multipliedBy(2);
                continue;
            }
            lock.lock();
            try {
                if (!closed) {
                    ready.addLast(s);
                    s = null;
                }
            } finally {
                lock.unlock();
            }
            if (s != null) {
                discard(s); // closed while it was launching
            }
        }
    }

    /** Sleeps unless the pool closes first; false when it did. */
    private boolean sleep(Duration d) {
        lock.lock();
        try {
            long left = d.toNanos();
            while (!closed && left > 0) {
                try {
                    left = changed.awaitNanos(left);
                } catch (InterruptedException e) {
                    return false;
                }
            }
            return !closed;
        } finally {
            lock.unlock();
        }
    }

    private static void discard(Spare s) {
        s.close();
        try {
            io.rund.rootfs.Dirs.removeShallow(s.dir());
        } catch (java.io.IOException e) {
            LOG.log(Level.WARNING, "spare VM {0}: remove {1}: {2}", s.name(), s.dir(), e.getMessage());
        }
    }

    /** Stops refilling and ends every ready spare; waits for a launch under way. */
    @Override
    public void close() {
        Deque<Spare> left;
        lock.lock();
        try {
            closed = true;
            changed.signalAll();
            left = new ArrayDeque<>(ready);
            ready.clear();
        } finally {
            lock.unlock();
        }
        for (Spare s : left) {
            discard(s);
        }
        try {
            refill.join(Duration.ofSeconds(30));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
