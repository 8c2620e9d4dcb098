package io.rund.rootfs.virtiofs;

import static io.rund.rootfs.virtiofs.HostileDriver.body;
import static io.rund.rootfs.virtiofs.HostileDriver.error;
import static io.rund.rootfs.virtiofs.HostileDriver.le;
import static io.rund.rootfs.virtiofs.HostileDriver.nodeOf;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.rootfs.SandboxHelper;
import io.rund.testing.NativeTools;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFileAttributes;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The host-directory share's helper (rund-helper --writable) against a hostile guest, started
 * as production starts it (rund-jail with its capabilities, its own uid, pivoted into the
 * share): what the guest writes lands in the share as the caller it names and nowhere else,
 * whatever names, nodes and links it tries; and every write a guest kernel sends is served
 * without the helper dying of its seccomp filter.
 */
class WritableHelperHostileTest {

    private static final int S_IFREG = 0100000, S_IFDIR = 0040000, S_IFIFO = 0010000, S_IFBLK = 0060000;
    private static final int FATTR_MODE = 1, FATTR_UID = 2, FATTR_GID = 4, FATTR_SIZE = 8;
    private static final int CAP = 128 << 10;

    @TempDir
    Path dir;
    private Path share;
    private Path outside;
    private byte[] canary;
    private SandboxHelper fs;
    private HostileDriver guest;

    @BeforeEach
    void serve() throws Exception {
        share = Files.createDirectories(dir.resolve("share"));
        outside = Files.createDirectories(dir.resolve("outside"));
        canary = ("CANARY-" + UUID.randomUUID()).getBytes(StandardCharsets.US_ASCII);
        Files.write(outside.resolve("canary.txt"), canary);
        Files.writeString(share.resolve("hello.txt"), "hello from the host\n");
        Files.createSymbolicLink(share.resolve("x"), Path.of("/"));
        Files.createSymbolicLink(share.resolve("up"), Path.of("../outside"));
        Files.createSymbolicLink(share.resolve("canary"), outside.resolve("canary.txt"));
        start(SandboxHelper.Limits.DEFAULT);
    }

    private void start(SandboxHelper.Limits limits) throws Exception {
        SandboxHelper.Jail jail = new SandboxHelper.Jail(NativeTools.jailer(), NativeTools.helper(),
                NativeTools.TEST_GID + 2, NativeTools.TEST_GID);
        fs = SandboxHelper.start("writable", dir, share, jail, limits, SandboxHelper.Kind.HOST_DIRS);
        guest = HostileDriver.connect(fs, jail);
        assertEquals(0, error(guest.call(guest.init(), CAP)));
        if (owners != null) {
            fs.allowOwners(owners.isEmpty(), owners.isEmpty() ? 0 : owners.getFirst(), owners.isEmpty() ? List.of(0)
                    : owners.subList(1, owners.size()));
        }
    }

    /**
     * Whom the next helper lets the guest give files to, as the daemon tells it from the pod's
     * specs: empty for anyone (a root container with CAP_CHOWN, the default here), else a uid
     * and its gids; null for nobody (the daemon said nothing yet).
     */
    private List<Integer> owners = List.of();

    @AfterEach
    void stop() throws Exception {
        guest.close();
        // Its front-end gone, the helper exits by itself, with a status: never by a signal (its seccomp filter's kill).
        java.util.OptionalInt status = fs.awaitExit(java.time.Duration.ofSeconds(5));
        fs.close();
        assertTrue(status.isPresent(), "the helper outlived its front-end");
        assertEquals(0, status.getAsInt(), "the helper's exit status");
        assertArrayEquals(canary, Files.readAllBytes(outside.resolve("canary.txt")), "the file outside the share is untouched");
        PosixFileAttributes a = Files.readAttributes(outside.resolve("canary.txt"), PosixFileAttributes.class);
        assertEquals("root", a.owner().getName());
    }

