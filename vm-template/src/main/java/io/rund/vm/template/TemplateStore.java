package io.rund.vm.template;

import io.rund.rootfs.Dirs;
import io.rund.rootfs.SandboxHelper;
import io.rund.rootfs.StoreException;
import io.rund.rootfs.WritableLayerStore;
import io.rund.vm.Digests;
import io.rund.vm.Hypervisor;
import io.rund.vm.Vm;
import io.rund.vm.VmConfig;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.System.Logger.Level;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * VM templates: a guest booted once to a ready agent, paused, and saved as its RAM (a
 * file on tmpfs) and its device state. A clone maps the RAM privately, so the kernel text
 * the boot patched and every page the clone does not write stay shared between clones,
 * and loads the device state instead of booting.
 *
 * <p>A template is keyed by a hash of what makes it: the kernel's and initramfs's bytes,
 * the disk's size, and the machine as the hypervisor would start it ({@link
 * Hypervisor#machine}: vCPUs, memory, accelerator, devices, kernel command line). A changed
 * key is a new template; the old one is removed when asked, safely under running clones:
 * its files are unlinked, and a clone's mapping keeps the RAM's pages until it exits.
 * Templates are built into a private directory and renamed into place, so a crash leaves
 * no half template that could be used.
 *
 * <p>Threads: any; one build per key at a time.
 */
public final class TemplateStore {

    private static final System.Logger LOG = System.getLogger(TemplateStore.class.getName());
    /** Bumped whenever what a template holds changes in a way neither its files nor its machine show. */
    static final String FORMAT = "v5";

    /**
     * What a template is made of. Its VM has the devices of a sandbox's, in the same
     * order: the agent's port, two virtio-fs devices, the image share and the host-directory
     * share (each served by a helper of its kind over an empty directory; the guest mounts
     * neither before a clone does), a virtio-blk disk of {@code diskBytes}, and a
     * virtio-net device on a tap of its own (left down: a clone's agent configures it, on
     * the clone's tap).
     *
     * <p>The disk: with {@code diskImage} (a formatted ext4 image of {@code diskBytes} in a
     * writable-layer store), a clone of it that the guest mounts before the save, as every
     * clone would at its first container; it is kept beside the image as
     * {@code template-<key>-<build>.img}, and each clone's layer must be a clone of that
     * ({@link Template#disk}), the disk the saved guest believes it has. Without, a sparse
     * empty file the guest leaves alone (the agent drops the guest's cache of it before it
     * mounts a clone's own), dropped after the build.
     */
    public record Spec(Path kernel, Path initramfs, int vcpus, int memoryMiB, long diskBytes, Path diskImage) {
        /** A template whose guest does not mount its disk. */
        public Spec(Path kernel, Path initramfs, int vcpus, int memoryMiB, long diskBytes) {
            this(kernel, initramfs, vcpus, memoryMiB, diskBytes, null);
        }
    }

    /**
     * A built template: clone it with {@link VmConfig.Ram#cloneOf}({@code ram}, {@code state});
     * {@code disk}, when not null, is the disk its guest mounted, which each clone's writable
     * layer is cloned from.
     */
    public record Template(String key, Path dir, Path ram, Path state, Path disk) {
        public VmConfig.Ram cloneRam() {
            return VmConfig.Ram.cloneOf(ram, state);
        }
    }

    private final Path root;
    private final Hypervisor hypervisor;
    private final GuestReady ready;
    private final Map<String, Object> building = new ConcurrentHashMap<>();
    /** Keys computed so far, by spec and the stamps of its files. */
    private final Map<String, String> keys = new ConcurrentHashMap<>();
    /** What each spec's key hashes besides its files (a command line to build): the same for the store's life. */
    private final Map<Spec, String> identities = new ConcurrentHashMap<>();

