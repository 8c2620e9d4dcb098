package io.rund.rootfs.virtiofs;

import static io.rund.rootfs.virtiofs.HostileDriver.error;
import static io.rund.rootfs.virtiofs.HostileDriver.handleOf;
import static io.rund.rootfs.virtiofs.HostileDriver.nodeOf;
import static io.rund.rootfs.virtiofs.HostileDriver.typeOf;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.NativeTools;
import io.rund.rootfs.Syscalls;
import io.rund.rootfs.SandboxHelper;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A sandbox's helper (rund-helper, its virtio-fs back-end) against a hostile guest, started
 * as production starts it (rund-jail, its own uid, pivoted into the share):
 * {@link HostileDriver} plays QEMU and a guest kernel that owns its FUSE client, and tries
 * what such a guest would: walk out of the share through symlinks, look names up under
 * files, forge nodes and handles, open FIFOs and devices, ask for huge reads, never forget,
 * and break the rings and the vhost-user protocol. A canary file beside the share must
 * never appear in a reply, and the helper must never die of a signal (a crash, or its
 * seccomp filter's kill).
 */
class SandboxHelperHostileTest {

    private static final int S_IFLNK = 0120000, S_IFREG = 0100000;
    private static final int CAP = 128 << 10;

    @TempDir
    Path dir;
    private Path share;
    private byte[] canary;
    private SandboxHelper fs;
    private HostileDriver guest;
    private SandboxHelper.Jail jail;

    /**
     * A share as an image is one: files, a directory, the symlinks stock images have
     * ({@code x -> /}, {@code var/run -> /run}) and one to the canary beside the share, a
     * FIFO, a socket and a device node.
     */
    @BeforeEach
    void share() throws Exception {
        share = Files.createDirectories(dir.resolve("share"));
        Path outside = Files.createDirectories(dir.resolve("outside"));
        canary = ("CANARY-" + UUID.randomUUID()).getBytes(StandardCharsets.US_ASCII);
        Files.write(outside.resolve("canary.txt"), canary);
        Files.writeString(share.resolve("hello.txt"), "hello from the image\n");
        Files.createDirectories(share.resolve("var"));
        Files.createSymbolicLink(share.resolve("var/run"), Path.of("/run"));
        Files.createSymbolicLink(share.resolve("x"), Path.of("/"));
        Files.createSymbolicLink(share.resolve("up"), Path.of("../outside"));
        Files.createSymbolicLink(share.resolve("canary"), outside.resolve("canary.txt"));
        Syscalls.mkfifo(share.resolve("fifo"), 0644);
        try (ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            s.bind(UnixDomainSocketAddress.of(share.resolve("sock")));
        }
        Process mknod = new ProcessBuilder("mknod", share.resolve("null").toString(), "c", "1", "3").start();
        assertEquals(0, mknod.waitFor(), "mknod of a character device (root may)");
    }

    private void serve(SandboxHelper.Limits limits) throws Exception {
        jail = new SandboxHelper.Jail(NativeTools.jailer(), NativeTools.helper(), NativeTools.TEST_GID + 1, NativeTools.TEST_GID);
        fs = SandboxHelper.start("hostile", dir, share, jail, limits);
        guest = HostileDriver.connect(fs, jail);
        assertEquals(0, error(guest.call(guest.init(), CAP)));
    }

    /** A fresh helper and front-end: a helper serves one front-end in its life. */
    private void restart() throws Exception {
        stop();
        serve(SandboxHelper.Limits.DEFAULT);
    }

    @AfterEach
    void stop() throws Exception {
        if (guest != null) {
            guest.close();
            guest = null;
        }
        if (fs != null) {
            // Its front-end gone, the helper exits by itself, with a status: never by a signal.
            java.util.OptionalInt status = fs.awaitExit(java.time.Duration.ofSeconds(5));
            fs.close();
            fs = null;
            assertTrue(status.isPresent(), "the helper outlived its front-end");
            assertTrue(status.getAsInt() == 0 || status.getAsInt() == 1, "the helper died with status " + status);
        }
    }

    private int stat(String name) throws Exception {
        return Integer.parseInt(fs.stats().get(name));
    }

    /** Every reply the guest can see: none may carry the canary. */
    private byte[] call(byte[] request) throws Exception {
        byte[] reply = guest.call(request, CAP);
        assertNotNull(reply, "every request but FORGET is answered");
        assertFalse(contains(reply, canary), "a reply carries the canary from outside the share");
        return reply;
    }

    static boolean contains(byte[] hay, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= hay.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return true;
        }
        return false;
    }

    @Test
    void symlinksAreNeverFollowedOnTheHost() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        // Today's escape, by name: LOOKUP(root, "x") where x -> /, then "etc", "shadow" under it.
        byte[] x = call(guest.lookup(1, "x"));
        assertEquals(S_IFLNK, typeOf(x), "x is a symlink node, not the host's /");
        long xNode = nodeOf(x);
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.lookup(xNode, "etc"))), "no lookup under a symlink node");
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.lookup(xNode, "shadow"))));
        assertEquals(-HostileDriver.ENXIO, error(call(guest.open(xNode))), "a symlink is never opened");
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.opendir(xNode))));
        // READLINK gives the link's own target, for the guest to resolve in its own tree.
        assertEquals("/", new String(call(guest.fuse(HostileDriver.READLINK, xNode, new byte[0])), 16, 1, StandardCharsets.UTF_8));

        long up = nodeOf(call(guest.lookup(1, "up")));
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.lookup(up, "canary.txt"))));
        long canaryLink = nodeOf(call(guest.lookup(1, "canary")));
        assertEquals(-HostileDriver.ENXIO, error(call(guest.open(canaryLink))));
        long var = nodeOf(call(guest.lookup(1, "var")));
        long run = nodeOf(call(guest.lookup(var, "run")));
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.lookup(run, "containerd"))), "/var/run -> /run stays a link");

        // A file's node is not a directory either.
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.lookup(hello, "a"))));
        assertEquals(-HostileDriver.ENOTDIR, error(call(guest.opendir(hello))));
    }

    @Test
    void namesThatAreNotOneComponentAreRefused() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        for (String bad : List.of("..", ".", "/", "a/b", "../outside", "/etc")) {
            assertTrue(error(call(guest.lookup(1, bad))) < 0, bad);
        }
        assertEquals(-HostileDriver.ENAMETOOLONG, error(call(guest.lookup(1, "a".repeat(4096)))));
        assertEquals(-HostileDriver.EINVAL, error(call(guest.fuse(HostileDriver.LOOKUP, 1, new byte[0]))), "no name");
        assertEquals(-HostileDriver.EINVAL, error(call(guest.fuse(HostileDriver.LOOKUP, 1, new byte[] {'a', 'b'}))),
                "no terminating NUL");
        assertEquals(-HostileDriver.EINVAL, error(call(guest.fuse(HostileDriver.LOOKUP, 1, new byte[] {0}))), "empty name");
        // A NUL ends the name: what follows it is not part of any path.
        byte[] withNul = "hello.txt\0/../../outside/canary.txt\0".getBytes(StandardCharsets.UTF_8);
        assertEquals(S_IFREG, typeOf(call(guest.fuse(HostileDriver.LOOKUP, 1, withNul))));
    }

    @Test
    void forgedNodesAndHandlesAreRefused() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        for (long forged : new long[] {0, 2, 3, 99, -1, Long.MAX_VALUE, 0x8000000000000000L}) {
            assertEquals(-HostileDriver.ENOENT, error(call(guest.fuse(HostileDriver.GETATTR, forged, new byte[16]))), "node " + forged);
            assertEquals(-HostileDriver.ENOENT, error(call(guest.lookup(forged, "hello.txt"))));
            assertEquals(-HostileDriver.EBADF, error(call(guest.read(HostileDriver.READ, 1, forged, 0, 100))), "handle " + forged);
            assertEquals(-HostileDriver.EBADF, error(call(guest.read(HostileDriver.READDIR, 1, forged, 0, 100))));
        }
        // A file handle is not a directory handle, nor the other way round.
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        long file = handleOf(call(guest.open(hello)));
        long root = handleOf(call(guest.opendir(1)));
        assertEquals(-HostileDriver.EBADF, error(call(guest.read(HostileDriver.READDIR, 1, file, 0, 4096))));
        assertEquals(-HostileDriver.EBADF, error(call(guest.read(HostileDriver.READ, 1, root, 0, 4096))));
    }

    @Test
    void fifosDevicesAndSocketsAreNeverOpenedAndNothingBlocks() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        for (String special : List.of("fifo", "null", "sock")) {
            long node = nodeOf(call(guest.lookup(1, special)));
            assertEquals(-HostileDriver.ENXIO, error(call(guest.open(node))), special);
        }
        assertEquals(0, error(call(guest.fuse(HostileDriver.GETATTR, 1, new byte[16]))), "still serving");
    }

    @Test
    void hugeReadsAreBoundedByTheBufferAndOffsetsByTheFile() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        long fh = handleOf(call(guest.open(hello)));
        byte[] all = call(guest.read(HostileDriver.READ, hello, fh, 0, Integer.MAX_VALUE));
        assertEquals("hello from the image\n", new String(all, 16, all.length - 16, StandardCharsets.UTF_8));
        assertEquals(16, call(guest.read(HostileDriver.READ, hello, fh, Long.MAX_VALUE, Integer.MAX_VALUE)).length,
                "past the end: no data");
        assertEquals(-HostileDriver.EINVAL, error(call(guest.read(HostileDriver.READ, hello, fh, -5, 10))));
        assertEquals(-HostileDriver.EROFS, error(call(guest.fuse(HostileDriver.OPEN, hello, HostileDriver.le(8).putInt(2).array()))));
        // A reply buffer too small for even a header gets nothing written.
        assertNull(guest.send(1, List.of(guest.read(HostileDriver.READ, hello, fh, 0, 100)), 8, 10_000).getFirst());
    }

    @Test
    void aHundredThousandEntryDirectoryListsInFullWithoutBeingHeld() throws Exception {
        Path big = Files.createDirectories(share.resolve("big"));
        for (int i = 0; i < 100_000; i++) {
            Files.createFile(big.resolve("f" + i));
        }
        serve(SandboxHelper.Limits.DEFAULT);
        long node = nodeOf(call(guest.lookup(1, "big")));
        long fh = handleOf(call(guest.opendir(node)));
        Set<String> seen = new HashSet<>();
        long[] next = {0};
        int calls = 0;
        while (true) {
            byte[] reply = call(guest.read(HostileDriver.READDIR, node, fh, next[0], 4096));
            assertEquals(0, error(reply));
            List<String> names = HostileDriver.names(reply, next);
            if (names.isEmpty()) {
                break;
            }
            seen.addAll(names);
            assertTrue(++calls < 100_000, "the listing ends");
        }
        assertEquals(100_002, seen.size(), "every entry once, with . and ..");
        assertTrue(seen.contains("f99999"));
        assertEquals(1, stat("handles"), "one open directory: its descriptor, no listing held");
    }

    @Test
    void nodesAndOpenFilesAreCappedAndForgetGivesRoomBack() throws Exception {
        for (int i = 0; i < 40; i++) {
            Files.writeString(share.resolve("n" + i), "n" + i);
        }
        serve(new SandboxHelper.Limits(30, 5));
        List<Long> nodes = new ArrayList<>();
        int refused = 0;
        for (int i = 0; i < 40; i++) {
            byte[] r = call(guest.lookup(1, "n" + i));
            if (error(r) == 0) {
                nodes.add(nodeOf(r));
            } else {
                assertEquals(-HostileDriver.ENOMEM, error(r));
                refused++;
            }
        }
        assertEquals(30, nodes.size(), "the cap");
        assertEquals(10, refused);
        assertEquals(0, error(call(guest.lookup(1, "n0"))), "a node it holds is found again at the cap");
        assertNull(guest.send(1, List.of(guest.forget(nodes.getFirst(), 2)), CAP, 10_000).getFirst(), "FORGET: no reply");
        assertEquals(0, error(call(guest.lookup(1, "n35"))), "room again after a FORGET");

        List<Long> handles = new ArrayList<>();
        for (int i = 1; i < 6; i++) {
            handles.add(handleOf(call(guest.open(nodes.get(i)))));
        }
        assertEquals(-HostileDriver.EMFILE, error(call(guest.open(nodes.get(6)))));
        assertEquals(-HostileDriver.EMFILE, error(call(guest.opendir(1))));
        call(guest.release(HostileDriver.RELEASE, nodes.get(1), handles.getFirst()));
        assertEquals(0, error(call(guest.open(nodes.get(6)))), "room again after a RELEASE");
    }

    @Test
    void ringAttacksStopTheQueueNotTheBackEnd() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        // A descriptor chain that loops.
        guest.descriptor(1, 0, HostileDriver.requestGpa(0), 40, HostileDriver.F_NEXT, 1);
        guest.descriptor(1, 1, HostileDriver.requestGpa(1), 40, HostileDriver.F_NEXT, 0);
        guest.offer(1, 0);
        guest.publish(1);
        assertFalse(guest.awaitUsed(1, guest.offered(1), 500), "a looping chain is not served");
        // The high-priority queue still serves.
        List<byte[]> other = guest.send(0, List.of(guest.fuse(HostileDriver.GETATTR, 1, new byte[16])), CAP, 10_000);
        assertNotNull(other, "the other queue is served");
        assertEquals(0, error(other.getFirst()));
        assertEquals("broken", fs.stats().get("queue1"));

        // Each attack against a fresh helper (one front-end each): the queue stops, the helper serves on.
        for (String attack : List.of("outside the memory table", "indirect", "avail index jump", "next out of the table",
                "huge length")) {
            restart();
            byte[] req = guest.fuse(HostileDriver.GETATTR, 1, new byte[16]);
            java.lang.foreign.MemorySegment.copy(req, 0, guest.ram, java.lang.foreign.ValueLayout.JAVA_BYTE,
                    HostileDriver.requestGpa(0), req.length);
            switch (attack) {
                case "outside the memory table" -> guest.descriptor(1, 0, 1L << 40, 40, (short) 0, 0);
                case "indirect" -> guest.descriptor(1, 0, HostileDriver.requestGpa(0), 32, HostileDriver.F_INDIRECT, 0);
                case "next out of the table" -> guest.descriptor(1, 0, HostileDriver.requestGpa(0), 40, HostileDriver.F_NEXT,
                        HostileDriver.QSIZE + 5);
                case "huge length" -> guest.descriptor(1, 0, HostileDriver.requestGpa(0), -1, (short) 0, 0);
                default -> guest.descriptor(1, 0, HostileDriver.requestGpa(0), 40, (short) 0, 0);
            }
            guest.offer(1, 0);
            guest.publish(1, attack.equals("avail index jump") ? guest.offered(1) + 1000 : guest.offered(1));
            assertFalse(guest.awaitUsed(1, guest.offered(1), 300), attack + " is not served");
            assertEquals(0, error(guest.send(0, List.of(guest.fuse(HostileDriver.GETATTR, 1, new byte[16])), CAP, 10_000)
                    .getFirst()), "the helper serves on after " + attack);
        }
    }

    @Test
    void shortAndOversizedVhostUserMessagesCostTheConnectionAndTheHelperExits() throws Exception {
        record Bad(String what, int request, int size, byte[] payload) {}
        for (Bad bad : List.of(new Bad("short SET_VRING_NUM", HostileDriver.SET_VRING_NUM, 4, new byte[4]),
                new Bad("short SET_VRING_BASE", HostileDriver.SET_VRING_BASE, 2, new byte[2]),
                new Bad("short SET_VRING_ENABLE", HostileDriver.SET_VRING_ENABLE, 0, new byte[0]),
                new Bad("short SET_VRING_ADDR", HostileDriver.SET_VRING_ADDR, 8, new byte[8]),
                new Bad("short SET_MEM_TABLE", HostileDriver.SET_MEM_TABLE, 8, HostileDriver.le(8).putInt(30).array()),
                new Bad("empty SET_FEATURES", HostileDriver.SET_FEATURES, 0, new byte[0]),
                new Bad("oversized", HostileDriver.SET_VRING_NUM, 1 << 20, new byte[8]),
                new Bad("negative size", HostileDriver.SET_VRING_NUM, -8, new byte[8]),
                new Bad("unknown request", 9999, 0, new byte[0]),
                new Bad("queue 7", HostileDriver.SET_VRING_NUM, 8, HostileDriver.le(8).putInt(7).putInt(256).array()))) {
            jail = new SandboxHelper.Jail(NativeTools.jailer(), NativeTools.helper(), NativeTools.TEST_GID + 1, NativeTools.TEST_GID);
            fs = SandboxHelper.start("hostile", dir, share, jail, SandboxHelper.Limits.DEFAULT);
            try (HostileDriver d = HostileDriver.attach(fs.socket(), jail)) {
                d.raw(bad.request(), 1, bad.size(), bad.payload());
                // The helper drops this connection, and with it its one front-end: it exits, status 1.
                assertThrowsClosed(d, bad.what());
                assertEquals(java.util.OptionalInt.of(1), fs.awaitExit(java.time.Duration.ofSeconds(5)), bad.what());
            }
            fs.close();
            fs = null;
        }
    }

    private static void assertThrowsClosed(HostileDriver d, String what) {
        try {
            d.message(HostileDriver.GET_FEATURES, new byte[0], true);
            throw new AssertionError(what + ": the back-end kept a connection that broke the protocol");
        } catch (Syscalls.SyscallException expected) {
            // closed, or reset
        }
    }

    @Test
    void servesFilesAndRefusesEverythingElse() throws Exception {
        Files.createSymbolicLink(share.resolve("link"), Path.of("/etc/passwd"));
        serve(SandboxHelper.Limits.DEFAULT);
        byte[] entry = call(guest.lookup(1, "hello.txt"));
        long node = nodeOf(entry);
        assertEquals(21, HostileDriver.body(entry).getLong(40 + 8), "the entry's size");
        long fh = handleOf(call(guest.open(node)));
        byte[] data = call(guest.read(HostileDriver.READ, node, fh, 6, 100));
        assertEquals("from the image\n", new String(data, 16, data.length - 16, StandardCharsets.UTF_8));
        long link = nodeOf(call(guest.lookup(1, "link")));
        byte[] target = call(guest.fuse(HostileDriver.READLINK, link, new byte[0]));
        assertEquals("/etc/passwd", new String(target, 16, target.length - 16, StandardCharsets.UTF_8),
                "a symlink's own target, for the guest to resolve in its own tree");
        assertEquals(-HostileDriver.EROFS, error(call(guest.fuse(HostileDriver.MKDIR, 1, new byte[16]))));
        assertEquals(-HostileDriver.ENOSYS, error(call(guest.fuse(HostileDriver.GETXATTR, node, new byte[16]))));
        byte[] lying = guest.fuse(HostileDriver.GETATTR, node, new byte[16]);
        java.nio.ByteBuffer.wrap(lying).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(0, 999);
        assertEquals(-HostileDriver.EINVAL, error(call(lying)), "a length that is not the request's");
        assertNull(guest.send(1, List.of(new byte[10]), CAP, 10_000).getFirst(), "shorter than a header: no answer");
        assertEquals(0, error(call(guest.fuse(HostileDriver.STATFS, 1, new byte[0]))));
        assertNull(guest.send(1, List.of(guest.forget(node, 1)), CAP, 10_000).getFirst(), "FORGET has no reply");
        assertEquals(-HostileDriver.ENOENT, error(call(guest.fuse(HostileDriver.GETATTR, node, new byte[16]))),
                "a forgotten node is gone");
        assertEquals(1, stat("nodes"), "only the link is still looked up");
    }

    @Test
    void theHelperIsConfinedByTheKernel() throws Exception {
        serve(SandboxHelper.Limits.DEFAULT);
        long pid = fs.process().pid();
        java.util.Map<String, String> status = new java.util.HashMap<>();
        for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
            int colon = line.indexOf(':');
            status.put(line.substring(0, colon), line.substring(colon + 1).strip());
        }
        assertEquals(jail.uid() + "\t" + jail.uid() + "\t" + jail.uid() + "\t" + jail.uid(), status.get("Uid"));
        assertEquals(jail.gid() + "\t" + jail.gid() + "\t" + jail.gid() + "\t" + jail.gid(), status.get("Gid"));
        assertEquals("", status.get("Groups"));
        assertEquals("0000000000000004", status.get("CapEff"), "dac_read_search alone");
        assertEquals("0000000000000004", status.get("CapPrm"));
        assertEquals("0000000000000000", status.get("CapInh"));
        assertEquals("0000000000000000", status.get("CapAmb"));
        assertEquals("1", status.get("NoNewPrivs"));
        assertEquals("2", status.get("Seccomp"), "a seccomp filter");
        assertEquals("2", status.get("Seccomp_filters"), "the allow-list, and the pin to its front-end");
        // Its mount namespace: the share is its root, and nothing of the host is mounted.
        List<String> mounts = Files.readAllLines(Path.of("/proc", Long.toString(pid), "mountinfo"));
        assertEquals(1, mounts.size(), "only the share: " + mounts);
        assertEquals("/", mounts.getFirst().split(" ")[4], "the share is its root");
        assertTrue(Files.exists(Path.of("/proc", Long.toString(pid), "root", "hello.txt")));
        assertFalse(Files.exists(Path.of("/proc", Long.toString(pid), "root", "etc")), "no host /etc");
    }

    @Test
    void theDaemonHoldsNothingOfTheShareAndTheHelperHoldsWhatTheGuestOpened() throws Exception {
        List<String> before = openFds("self");
        serve(new SandboxHelper.Limits(100, 10));
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        for (int i = 0; i < 10; i++) {
            handleOf(call(guest.open(hello)));
        }
        String pid = Long.toString(fs.process().pid());
        assertEquals(10, openFds(pid).stream().filter(t -> t.equals("/hello.txt")).count(), "the guest's ten open files");
        assertEquals(List.of(), openFds("self").stream().filter(t -> t.startsWith(share.toString())).toList(),
                "the test process (the daemon's part) never opens the share");
        assertEquals(10, stat("handles"));
        guest.close();
        guest = null;
        assertEquals(java.util.OptionalInt.of(0), fs.awaitExit(java.time.Duration.ofSeconds(5)),
                "its front-end gone, the helper exits");
        fs.close();
        fs = null;
        List<String> after = openFds("self");
        for (String kind : List.of("anon_inode:[eventfd]", "socket:")) {
            assertTrue(after.stream().filter(t -> t.startsWith(kind)).count() <= before.stream().filter(t -> t.startsWith(kind))
                    .count(), kind + " left open: " + after);
        }
    }

    /** What process {@code pid}'s ("self": this one's) descriptors refer to. */
    static List<String> openFds(String pid) throws Exception {
        List<String> targets = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc", pid, "fd"))) {
            for (Path fd : s.toList()) {
                try {
                    targets.add(Files.readSymbolicLink(fd).toString());
                } catch (java.io.IOException gone) {
                    // the listing's own descriptor, closed by now
                }
            }
        }
        return targets;
    }
}