    private byte[] call(byte[] request) throws Exception {
        byte[] reply = guest.call(request, CAP);
        if (reply == null) {
            throw new AssertionError("no answer; the helper's log: " + Files.readString(dir.resolve("hostfs.log")));
        }
        assertFalse(SandboxHelperHostileTest.contains(reply, canary), "a reply carries the canary from outside the share");
        return reply;
    }

    private static byte[] names(String... names) {
        ByteBuffer b = le(java.util.Arrays.stream(names).mapToInt(n -> n.getBytes(StandardCharsets.UTF_8).length + 1).sum());
        for (String n : names) {
            b.put(n.getBytes(StandardCharsets.UTF_8)).put((byte) 0);
        }
        return b.array();
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    private byte[] create(int uid, int gid, long parent, String name, int flags, int mode) throws Exception {
        return call(guest.fuseAs(uid, gid, HostileDriver.CREATE, parent,
                concat(le(16).putInt(flags).putInt(mode).putInt(0).putInt(0).array(), names(name))));
    }

    private byte[] mkdir(int uid, int gid, long parent, String name, int mode) throws Exception {
        return call(guest.fuseAs(uid, gid, HostileDriver.MKDIR, parent, concat(le(8).putInt(mode).putInt(0).array(), names(name))));
    }

    private byte[] mknod(long parent, String name, int mode, int rdev) throws Exception {
        return call(guest.fuse(HostileDriver.MKNOD, parent, concat(le(16).putInt(mode).putInt(rdev).putInt(0).putInt(0).array(),
                names(name))));
    }

    private byte[] setattr(long node, int valid, long size, int mode, int uid, int gid) throws Exception {
        ByteBuffer b = le(88).putInt(valid).putInt(0).putLong(0).putLong(size);
        b.position(68);
        b.putInt(mode).putInt(0).putInt(uid).putInt(gid);
        return call(guest.fuse(HostileDriver.SETATTR, node, b.array()));
    }

    private byte[] write(long node, long fh, long offset, byte[] data, int claimed) throws Exception {
        return call(guest.fuse(HostileDriver.WRITE, node, concat(le(40).putLong(fh).putLong(offset).putInt(claimed).array(), data)));
    }

    private static PosixFileAttributes attrs(Path p) throws Exception {
        return Files.readAttributes(p, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
    }

    private static int uidOf(Path p) throws Exception {
        return (Integer) Files.getAttribute(p, "unix:uid", LinkOption.NOFOLLOW_LINKS);
    }

    private static int gidOf(Path p) throws Exception {
        return (Integer) Files.getAttribute(p, "unix:gid", LinkOption.NOFOLLOW_LINKS);
    }

    private static int modeOf(Path p) throws Exception {
        return (Integer) Files.getAttribute(p, "unix:mode", LinkOption.NOFOLLOW_LINKS);
    }

    @Test
    void whatTheGuestMakesBelongsToTheCallerItNamesAndLandsInTheShare() throws Exception {
        byte[] made = create(1234, 5678, 1, "new.txt", 2 /* O_RDWR */, 0640);
        assertEquals(0, error(made));
        long node = nodeOf(made);
        long fh = body(made).getLong(128); // after fuse_entry_out (128 bytes): fuse_open_out.fh
        byte[] data = "written by the guest".getBytes(StandardCharsets.UTF_8);
        assertEquals(data.length, body(write(node, fh, 0, data, data.length)).getInt(0));
        Path file = share.resolve("new.txt");
        assertEquals("written by the guest", Files.readString(file));
        assertEquals(data.length, Files.size(file));
        assertEquals(1234, uidOf(file));
        assertEquals(5678, gidOf(file));
        assertEquals(S_IFREG | 0640, modeOf(file));
        // Files grow past the helper's own log limit (no RLIMIT_FSIZE on this helper).
        assertEquals(data.length, body(write(node, fh, 3 << 20, data, data.length)).getInt(0));
        assertEquals((3 << 20) + data.length, Files.size(file));
        // A WRITE claiming more than it carries is refused, not read past.
        assertEquals(-HostileDriver.EINVAL, error(write(node, fh, 0, data, data.length + 4096)));
        // Set-ID bits never reach a host file, even from a pod that may give files to anyone.
        byte[] setuid = create(0, 0, 1, "suid", 2, 04755);
        assertEquals(0, error(setuid));
        assertEquals(S_IFREG | 0755, modeOf(share.resolve("suid")));
        // A directory, a FIFO; no device node.
        assertEquals(0, error(mkdir(1000, 1000, 1, "d", 0750)));
        assertEquals(S_IFDIR | 0750, modeOf(share.resolve("d")));
        assertEquals(1000, uidOf(share.resolve("d")));
        assertEquals(0, error(mknod(1, "fifo", S_IFIFO | 0644, 0)));
        assertTrue(Files.exists(share.resolve("fifo"), LinkOption.NOFOLLOW_LINKS));
        assertEquals(-HostileDriver.EPERM, error(mknod(1, "sda", S_IFBLK | 0600, (8 << 8))));
        assertFalse(Files.exists(share.resolve("sda"), LinkOption.NOFOLLOW_LINKS));
        // chmod, chown, truncate of a file the host made.
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        assertEquals(0, error(setattr(hello, FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE, 5, 0600, 42, 43)));
        assertEquals("hello", Files.readString(share.resolve("hello.txt")));
        assertEquals(42, uidOf(share.resolve("hello.txt")));
        assertEquals(S_IFREG | 0600, modeOf(share.resolve("hello.txt")));
    }

    @Test
    void namesLinksAndNodesReachNothingOutsideTheShare() throws Exception {
        for (String bad : new String[] {"..", ".", "a/b", "../outside/canary.txt", "/etc"}) {
            assertTrue(error(create(0, 0, 1, bad, 2, 0644)) < 0, bad);
            assertTrue(error(mkdir(0, 0, 1, bad, 0755)) < 0, bad);
            assertTrue(error(call(guest.fuse(HostileDriver.UNLINK, 1, names(bad)))) < 0, bad);
        }
        // Under a symlink node (x -> /, up -> ../outside) nothing is made or removed: it is not a directory.
        long x = nodeOf(call(guest.lookup(1, "x")));
        long up = nodeOf(call(guest.lookup(1, "up")));
        assertEquals(-HostileDriver.ENOTDIR, error(create(0, 0, x, "tmp-rund-escape", 2, 0644)));
        assertEquals(-HostileDriver.ENOTDIR, error(create(0, 0, up, "canary.txt", 2 | 01000 /* O_TRUNC */, 0644)));
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.fuse(HostileDriver.UNLINK, up, names("canary.txt")))));
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.fuse(HostileDriver.RENAME, 1,
                concat(le(8).putLong(up).array(), names("hello.txt", "canary.txt"))))));
        // A symlink node's attributes are its own: no chmod, chown changes the link, truncate is refused.
        long link = nodeOf(call(guest.lookup(1, "canary")));
        assertEquals(-HostileDriver.EOPNOTSUPP, error(setattr(link, FATTR_MODE, 0, 0777, 0, 0)));
        assertEquals(-HostileDriver.EINVAL, error(setattr(link, FATTR_SIZE, 0, 0, 0, 0)));
        assertEquals(0, error(setattr(link, FATTR_UID, 0, 0, 7, 0)));
        assertEquals(7, uidOf(share.resolve("canary")), "the link itself changed hands");
        // A symlink the guest makes points where it says, and is never followed on the host.
        assertEquals(0, error(call(guest.fuse(HostileDriver.SYMLINK, 1, names("evil", "/proc/self/root/etc/shadow")))));
        assertEquals(Path.of("/proc/self/root/etc/shadow"), Files.readSymbolicLink(share.resolve("evil")));
        long evil = nodeOf(call(guest.lookup(1, "evil")));
        assertEquals(-HostileDriver.ENXIO, error(call(guest.open(evil))));
        assertEquals(-HostileDriver.ENOTDIR, error(mkdir(0, 0, evil, "d", 0755)));
        // A hard link to a symlink is a link, not its target.
        assertEquals(0, error(call(guest.fuse(HostileDriver.LINK, 1, concat(le(8).putLong(link).array(), names("link2"))))));
        assertTrue(Files.isSymbolicLink(share.resolve("link2")));
        // Forged nodes and handles change nothing.
        for (long forged : new long[] {0, 99, -1, Long.MAX_VALUE}) {
            assertEquals(-HostileDriver.ENOENT, error(create(0, 0, forged, "f", 2, 0644)));
            assertEquals(-HostileDriver.ENOENT, error(setattr(forged, FATTR_SIZE, 0, 0, 0, 0)));
            assertEquals(-HostileDriver.EBADF, error(write(1, forged, 0, new byte[] {1}, 1)));
        }
    }

    @Test
    void renamesAndHardLinksKeepTheGuestsNodesWorking() throws Exception {
        // Within one directory of the share, as a container's bind is one (the share's root
        // holds only those, and nothing there is renamed or linked).
        assertEquals(0, error(mkdir(0, 0, 1, "t", 0755)));
        long t = nodeOf(call(guest.lookup(1, "t")));
        assertEquals(0, error(mkdir(0, 0, t, "a", 0755)));
        long a = nodeOf(call(guest.lookup(t, "a")));
        long f = nodeOf(create(0, 0, a, "f", 2, 0644));
        // The directory moves: the file's node, found under the old name, still resolves.
        assertEquals(0, error(call(guest.fuse(HostileDriver.RENAME, t, concat(le(8).putLong(t).array(), names("a", "z"))))));
        assertEquals(0, error(call(guest.fuse(HostileDriver.GETATTR, f, new byte[16]))));
        assertTrue(Files.exists(share.resolve("t/z/f")));
        // A second name, then the first removed: the node answers by the second.
        assertEquals(0, error(call(guest.fuse(HostileDriver.LINK, t, concat(le(8).putLong(f).array(), names("g"))))));
        assertEquals(0, error(call(guest.fuse(HostileDriver.UNLINK, nodeOf(call(guest.lookup(t, "z"))), names("f")))));
        assertEquals(0, error(call(guest.fuse(HostileDriver.GETATTR, f, new byte[16]))));
        // RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE swaps.
        assertEquals(0, error(create(0, 0, t, "h", 2, 0644)));
        assertEquals(-HostileDriver.EEXIST, error(call(guest.fuse(HostileDriver.RENAME2, t,
                concat(le(16).putLong(t).putInt(1).putInt(0).array(), names("g", "h"))))));
        assertEquals(0, error(call(guest.fuse(HostileDriver.RENAME2, t,
                concat(le(16).putLong(t).putInt(2).putInt(0).array(), names("g", "z"))))));
        assertTrue(Files.isDirectory(share.resolve("t/g")) && Files.isRegularFile(share.resolve("t/z")));
        assertEquals(0, error(call(guest.fuse(HostileDriver.GETATTR, f, new byte[16]))), "the file's node follows the exchange");
        // A whiteout is refused; removing a non-empty directory fails as the host's does.
        assertEquals(-HostileDriver.EINVAL, error(call(guest.fuse(HostileDriver.RENAME2, t,
                concat(le(16).putLong(t).putInt(4).putInt(0).array(), names("h", "w"))))));
        assertEquals(0, error(create(0, 0, nodeOf(call(guest.lookup(t, "g"))), "inside", 2, 0644)));
        assertEquals(-HostileDriver.ENOTEMPTY, error(call(guest.fuse(HostileDriver.RMDIR, t, names("g")))));
        // Extended attributes are not served (the guest stops asking).
        assertEquals(-HostileDriver.ENOSYS, error(call(guest.fuse(HostileDriver.SETXATTR, 1, new byte[16]))));
    }

    /** The bytes of node paths the helper holds, from its counters. */
    private long pathBytes() throws Exception {
        return Long.parseLong(fs.stats().get("path_bytes"));
    }

    @Test
    void secondNamesAndRenamesCannotGrowThePathsPastTheirCap() throws Exception {
        long cap = 8192;
        stop();
        start(new SandboxHelper.Limits(1 << 16, 512, cap));
        // Short first names, then a long second name for each (LINK answers the node at it).
        List<Long> files = new ArrayList<>();
        for (int i = 0; i < 40; i++) {
            files.add(nodeOf(create(0, 0, 1, String.format("g%02d", i), 2, 0644)));
        }
        int refused = 0;
        for (int i = 0; i < files.size(); i++) {
            int e = error(call(guest.fuse(HostileDriver.LINK, 1,
                    concat(le(8).putLong(files.get(i)).array(), names("L".repeat(250) + i)))));
            if (e == -HostileDriver.ENOMEM) {
                refused++;
            } else {
                assertEquals(0, e);
            }
            assertTrue(pathBytes() <= cap, "after LINK " + i + ": " + pathBytes() + " path bytes held");
        }
        assertTrue(refused > 0, "40 names of 250 bytes do not fit in " + cap);

        // Short paths, then their directory renamed long: every held path below it would grow.
        stop();
        start(new SandboxHelper.Limits(1 << 16, 512, cap));
        assertEquals(0, error(mkdir(0, 0, 1, "d", 0755)));
        long d = nodeOf(call(guest.lookup(1, "d")));
        for (int i = 0; i < 40; i++) {
            assertEquals(0, error(create(0, 0, d, String.format("f%02d", i), 2, 0644)));
        }
        long before = pathBytes();
        assertEquals(0, error(call(guest.fuse(HostileDriver.RENAME, 1,
                concat(le(8).putLong(1).array(), names("d", "D".repeat(250)))))));
        assertTrue(pathBytes() <= cap, "after the rename: " + pathBytes() + " path bytes held (" + before + " before)");
        assertTrue(pathBytes() > before, "what fits moved");
        assertTrue(Files.exists(share.resolve("D".repeat(250) + "/f39")), "the rename happened on the host");
    }

    /**
     * A hostile guest kernel under a pod whose process runs as nobody without CAP_CHOWN: it
     * claims uid 0 in the FUSE header, asks for set-ID modes and gives files to root. The
     * host file is never set-ID nor root-owned; the pod's own ids still work.
     */
    @Test
    void aGuestCannotMakeSetIdOrRootOwnedFilesBeyondItsPodsIds() throws Exception {
        stop();
        owners = List.of(65534, 65534, 100);
        start(SandboxHelper.Limits.DEFAULT);
        assertEquals(-HostileDriver.EPERM, error(create(0, 0, 1, "as-root", 2, 04755)), "CREATE as uid 0");
        assertFalse(Files.exists(share.resolve("as-root"), LinkOption.NOFOLLOW_LINKS), "nothing made");
        assertEquals(-HostileDriver.EPERM, error(create(65534, 0, 1, "root-group", 2, 0644)), "CREATE with gid 0");
        assertEquals(-HostileDriver.EPERM, error(mkdir(0, 0, 1, "root-dir", 0755)), "MKDIR as uid 0");
        assertEquals(-HostileDriver.EPERM, error(mknod(1, "root-fifo", S_IFIFO | 04644, 0)), "MKNOD as uid 0");
        byte[] mine = create(65534, 65534, 1, "mine", 2, 06755);
        assertEquals(0, error(mine));
        Path file = share.resolve("mine");
        assertEquals(S_IFREG | 0755, modeOf(file), "no set-ID bit from CREATE");
        long node = nodeOf(mine);
        assertEquals(0, error(setattr(node, FATTR_MODE, 0, 06755, 0, 0)));
        assertEquals(S_IFREG | 0755, modeOf(file), "no set-ID bit from SETATTR");
        assertEquals(-HostileDriver.EPERM, error(setattr(node, FATTR_UID, 0, 0, 0, 0)), "chown to root");
        assertEquals(-HostileDriver.EPERM, error(setattr(node, FATTR_GID, 0, 0, 0, 0)), "chgrp to root");
        assertEquals(65534, uidOf(file));
        assertEquals(0, error(setattr(node, FATTR_GID, 0, 0, 0, 100)), "chgrp to the pod's additional group");
        assertEquals(100, gidOf(file));
        assertEquals(0, error(setattr(node, FATTR_UID | FATTR_GID, 0, 0, 65534, 100)), "the owners it has: no change");
        // A file the host made, owned by root: without CAP_CHOWN the pod may neither take it
        // nor change its group (it is not the owner).
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        assertEquals(-HostileDriver.EPERM, error(setattr(hello, FATTR_UID, 0, 0, 65534, 0)));
        assertEquals(-HostileDriver.EPERM, error(setattr(hello, FATTR_GID, 0, 0, 0, 100)));
        assertEquals(0, uidOf(share.resolve("hello.txt")));
        assertEquals(0, gidOf(share.resolve("hello.txt")));
        // The helper holds no CAP_FSETID: a write cannot keep a host file's set-ID bit either.
        String status = Files.readString(Path.of("/proc", Long.toString(fs.process().pid()), "status"));
        long capEff = Long.parseLong(status.lines().filter(l -> l.startsWith("CapEff:")).findFirst().orElseThrow()
                .substring(7).strip(), 16);
        assertEquals(0, capEff & (1L << 4), "CAP_FSETID (4) in " + Long.toHexString(capEff));

        // Before the daemon names any owner, the guest makes nothing.
        stop();
        owners = null;
        start(SandboxHelper.Limits.DEFAULT);
        assertEquals(-HostileDriver.EPERM, error(create(65534, 65534, 1, "early", 2, 0644)));
        assertEquals(-HostileDriver.EPERM, error(mkdir(65534, 65534, 1, "early-dir", 0755)));
    }

    private static void run(String... argv) throws Exception {
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), String.join(" ", argv) + ": " + out);
    }

    /**
     * A pod that binds one host directory read-only into one container and writable into
     * another: two directories of the share, one inode. Each is a tree of its own to the
     * guest, so a write through the writable one is not sent to the read-only one's path.
     */
    @Test
    void oneDirectoryBoundTwiceIsTwoTrees() throws Exception {
        stop();
        Path host = Files.createDirectories(dir.resolve("host-dir"));
        Files.writeString(host.resolve("f"), "from the host\n");
        Path ro = Files.createDirectories(share.resolve("c1.1"));
        Path rw = Files.createDirectories(share.resolve("c2.2"));
        run("mount", "--bind", host.toString(), ro.toString());
        try {
            run("mount", "-o", "remount,bind,ro", ro.toString());
            run("mount", "--bind", host.toString(), rw.toString());
            try {
                start(SandboxHelper.Limits.DEFAULT);
                long roDir = nodeOf(call(guest.lookup(1, "c1.1")));
                long rwDir = nodeOf(call(guest.lookup(1, "c2.2")));
                assertTrue(roDir != rwDir, "one node for both trees");
                assertEquals(0, error(create(0, 0, rwDir, "made", 2, 0644)), "made through the writable tree");
                assertTrue(Files.exists(host.resolve("made")));
                assertEquals(-HostileDriver.EROFS, error(create(0, 0, roDir, "refused", 2, 0644)),
                        "the read-only tree stays read-only");
                assertTrue(nodeOf(call(guest.lookup(roDir, "f"))) != nodeOf(call(guest.lookup(rwDir, "f"))));
            } finally {
                run("umount", "-l", rw.toString());
            }
        } finally {
            run("umount", "-l", ro.toString());
        }
    }
}
