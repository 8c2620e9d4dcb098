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

import io.rund.rootfs.Syscalls;
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
 * The virtio-fs back-end against a hostile guest: {@link HostileDriver} plays QEMU and a
 * guest kernel that owns its FUSE client, and tries what such a guest would: walk out of
 * the share through symlinks, look names up under files, forge nodes and handles, open
 * FIFOs and devices, ask for huge reads, never forget, and break the rings and the
 * vhost-user protocol. A canary file beside the share must never appear in a reply.
 */
class VhostUserFsHostileTest {

    private static final int S_IFLNK = 0120000, S_IFREG = 0100000;
    private static final int CAP = 128 << 10;

    @TempDir
    Path dir;
    private Path share;
    private byte[] canary;
    private VhostUserFs fs;
    private HostileDriver guest;

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

    private void serve(FuseServer.Limits limits) throws Exception {
        fs = VhostUserFs.start("hostile", dir.resolve("vu.sock"), share, limits);
        guest = HostileDriver.connect(dir.resolve("vu.sock"));
        assertEquals(0, error(guest.call(guest.init(), CAP)));
    }

    @AfterEach
    void stop() {
        if (fs != null) {
            fs.close();
        }
        if (guest != null) {
            guest.close();
        }
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
        serve(FuseServer.Limits.DEFAULT);
        // Today's escape, by name: LOOKUP(root, "x") where x -> /, then "etc", "shadow" under it.
        byte[] x = call(guest.lookup(1, "x"));
        assertEquals(S_IFLNK, typeOf(x), "x is a symlink node, not the host's /");
        long xNode = nodeOf(x);
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.lookup(xNode, "etc"))), "no lookup under a symlink node");
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.lookup(xNode, "shadow"))));
        assertEquals(-FuseServer.ENXIO, error(call(guest.open(xNode))), "a symlink is never opened");
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.opendir(xNode))));
        // READLINK gives the link's own target, for the guest to resolve in its own tree.
        assertEquals("/", new String(call(guest.fuse(FuseServer.READLINK, xNode, new byte[0])), 16, 1, StandardCharsets.UTF_8));

        long up = nodeOf(call(guest.lookup(1, "up")));
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.lookup(up, "canary.txt"))));
        long canaryLink = nodeOf(call(guest.lookup(1, "canary")));
        assertEquals(-FuseServer.ENXIO, error(call(guest.open(canaryLink))));
        long var = nodeOf(call(guest.lookup(1, "var")));
        long run = nodeOf(call(guest.lookup(var, "run")));
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.lookup(run, "containerd"))), "/var/run -> /run stays a link");

        // A file's node is not a directory either.
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.lookup(hello, "a"))));
        assertEquals(-FuseServer.ENOTDIR, error(call(guest.opendir(hello))));
    }

    @Test
    void namesThatAreNotOneComponentAreRefused() throws Exception {
        serve(FuseServer.Limits.DEFAULT);
        for (String bad : List.of("..", ".", "/", "a/b", "../outside", "/etc")) {
            assertTrue(error(call(guest.lookup(1, bad))) < 0, bad);
        }
        assertEquals(-FuseServer.ENAMETOOLONG, error(call(guest.lookup(1, "a".repeat(4096)))));
        assertEquals(-FuseServer.EINVAL, error(call(guest.fuse(FuseServer.LOOKUP, 1, new byte[0]))), "no name");
        assertEquals(-FuseServer.EINVAL, error(call(guest.fuse(FuseServer.LOOKUP, 1, new byte[] {'a', 'b'}))),
                "no terminating NUL");
        assertEquals(-FuseServer.EINVAL, error(call(guest.fuse(FuseServer.LOOKUP, 1, new byte[] {0}))), "empty name");
        // A NUL ends the name: what follows it is not part of any path.
        byte[] withNul = "hello.txt\0/../../outside/canary.txt\0".getBytes(StandardCharsets.UTF_8);
        assertEquals(S_IFREG, typeOf(call(guest.fuse(FuseServer.LOOKUP, 1, withNul))));
    }

    @Test
    void forgedNodesAndHandlesAreRefused() throws Exception {
        serve(FuseServer.Limits.DEFAULT);
        for (long forged : new long[] {0, 2, 3, 99, -1, Long.MAX_VALUE, 0x8000000000000000L}) {
            assertEquals(-FuseServer.ENOENT, error(call(guest.fuse(FuseServer.GETATTR, forged, new byte[16]))), "node " + forged);
            assertEquals(-FuseServer.ENOENT, error(call(guest.lookup(forged, "hello.txt"))));
            assertEquals(-FuseServer.EBADF, error(call(guest.read(FuseServer.READ, 1, forged, 0, 100))), "handle " + forged);
            assertEquals(-FuseServer.EBADF, error(call(guest.read(FuseServer.READDIR, 1, forged, 0, 100))));
        }
        // A file handle is not a directory handle, nor the other way round.
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        long file = handleOf(call(guest.open(hello)));
        long root = handleOf(call(guest.opendir(1)));
        assertEquals(-FuseServer.EBADF, error(call(guest.read(FuseServer.READDIR, 1, file, 0, 4096))));
        assertEquals(-FuseServer.EBADF, error(call(guest.read(FuseServer.READ, 1, root, 0, 4096))));
    }

    @Test
    void fifosDevicesAndSocketsAreNeverOpenedAndNothingBlocks() throws Exception {
        serve(FuseServer.Limits.DEFAULT);
        for (String special : List.of("fifo", "null", "sock")) {
            long node = nodeOf(call(guest.lookup(1, special)));
            assertEquals(-FuseServer.ENXIO, error(call(guest.open(node))), special);
        }
        assertEquals(0, error(call(guest.fuse(FuseServer.GETATTR, 1, new byte[16]))), "still serving");
    }

    @Test
    void hugeReadsAreBoundedByTheBufferAndOffsetsByTheFile() throws Exception {
        serve(FuseServer.Limits.DEFAULT);
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        long fh = handleOf(call(guest.open(hello)));
        byte[] all = call(guest.read(FuseServer.READ, hello, fh, 0, Integer.MAX_VALUE));
        assertEquals("hello from the image\n", new String(all, 16, all.length - 16, StandardCharsets.UTF_8));
        assertEquals(16, call(guest.read(FuseServer.READ, hello, fh, Long.MAX_VALUE, Integer.MAX_VALUE)).length,
                "past the end: no data");
        assertEquals(-FuseServer.EINVAL, error(call(guest.read(FuseServer.READ, hello, fh, -5, 10))));
        assertEquals(-FuseServer.EROFS, error(call(guest.fuse(FuseServer.OPEN, hello, HostileDriver.le(8).putInt(2).array()))));
        // A reply buffer too small for even a header gets nothing written.
        assertNull(guest.send(1, List.of(guest.read(FuseServer.READ, hello, fh, 0, 100)), 8, 10_000).getFirst());
    }

    @Test
    void aHundredThousandEntryDirectoryListsInFullWithoutBeingHeld() throws Exception {
        Path big = Files.createDirectories(share.resolve("big"));
        for (int i = 0; i < 100_000; i++) {
            Files.createFile(big.resolve("f" + i));
        }
        serve(FuseServer.Limits.DEFAULT);
        long node = nodeOf(call(guest.lookup(1, "big")));
        long fh = handleOf(call(guest.opendir(node)));
        Set<String> seen = new HashSet<>();
        long[] next = {0};
        int calls = 0;
        while (true) {
            byte[] reply = call(guest.read(FuseServer.READDIR, node, fh, next[0], 4096));
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
        assertEquals(1, fs.handles(), "one open directory: its descriptor, no listing held");
    }

    @Test
    void nodesAndOpenFilesAreCappedAndForgetGivesRoomBack() throws Exception {
        for (int i = 0; i < 40; i++) {
            Files.writeString(share.resolve("n" + i), "n" + i);
        }
        serve(new FuseServer.Limits(30, 5));
        List<Long> nodes = new ArrayList<>();
        int refused = 0;
        for (int i = 0; i < 40; i++) {
            byte[] r = call(guest.lookup(1, "n" + i));
            if (error(r) == 0) {
                nodes.add(nodeOf(r));
            } else {
                assertEquals(-FuseServer.ENOMEM, error(r));
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
        assertEquals(-FuseServer.EMFILE, error(call(guest.open(nodes.get(6)))));
        assertEquals(-FuseServer.EMFILE, error(call(guest.opendir(1))));
        call(guest.release(FuseServer.RELEASE, nodes.get(1), handles.getFirst()));
        assertEquals(0, error(call(guest.open(nodes.get(6)))), "room again after a RELEASE");
    }

    @Test
    void ringAttacksStopTheQueueNotTheBackEnd() throws Exception {
        serve(FuseServer.Limits.DEFAULT);
        // A descriptor chain that loops.
        guest.descriptor(1, 0, HostileDriver.requestGpa(0), 40, HostileDriver.F_NEXT, 1);
        guest.descriptor(1, 1, HostileDriver.requestGpa(1), 40, HostileDriver.F_NEXT, 0);
        guest.offer(1, 0);
        guest.publish(1);
        assertFalse(guest.awaitUsed(1, guest.offered(1), 500), "a looping chain is not served");
        // The high-priority queue still serves.
        List<byte[]> other = guest.send(0, List.of(guest.fuse(FuseServer.GETATTR, 1, new byte[16])), CAP, 10_000);
        assertNotNull(other, "the other queue is served");
        assertEquals(0, error(other.getFirst()));
        guest.close();

        // Each attack on a fresh connection: the back-end takes a new front-end after each.
        for (String attack : List.of("outside the memory table", "indirect", "avail index jump", "next out of the table",
                "huge length")) {
            guest = HostileDriver.connect(dir.resolve("vu.sock"));
            assertEquals(0, error(guest.call(guest.init(), CAP)), "a new front-end is served before " + attack);
            byte[] req = guest.fuse(FuseServer.GETATTR, 1, new byte[16]);
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
            guest.close();
        }
        guest = HostileDriver.connect(dir.resolve("vu.sock"));
        assertEquals(0, error(guest.call(guest.init(), CAP)), "served after every attack");
    }

    @Test
    void shortAndOversizedVhostUserMessagesCostTheConnectionOnly() throws Exception {
        serve(FuseServer.Limits.DEFAULT);
        guest.close();
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
            try (HostileDriver d = HostileDriver.connect(dir.resolve("vu.sock"))) {
                d.raw(bad.request(), 1, bad.size(), bad.payload());
                // The back-end drops this connection: the next read sees the end.
                assertThrowsClosed(d, bad.what());
            }
        }
        guest = HostileDriver.connect(dir.resolve("vu.sock"));
        assertEquals(0, error(guest.call(guest.init(), CAP)), "a well-behaved front-end is still served");
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
    void nothingIsLeftOpenAfterClose() throws Exception {
        List<String> before = openFds();
        serve(new FuseServer.Limits(100, 10));
        long hello = nodeOf(call(guest.lookup(1, "hello.txt")));
        for (int i = 0; i < 10; i++) {
            handleOf(call(guest.open(hello)));
        }
        assertEquals(11, openFds().stream().filter(t -> t.startsWith(share.toString())).count(),
                "the share's root and the guest's ten open files");
        fs.close();
        fs = null;
        guest.close();
        guest = null;
        List<String> after = openFds();
        assertEquals(List.of(), after.stream().filter(t -> t.startsWith(share.toString())).toList());
        for (String kind : List.of("anon_inode:[eventfd]", "socket:")) {
            assertTrue(after.stream().filter(t -> t.startsWith(kind)).count() <= before.stream().filter(t -> t.startsWith(kind))
                    .count(), kind + " left open: " + after);
        }
    }

    /** What this process's descriptors refer to. */
    static List<String> openFds() throws Exception {
        List<String> targets = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
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