    /**
     * How a template's builder knows its guest is ready to be saved: the guest's agent
     * answered on {@code agentSocket} (the agent's client lives with the sandbox, above
     * this module, so the sandbox hands it in).
     */
    @FunctionalInterface
    public interface GuestReady {
        /** {@code mountDisk}: the serial of the disk the guest mounts before it is saved; null for none. */
        void await(Path agentSocket, String mountDisk) throws Exception;
    }

    private TemplateStore(Path root, Hypervisor hypervisor, GuestReady ready) {
        this.root = root;
        this.hypervisor = hypervisor;
        this.ready = ready;
    }

    /**
     * Opens the store at {@code root} (which should be tmpfs or hugetlbfs: clones map RAM
     * from it), removing what interrupted builds and removals left.
     */
    public static TemplateStore open(Path root, Hypervisor hypervisor, GuestReady ready) throws IOException {
        // Parents with the usual modes (createDirectories would give them all the root's 0700,
        // and VMs must pass through them to map a template's RAM).
        Files.createDirectories(root.getParent());
        if (!Files.isDirectory(root)) {
            Files.createDirectory(root, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        }
        hypervisor.grantVmRead(root);
        endBuildsLeft(root, hypervisor);
        try (Stream<Path> s = Files.list(root)) {
            for (Path p : s.toList()) {
                if (p.getFileName().toString().equals(MEMOS)) {
                    trimMemos(p);
                } else if (p.getFileName().toString().contains(".")) {
                    deleteDir(p); // <key>.building-N or <key>.removed-N
                } else if (Files.isDirectory(p)) {
                    // Built by an earlier daemon, perhaps one whose VMs were not confined: every VM reads it.
                    for (Path f : List.of(p, p.resolve("ram"), p.resolve("state"))) {
                        if (Files.exists(f)) {
                            hypervisor.grantVmRead(f);
                        }
                    }
                }
            }
        }
        return new TemplateStore(root, hypervisor, ready);
    }

    /** The key of a template: a hash of everything that makes it. */
    public String key(Spec spec) throws IOException {
        // Hashing 20 MB of kernel belongs to the first use, not to every clone's start; nor
        // to a new daemon's first start (250 ms of it before the JIT has compiled SHA-256),
        // which finds it in the memo an earlier daemon left.
        String stamp = spec + ";" + stamp(spec.kernel()) + ";" + stamp(spec.initramfs()) + ";"
                + identities.computeIfAbsent(spec, x -> identity(x, hypervisor));
        String known = keys.get(stamp);
        if (known != null) {
            return known;
        }
        Path memo = root.resolve(MEMOS).resolve(HexFormat.of().formatHex(
                Digests.sha256().digest(stamp.getBytes(StandardCharsets.UTF_8)), 0, 16));
        String key = readMemo(memo);
        if (key == null) {
            key = key(spec, hypervisor);
            writeMemo(memo, key);
        }
        keys.put(stamp, key);
        return key;
    }

    /**
     * The directory of key memos: one file per spec and stamps of its files (inode, size,
     * modification time: a replaced or rewritten kernel stamps differently), holding the key
     * they hash to. Its name has a dot, so it is never taken for a template.
     */
    static final String MEMOS = "keys.memo";
    /** More memos than this and they are all dropped when the store opens: each later key is hashed once again. */
    private static final int MEMOS_KEPT = 256;

    private static String readMemo(Path memo) {
        try {
            String key = Files.readString(memo).strip();
            return key.matches("[0-9a-f]{24}") ? key : null;
        } catch (IOException e) {
            return null; // none yet (or unreadable): hashed again
        }
    }

    /** Best effort: without a memo the next daemon hashes again. */
    private void writeMemo(Path memo, String key) {
        try {
            Files.createDirectories(memo.getParent());
            Path tmp = memo.resolveSibling(memo.getFileName() + ".tmp-" + ProcessHandle.current().pid());
            Files.writeString(tmp, key);
            Files.move(tmp, memo, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "template: memo of key {0} at {1}: {2}", key, memo, e.getMessage());
        }
    }

    private static void trimMemos(Path dir) throws IOException {
        List<Path> memos;
        try (Stream<Path> s = Files.list(dir)) {
            memos = s.toList();
        }
        if (memos.size() > MEMOS_KEPT || memos.stream().anyMatch(m -> m.getFileName().toString().contains(".tmp-"))) {
            deleteDir(dir);
        }
    }

    /** The VM a template of {@code spec} is built as (and its clones are made as). */
    static VmConfig vm(Spec spec, String id, Path dir, Path disk, Path fsSocket, Path hostSocket, VmConfig.Ram ram,
            String tap, int uid) {
        return VmConfig.sandbox(id, dir, spec.kernel(), spec.initramfs(), spec.vcpus(), spec.memoryMiB(), disk, fsSocket,
                hostSocket, ram, tap, uid);
    }

    /**
     * The key of the template that {@code hypervisor} would build for {@code spec}, computed
     * from the files and the machine alone: `rund check` uses it to tell whether a daemon
     * that is not running would find its template built.
     */
    public static String key(Spec spec, Hypervisor hypervisor) throws IOException {
        MessageDigest d = Digests.sha256();
        for (Path p : List.of(spec.kernel(), spec.initramfs())) {
            Digests.update(d, p);
        }
        d.update(identity(spec, hypervisor).getBytes(StandardCharsets.UTF_8));
        return HexFormat.of().formatHex(d.digest(), 0, 12);
    }

    /** What a key hashes besides the guest's files: the disk's size, the hypervisor and its machine, the format. */
    private static String identity(Spec spec, Hypervisor hypervisor) {
        Path dir = Path.of("/template");
        String machine = hypervisor.machine(vm(spec, "template", dir, dir.resolve("disk"), SandboxHelper.Kind.IMAGES.socket(dir),
                SandboxHelper.Kind.HOST_DIRS.socket(dir), VmConfig.Ram.template(dir.resolve("ram")), "tap", 0));
        return spec.diskBytes() + (spec.diskImage() == null ? "" : " mounted") + ";" + hypervisor.name() + ";" + machine
                + ";" + FORMAT;
    }

    /** A file's identity and version: replaced or rewritten, it reads differently. */
    private static String stamp(Path p) throws IOException {
        BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
        return a.fileKey() + ":" + a.size() + ":" + a.lastModifiedTime().to(TimeUnit.NANOSECONDS);
    }

    /** The template for {@code spec}, built now if there is none. */
    public Template get(Spec spec) throws TemplateException {
        String key;
        try {
            key = key(spec);
        } catch (IOException e) {
            throw new TemplateException("template: read " + spec.kernel() + " and " + spec.initramfs() + ": " + e.getMessage(), e);
        }
        Template t = fitting(key, spec);
        if (t != null) {
            return t;
        }
        synchronized (building.computeIfAbsent(key, k -> new Object())) {
            t = fitting(key, spec);
            return t != null ? t : build(key, spec);
        }
    }

    /**
     * The built template with this key if its disk is where {@code spec}'s clones make their
     * layers (the store of its image): one built beside another store (the node's store
     * moved) is rebuilt, as its clones' layers could not be cloned from its disk.
     */
    private Template fitting(String key, Spec spec) {
        Template t = existing(key);
        if (t == null || (spec.diskImage() == null ? t.disk() == null
                : t.disk() != null && t.disk().getParent().equals(spec.diskImage().getParent()))) {
            return t;
        }
        LOG.log(Level.INFO, "template {0}: its disk {1} is not in the layer store {2}; building it again", key, t.disk(),
                spec.diskImage() == null ? "(none)" : spec.diskImage().getParent());
        return null;
    }

    /** The built template with this key, or null (also when the disk its guest mounted is gone). */
    public Template existing(String key) {
        Path dir = root.resolve(key);
        Path disk = diskOf(dir);
        Template t = new Template(key, dir, dir.resolve("ram"), dir.resolve("state"), disk);
        return Files.isRegularFile(t.state()) && Files.isRegularFile(t.ram()) && (disk == null || Files.isRegularFile(disk))
                ? t : null;
    }

    /** The disk a template's guest mounted (its link {@code disk} names it), or null for none. */
    private static Path diskOf(Path dir) {
        try {
            return Files.readSymbolicLink(dir.resolve(DISK));
        } catch (IOException e) {
            return null; // no link: a template whose guest mounted no disk
        }
    }

    /** The link in a template's directory to the disk its guest mounted. */
    private static final String DISK = "disk";
    /** A template's disk in the layer store: template-KEY-BUILD.img. */
    private static final String DISK_PREFIX = "template-";

    /**
     * Whether {@code file}, in a layer store, is the disk of a template of the store at
     * {@code root}: the link of the template its name carries names it.
     */
    public static boolean holdsDisk(Path root, Path file) {
        String name = file.getFileName().toString();
        return name.startsWith(DISK_PREFIX)
                && file.equals(diskOf(root.resolve(name.substring(DISK_PREFIX.length()).split("-")[0])));
    }

    /** Removes from the layer store in {@code dir} every disk of a template of {@code key}. */
    private static void dropDisks(Path dir, String key) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.filter(p -> p.getFileName().toString().startsWith(DISK_PREFIX + key + "-")).toList()) {
                Files.deleteIfExists(p);
                LOG.log(Level.INFO, "template {0}: removed {1}, a disk no template holds", key, p);
            }
        }
    }

    private Template build(String key, Spec spec) throws TemplateException {
        long started = System.nanoTime();
        Path work = root.resolve(key + ".building-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        String what = "template " + key + ": ";
        Vm vm = null;
        Path mounted = null;
        SandboxHelper fs = null;
        SandboxHelper hostFs = null;
        int uid = 0;
        // The build VM's sockets and logs: a short path, as unix socket addresses are short.
        Path run = null;
        try {
            Files.createDirectory(work, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
            hypervisor.grantVmRead(work); // the building VM reaches its RAM and state files through it
            run = Files.createTempDirectory(runPrefix(root));
            Path empty = Files.createDirectory(run.resolve("empty"));
            Path emptyHost = Files.createDirectory(run.resolve("empty-host"));
            // A template of this key that is here but not whole (its disk is gone) goes first,
            // and with it, any disk a build of this key left: none belongs to a template.
            remove(key);
            if (spec.diskImage() != null) {
                dropDisks(spec.diskImage().getParent(), key);
                // Beside the image, on the store's filesystem, where clones' layers are cloned from it;
                // named by this build, so that no other build's link can ever name it.
                mounted = spec.diskImage().resolveSibling(DISK_PREFIX + key + "-" + System.nanoTime() + ".img");
                WritableLayerStore.cloneFile(spec.diskImage(), mounted);
            }
            Path disk = mounted != null ? mounted : work.resolve(DISK);
            if (mounted == null) {
                try (RandomAccessFile f = new RandomAccessFile(disk.toFile(), "rw")) {
                    f.setLength(spec.diskBytes());
                }
            }
            // The build VM's helpers serve empty shares: the devices must exist (clones have them)
            // and their back-ends' state travels with the template.
            uid = hypervisor.jail().acquire();
            fs = SandboxHelper.start("template-" + key, run, empty, hypervisor.jail().helperJail(uid),
                    SandboxHelper.Limits.DEFAULT);
            hostFs = SandboxHelper.start("template-" + key, run, emptyHost, hypervisor.jail().helperJail(uid),
                    SandboxHelper.Limits.DEFAULT, SandboxHelper.Kind.HOST_DIRS);
            vm = hypervisor.launch(vm(spec, "template-" + key, run, disk, fs.socket(), hostFs.socket(),
                    VmConfig.Ram.template(work.resolve("ram")), VmConfig.newTapName(), uid));
            // Ready means the agent answered; it then waits for the next host, which is a clone's.
            ready.await(run.resolve("agent.sock"), mounted == null ? null : VmConfig.UPPER_SERIAL);
            awaitHostGone(key, run.resolve("console.log"));
            vm.saveTemplate(work.resolve("state"));
            vm.stop(Duration.ofSeconds(5));
            vm.close(); // stopped: closing waits for its process, whose uid goes back below
            vm = null;
            // Every clone reads these; none may write them (the building VM's uid goes to the next VM).
            hypervisor.grantVmRead(work.resolve("ram"));
            hypervisor.grantVmRead(work.resolve("state"));
            if (mounted != null) {
                // Saved with the guest: stopped, its writes are all in the file.
                Files.createSymbolicLink(work.resolve(DISK), mounted);
            } else {
                Files.deleteIfExists(disk);
            }
            Files.writeString(work.resolve("template.json"), """
                    {"key":"%s","kernel":"%s","initramfs":"%s","vcpus":%d,"memoryMiB":%d,"format":"%s","buildMillis":%d}
                    """.formatted(key, spec.kernel(), spec.initramfs(), spec.vcpus(), spec.memoryMiB(), FORMAT,
                    (System.nanoTime() - started) / 1_000_000));
            try {
                Files.move(work, root.resolve(key), StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("rename " + work + " into place: " + e.getMessage(), e);
            }
            mounted = null; // the template's now
            LOG.log(Level.INFO, "template {0}: built in {1} ms ({2} vCPU, {3} MiB, {4})", key,
                    (System.nanoTime() - started) / 1_000_000, spec.vcpus(), spec.memoryMiB(),
                    hypervisor.accelerator().kind());
            return existing(key);
        } catch (Exception e) {
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            if (vm != null) {
                vm.close();
            }
            deleteDirQuietly(work);
            if (mounted != null) {
                try {
                    Files.deleteIfExists(mounted);
                } catch (IOException x) {
                    LOG.log(Level.WARNING, "template {0}: remove {1}: {2}", key, mounted, x.getMessage());
                }
            }
            throw new TemplateException(what + "build: " + e.getMessage(), e);
        } finally {
            if (fs != null) {
                fs.close();
            }
            if (hostFs != null) {
                hostFs.close();
            }
            if (uid > 0) {
                hypervisor.jail().release(uid); // the build VM and its helpers are gone: all closed above
            }
            if (run != null) {
                for (String d : List.of("empty", "empty-host")) { // its directories: removal does not descend
                    try {
                        Files.deleteIfExists(run.resolve(d));
                    } catch (IOException e) {
                        LOG.log(Level.WARNING, "template: remove {0}: {1}", run.resolve(d), e.getMessage());
                    }
                }
                deleteDirQuietly(run);
            }
        }
    }

    /** What the agent prints when it has seen its host leave and waits for the next one (agent/main.c). */
    static final String HOST_GONE = "rund-agent: host disconnected; waiting for it to come back";

    /**
     * Waits (a few seconds at most) until the building guest has seen the build's agent
     * connection close. Saved before that, the template's agent channel is still "connected"
     * in the guest and in QEMU's device state, and a clone's guest may learn of that old
     * host's departure only after the daemon's first connection arrived, dropping its first
     * call: a spare's start then waited for the Health call's whole timeout.
     */
    /**
     * The prefix of a build's run directory (sockets and logs, in the temporary directory for
     * short socket paths): named after the store, so that the next daemon knows its own.
     */
    private static String runPrefix(Path root) {
        return "rund-template-" + Integer.toHexString(root.toAbsolutePath().toString().hashCode()) + "-";
    }

    /**
     * Ends what a daemon that died during a build left: the build's VM, its helpers (which
     * wait for a VM that never came when the daemon died before launching it) and its run
     * directory. A build's VM runs in its run directory, which is how it is
     * known ({@link Hypervisor#vmDirKey}).
     */
    private static void endBuildsLeft(Path root, Hypervisor hypervisor) {
        Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
        String prefix = runPrefix(root);
        java.util.Map<Object, Path> runs = java.util.Map.of();
        try (java.util.stream.Stream<Path> s = Files.list(tmp)) {
            runs = Hypervisor.dirsByKey(s.filter(d -> d.getFileName().toString().startsWith(prefix)).toList());
        } catch (IOException e) {
            LOG.log(Level.WARNING, "template: list {0}: {1}", tmp, e.getMessage());
        }
        java.util.Map<Object, Path> builds = runs;
        ProcessHandle.allProcesses().forEach(p -> hypervisor.vmDirOf(p, builds)
                .ifPresent(d -> {
                    LOG.log(Level.INFO, "template: ending the build VM pid {0} of {1}, left by a previous daemon", p.pid(), d);
                    io.rund.rootfs.Syscalls.killAndAwait(p, java.time.Duration.ofSeconds(10));
                }));
        // A build killed before its VM came has helpers waiting for one: this jail's, named template-*.
        if (hypervisor.jail() != null) {
            String helper = hypervisor.jail().helper().toString();
            ProcessHandle.allProcesses().filter(p -> {
                try {
                    return Files.readSymbolicLink(Path.of("/proc", Long.toString(p.pid()), "exe")).toString().equals(helper)
                            && p.info().commandLine().orElse("").contains(" --name template-");
                } catch (IOException e) {
                    return false;
                }
            }).forEach(p -> {
                io.rund.rootfs.Syscalls.killAndAwait(p, java.time.Duration.ofSeconds(10));
            });
        }
        try (Stream<Path> s = Files.list(tmp)) {
            for (Path d : s.filter(d -> d.getFileName().toString().startsWith(prefix)).toList()) {
                deleteDirQuietly(d);
            }
        } catch (IOException e) {
            LOG.log(Level.WARNING, "template: list {0}: {1}", tmp, e.getMessage());
        }
    }

    private static void awaitHostGone(String key, Path console) throws InterruptedException {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (System.nanoTime() < end) {
            try {
                if (Files.readString(console).contains(HOST_GONE)) {
                    return;
                }
            } catch (IOException e) {
                // not written yet
            }
            Thread.sleep(10);
        }
        LOG.log(Level.WARNING, "template {0}: the guest did not report the build''s agent connection closed within 5 s;"
                + " saving anyway", key);
    }

    /**
     * Removes a template. Running clones keep working: the files are only unlinked (first
     * renamed, so no new clone can find a half-removed template), and their RAM lives on
     * in the clones' mappings until they exit.
     */
    public void remove(String key) throws IOException {
        Path dir = root.resolve(key);
        if (!Files.isDirectory(dir)) {
            return;
        }
        Path disk = diskOf(dir);
        Path gone = root.resolve(key + ".removed-" + System.nanoTime());
        Files.move(dir, gone, StandardCopyOption.ATOMIC_MOVE);
        deleteDir(gone);
        if (disk != null) {
            Files.deleteIfExists(disk); // clones' layers are copies of their own
        }
        LOG.log(Level.INFO, "template {0}: removed", key);
    }

    /** Removes every template but {@code keep}'s (safely under their clones, as {@link #remove}); returns their keys. */
    public List<String> prune(String keep) throws IOException {
        List<String> removed = new java.util.ArrayList<>();
        for (String k : keys()) {
            if (!k.equals(keep)) {
                remove(k);
                removed.add(k);
            }
        }
        return removed;
    }

    /** The keys of the built templates. */
    public List<String> keys() throws IOException {
        try (Stream<Path> s = Files.list(root)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> !n.contains(".")).sorted().toList();
        }
    }

    private static void deleteDirQuietly(Path dir) {
        try {
            deleteDir(dir);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "template: remove {0}: {1}", dir, e.getMessage());
        }
    }

    /** A template directory holds only files: removal never descends further. */
    private static void deleteDir(Path dir) throws IOException {
        Dirs.removeShallow(dir);
    }
}
