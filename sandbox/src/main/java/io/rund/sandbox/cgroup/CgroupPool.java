package io.rund.sandbox.cgroup;

import io.rund.sandbox.id.Ids;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.stream.Stream;

/**
 * Pre-created cgroups, so that a sandbox start never creates or removes one.
 *
 * <p>At open the pool reads what is on disk: {@code free-K} directories are free, the rest
 * are sandboxes' ({@link Claims} says how a claim is recorded: a rename on v1, a claim
 * file on v2, which refuses rename), which the daemon re-adopts or releases. {@link #claim}
 * takes a free cgroup from an in-memory list under one short lock and records the claim;
 * {@link #release} resets limits and drops it. A
 * virtual thread keeps the free list at the pool's size in the background, creating or
 * removing cgroups off the start path.
 */
public final class CgroupPool implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(CgroupPool.class.getName());
    private static final String FREE = Claims.FREE;

    private final CgroupLayout layout;
    private final Path claimsDir;
    private final Claims claims;
    private final int size;
    private final AtomicLong nextSlot = new AtomicLong();
    private final AtomicLong createdOnStartPath = new AtomicLong();

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition sizeChanged = lock.newCondition();
    // guarded by lock
    private final Deque<String> free = new ArrayDeque<>();
    // guarded by lock: sandbox id -> cgroup
    private final Map<String, Cgroup> claimed = new HashMap<>();
    // guarded by lock
    private boolean closed;
    private final Thread refiller;

    private CgroupPool(CgroupLayout layout, Path claimsDir, int size) {
        this.layout = layout;
        this.claimsDir = claimsDir;
        this.claims = Claims.of(layout, claimsDir);
        this.size = size;
        this.refiller = Thread.ofVirtual().name("cgroup-pool-refill").unstarted(this::refillLoop);
    }

    /** Opens the pool: reads what exists, fills it to {@code size}, starts the refiller. */
    public static CgroupPool open(CgroupLayout layout, Path claimsDir, int size) throws CgroupException {
        if (size < 1) {
            throw new IllegalArgumentException("pool size must be at least 1, got " + size);
        }
        CgroupPool pool = new CgroupPool(layout, claimsDir, size);
        pool.rebuild();
        while (pool.freeCount() < size) {
            pool.addFree();
        }
        pool.refiller.start();
        LOG.log(Level.INFO, "cgroup pool: {0} {1}, {2} free, {3} claimed", layout.version(), layout.roots().values(),
                pool.freeCount(), pool.claimed().size());
        return pool;
    }

    private void rebuild() throws CgroupException {
        try {
            for (Path root : layout.roots().values()) {
                Files.createDirectories(root);
            }
            claims.prepare();
            repairHierarchies();
            long maxSlot = -1;
            for (Map.Entry<String, String> slot : claims.slots().entrySet()) {
                String name = slot.getKey();
                if (name.startsWith(FREE)) {
                    maxSlot = Math.max(maxSlot, slotNumber(name));
                }
                if (slot.getValue() == null) {
                    free.add(name);
                } else {
                    claimed.put(slot.getValue(), new Cgroup(layout, slot.getValue(), name, dirs(name)));
                }
            }
            nextSlot.set(maxSlot + 1);
        } catch (IOException e) {
            throw new CgroupException("read the cgroup pool at " + layout.roots().values() + ": " + e.getMessage(), e);
        }
    }


    /** How many of the pool's cgroups are free and claimed, read from disk. */
    public record Census(boolean exists, int free, int claimed) {}

    /** The pool's state on disk, for `rund check`: nothing is created or changed. */
    public static Census census(CgroupLayout layout, Path claimsDir) throws CgroupException {
        try {
            Map<String, String> slots = Claims.of(layout, claimsDir).slots();
            long free = slots.values().stream().filter(java.util.Objects::isNull).count();
            return new Census(Files.isDirectory(layout.roots().values().iterator().next()), (int) free,
                    (int) (slots.size() - free));
        } catch (IOException e) {
            throw new CgroupException("read the cgroup pool at " + layout.roots().values() + ": " + e.getMessage(), e);
        }
    }

    /**
     * A daemon killed between the renames (or mkdirs) of one cgroup in several v1
     * hierarchies leaves it in some of them only. A free cgroup missing anywhere is removed
     * everywhere; a sandbox's is completed, so that it can be emptied and released.
     */
    private void repairHierarchies() throws IOException {
        if (layout.roots().size() < 2) {
            return;
        }
        java.util.Set<String> names = new java.util.TreeSet<>();
        for (Path root : layout.roots().values()) {
            try (Stream<Path> entries = Files.list(root)) {
                entries.filter(Files::isDirectory).forEach(p -> names.add(p.getFileName().toString()));
            }
        }
        for (String name : names) {
            List<Path> present = new ArrayList<>();
            List<Path> missing = new ArrayList<>();
            for (Path dir : dirs(name).values()) {
                (Files.isDirectory(dir) ? present : missing).add(dir);
            }
            if (missing.isEmpty()) {
                continue;
            }
            LOG.log(Level.WARNING, "cgroup pool: {0} exists in only some hierarchies; repairing", name);
            if (name.startsWith(FREE)) {
                for (Path dir : present) {
                    Files.deleteIfExists(dir);
                }
            } else {
                for (Path dir : missing) {
                    Files.createDirectory(dir);
                }
            }
        }
    }


    private static long slotNumber(String name) {
        try {
            return Long.parseLong(name.substring(FREE.length()));
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private Map<String, Path> dirs(String name) {
        return Claims.dirs(layout, name);
    }

    /** Creates one free cgroup in every hierarchy; a partial one is removed again. */
    private void addFree() throws CgroupException {
        String name = FREE + nextSlot.getAndIncrement();
        List<Path> made = new ArrayList<>();
        try {
            for (Path dir : dirs(name).values()) {
                Files.createDirectory(dir);
                made.add(dir);
            }
        } catch (IOException e) {
            for (Path dir : made.reversed()) {
                try {
                    Files.deleteIfExists(dir);
                } catch (IOException ignored) {
                    // reported below; the next open finds and reuses it
                }
            }
            throw new CgroupException("create pool cgroup " + name + ": " + e.getMessage(), e);
        }
        lock.lock();
        try {
            free.add(name);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Takes a free cgroup for {@code sandboxId}: renamed to the id on v1, recorded in the
     * claims directory on v2. No cgroup is created here unless the pool ran dry.
     */
    public Cgroup claim(String sandboxId) throws CgroupException {
        if (!Ids.isValid(sandboxId) || sandboxId.startsWith(FREE)) {
            throw new CgroupException("sandbox id " + sandboxId + " cannot name a cgroup: it must be " + Ids.RULE
                    + ", and not start with " + FREE);
        }
        String slot;
        lock.lock();
        try {
            if (claimed.containsKey(sandboxId)) {
                throw new CgroupException("sandbox " + sandboxId + " already holds a cgroup");
            }
            slot = free.pollFirst();
            claimed.put(sandboxId, null); // reserved while renaming below
            sizeChanged.signal();
        } finally {
            lock.unlock();
        }
        try {
            if (slot == null) {
                // The refiller could not keep up: pay for one mkdir here rather than fail.
                createdOnStartPath.incrementAndGet();
                LOG.log(Level.WARNING, "cgroup pool: empty, creating a cgroup on the start path of {0}", sandboxId);
                addFree();
                lock.lock();
                try {
                    slot = free.pollFirst();
                } finally {
                    lock.unlock();
                }
            }
            Cgroup cgroup = take(slot, sandboxId);
            lock.lock();
            try {
                claimed.put(sandboxId, cgroup);
            } finally {
                lock.unlock();
            }
            return cgroup;
        } catch (CgroupException | RuntimeException e) {
            lock.lock();
            try {
                claimed.remove(sandboxId);
            } finally {
                lock.unlock();
            }
            throw e;
        }
    }

    private Cgroup take(String slot, String sandboxId) throws CgroupException {
        try {
            return claims.take(slot, sandboxId);
        } catch (CgroupException e) {
            returnFree(slot);
            throw e;
        }
    }


    private void returnFree(String slot) {
        lock.lock();
        try {
            free.addFirst(slot);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Gives a sandbox's cgroup back: it must hold no process any more. Limits are reset and
     * the directory is renamed back to a free name (v1) or the claim is dropped (v2).
     * Releasing a cgroup the pool does not hold is a no-op, so release is idempotent.
     */
    public void release(Cgroup cgroup) throws CgroupException {
        lock.lock();
        try {
            if (claimed.get(cgroup.sandboxId()) != cgroup) {
                return;
            }
        } finally {
            lock.unlock();
        }
        List<Long> left = cgroup.pids();
        if (!left.isEmpty()) {
            throw new CgroupException(cgroup + " still holds processes " + left);
        }
        cgroup.setLimits(Cgroup.Limits.NONE);
        String slot = claims.giveBack(cgroup, () -> FREE + nextSlot.getAndIncrement());
        lock.lock();
        try {
            claimed.remove(cgroup.sandboxId());
            free.addLast(slot);
            sizeChanged.signal();
        } finally {
            lock.unlock();
        }
    }

    /** The cgroups held by sandboxes, as found at open or claimed since. */
    public Map<String, Cgroup> claimed() {
        lock.lock();
        try {
            Map<String, Cgroup> out = new HashMap<>(claimed);
            out.values().removeIf(c -> c == null);
            return out;
        } finally {
            lock.unlock();
        }
    }

    public int freeCount() {
        lock.lock();
        try {
            return free.size();
        } finally {
            lock.unlock();
        }
    }

    /** How many cgroups had to be created on a start path because the pool was empty. */
    public long createdOnStartPath() {
        return createdOnStartPath.get();
    }

    public CgroupLayout layout() {
        return layout;
    }

    /**
     * Keeps the free list at the pool's size: creates cgroups when claims took them, and
     * removes the surplus when releases brought back more than were taken since the refill.
     */
    private void refillLoop() {
        while (true) {
            String surplus = null;
            lock.lock();
            try {
                while (!closed && free.size() == size) {
                    sizeChanged.await();
                }
                if (closed) {
                    return;
                }
                if (free.size() > size) {
                    surplus = free.pollLast();
                }
            } catch (InterruptedException e) {
                return;
            } finally {
                lock.unlock();
            }
            try {
                if (surplus != null) {
                    removeFree(surplus);
                } else {
                    addFree();
                }
            } catch (CgroupException e) {
                LOG.log(Level.WARNING, "cgroup pool: keeping its size failed: {0}", e.getMessage());
                try {
                    Thread.sleep(1000);
                } catch (InterruptedException ie) {
                    return;
                }
            }
        }
    }

    private void removeFree(String name) throws CgroupException {
        for (Path dir : dirs(name).values()) {
            try {
                Files.deleteIfExists(dir);
            } catch (IOException e) {
                throw new CgroupException("remove surplus pool cgroup " + dir + ": " + e.getMessage(), e);
            }
        }
    }

    @Override
    public void close() {
        lock.lock();
        try {
            closed = true;
            sizeChanged.signalAll();
        } finally {
            lock.unlock();
        }
        try {
            refiller.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Closes the pool and removes its free cgroups and roots (uninstall, tests). Claimed ones stay. */
    public void destroy() throws CgroupException {
        close();
        lock.lock();
        try {
            for (String name : free) {
                removeFree(name);
            }
            free.clear();
            if (claimed.isEmpty()) {
                for (Path root : layout.roots().values()) {
                    try {
                        Files.deleteIfExists(root);
                    } catch (IOException e) {
                        throw new CgroupException("remove " + root + ": " + e.getMessage(), e);
                    }
                }
            }
        } finally {
            lock.unlock();
        }
    }
}
