package io.rund.rootfs.virtiofs;

import static io.rund.rootfs.virtiofs.HostileDriver.error;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.NativeTools;
import io.rund.rootfs.Syscalls;
import io.rund.rootfs.SandboxHelper;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.UUID;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A seeded, structure-aware fuzzer of a sandbox's helper (its virtio-fs back-end, started as
 * production starts it) through {@link HostileDriver}:
 * FUSE requests built the way a guest builds them, with node ids and handles the back-end
 * gave out mixed with forged ones, names from the share mixed with traversal attempts and
 * junk, sizes and offsets at their extremes, and headers and bodies mangled. The back-end
 * must answer every request (FORGETs excepted) or close, never crash or hang; no reply may
 * carry the canary from beside the share; its nodes, open files, descriptors and memory stay
 * under the caps; it never dies of a signal. The host-directory share's helper gets write
 * requests too (creates, links, renames, attributes, writes), built and mangled the same
 * way: afterwards nothing beside the share has changed and the share holds no device node.
 *
 * <p>CI runs {@code rund.fuzz.requests} (200,000) from seed {@code rund.fuzz.seed}; run
 * longer by hand with {@code -Drund.fuzz.requests=5000000 -Drund.fuzz.seed=...}.
 */
class SandboxHelperFuzzTest {

    private static final int[] OPCODES = {HostileDriver.LOOKUP, HostileDriver.FORGET, HostileDriver.GETATTR, HostileDriver.READLINK,
            HostileDriver.OPEN, HostileDriver.READ, HostileDriver.STATFS, HostileDriver.RELEASE, HostileDriver.FLUSH, HostileDriver.OPENDIR,
            HostileDriver.READDIR, HostileDriver.RELEASEDIR, HostileDriver.INTERRUPT, HostileDriver.BATCH_FORGET, 4, 9, 16, 22, 35};
    private static final String[] NAMES = {"hello.txt", "dir", "x", "up", "canary", "fifo", "var", "run", "etc", "shadow",
            "deep", "a", "..", ".", "", "/", "a/b", "../outside", "canary.txt", "f1", "f2", "f3", "link-loop"};
    private static final int NODE_CAP = 200;
    private static final int HANDLE_CAP = 16;

    @TempDir
    Path dir;

    /** What a writable share is also sent: the requests that change it. */
    private static final int[] WRITES = {HostileDriver.CREATE, HostileDriver.MKDIR, HostileDriver.MKNOD, HostileDriver.SYMLINK,
            HostileDriver.LINK, HostileDriver.UNLINK, HostileDriver.RMDIR, HostileDriver.RENAME, HostileDriver.RENAME2,
            HostileDriver.SETATTR, HostileDriver.WRITE, 20 /* FSYNC */, 43 /* FALLOCATE */};

    @ParameterizedTest
    @EnumSource(SandboxHelper.Kind.class)
    void theBackEndAnswersEveryRequestAndNeverLeaksOrGrows(SandboxHelper.Kind kind) throws Exception {
        boolean writable = kind == SandboxHelper.Kind.HOST_DIRS;
        long seed = Long.getLong("rund.fuzz.seed", 20261128L);
        int count = Integer.getInteger("rund.fuzz.requests", 200_000);
        Path share = Files.createDirectories(dir.resolve("share"));
        Path outside = Files.createDirectories(dir.resolve("outside"));
        byte[] canary = ("CANARY-" + UUID.randomUUID()).getBytes(StandardCharsets.US_ASCII);
        Files.write(outside.resolve("canary.txt"), canary);
        Files.writeString(share.resolve("hello.txt"), "hello\n".repeat(2000));
        Path deep = Files.createDirectories(share.resolve("dir/deep/a/b"));
        for (int i = 1; i <= 3; i++) {
            Files.writeString(share.resolve("dir/f" + i), "f" + i);
            Files.writeString(deep.resolve("f" + i), "deep f" + i);
        }
        Files.createDirectories(share.resolve("var"));
        Files.createSymbolicLink(share.resolve("var/run"), Path.of("/run"));
        Files.createSymbolicLink(share.resolve("x"), Path.of("/"));
        Files.createSymbolicLink(share.resolve("up"), Path.of("../outside"));
        Files.createSymbolicLink(share.resolve("canary"), outside.resolve("canary.txt"));
        Files.createSymbolicLink(share.resolve("link-loop"), Path.of("link-loop"));
        Syscalls.mkfifo(share.resolve("fifo"), 0644);

        long entriesBefore;
        try (var all = Files.walk(share)) {
            entriesBefore = all.count();
        }
        Random rnd = new Random(seed);
        List<Long> nodes = new ArrayList<>(List.of(1L));
        List<Long> handles = new ArrayList<>();
        SandboxHelper.Jail jail = new SandboxHelper.Jail(NativeTools.jailer(), NativeTools.helper(), NativeTools.TEST_GID + 2, NativeTools.TEST_GID);
        try (SandboxHelper fs = SandboxHelper.start("fuzz", dir, share, jail, new SandboxHelper.Limits(NODE_CAP, HANDLE_CAP),
                kind);
                HostileDriver guest = HostileDriver.connect(fs, jail)) {
            assertEquals(0, error(guest.call(guest.init(), 4096)));
            if (writable) {
                fs.allowOwners(true, 0, List.of(0)); // a root pod's, with CAP_CHOWN: the most a guest may do
            }
            int sent = 0;
            long answered = 0;
            while (sent < count) {
                int batch = Math.min(HostileDriver.SLOTS, count - sent);
                List<byte[]> requests = new ArrayList<>();
                for (int i = 0; i < batch; i++) {
                    requests.add(request(guest, rnd, nodes, handles, writable));
                }
                int capacity = switch (rnd.nextInt(8)) {
                    case 0 -> rnd.nextInt(40);
                    case 1 -> HostileDriver.REPLY_BYTES;
                    default -> 4096;
                };
                int queue = rnd.nextInt(10) == 0 ? 0 : 1;
                List<byte[]> replies = guest.send(queue, requests, capacity, 30_000);
                assertNotNull(replies, "seed " + seed + ": the back-end did not answer a batch after " + sent + " requests");
                for (int i = 0; i < batch; i++) {
                    byte[] req = requests.get(i);
                    byte[] reply = replies.get(i);
                    if (reply == null) {
                        continue; // FORGET, INTERRUPT, a mangled header, or no room for even a header
                    }
                    answered++;
                    ByteBuffer r = ByteBuffer.wrap(reply).order(ByteOrder.LITTLE_ENDIAN);
                    assertEquals(reply.length, r.getInt(0), "seed " + seed + ": a reply's length is its own");
                    assertTrue(reply.length <= capacity);
                    assertEquals(ByteBuffer.wrap(req).order(ByteOrder.LITTLE_ENDIAN).getLong(8), r.getLong(8),
                            "seed " + seed + ": a reply answers its own request");
                    int err = r.getInt(4);
                    assertTrue(err <= 0 && err > -4096, "seed " + seed + ": error " + err);
                    assertFalse(SandboxHelperHostileTest.contains(reply, canary), "seed " + seed + ": the canary leaked");
                    learn(req, reply, nodes, handles);
                }
                sent += batch;
                if (sent % 6400 == 0 || sent == count) {
                    java.util.Map<String, String> stats = fs.stats();
                    assertTrue(Integer.parseInt(stats.get("handles")) <= HANDLE_CAP, "open files and directories within the cap");
                    assertTrue(Integer.parseInt(stats.get("nodes")) <= NODE_CAP, "nodes within the cap");
                }
            }
            String pid = Long.toString(fs.process().pid());
            long fds = SandboxHelperHostileTest.openFds(pid).size();
            assertTrue(fds <= HANDLE_CAP + 12, fds + " descriptors in the helper");
            long rssKiB = Files.readAllLines(Path.of("/proc", pid, "status")).stream().filter(l -> l.startsWith("VmRSS:"))
                    .mapToLong(l -> Long.parseLong(l.replaceAll("[^0-9]", ""))).findFirst().orElseThrow();
            assertTrue(rssKiB < 32 << 10, "the helper's resident memory stays small: " + rssKiB + " KiB");
            assertEquals(0, error(guest.call(guest.fuse(HostileDriver.GETATTR, 1, new byte[16]), 4096)), "still serving");
            System.out.printf("fuzz: seed %d, %d requests, %d answered, %s at the end, VmRSS %d KiB%n", seed, sent,
                    answered, fs.stats(), rssKiB);
            guest.close();
            assertEquals(java.util.OptionalInt.of(0), fs.awaitExit(java.time.Duration.ofSeconds(5)),
                    "the helper exits with its front-end, never by a signal");
        }
        try (var outsideNow = Files.list(outside)) {
            assertEquals(List.of(outside.resolve("canary.txt")), outsideNow.toList(), "nothing made beside the share");
        }
        org.junit.jupiter.api.Assertions.assertArrayEquals(canary, Files.readAllBytes(outside.resolve("canary.txt")));
        try (var all = Files.walk(share)) {
            List<Path> entries = all.toList();
            if (writable) {
                assertTrue(entries.size() > entriesBefore, "the fuzzer's writes made something: " + entries.size());
            } else {
                assertEquals(entriesBefore, entries.size(), "a read-only share is unchanged");
            }
            for (Path p : entries) {
                int type = (Integer) Files.getAttribute(p, "unix:mode", java.nio.file.LinkOption.NOFOLLOW_LINKS) & 0170000;
                assertTrue(type != 0060000 && type != 0020000, "no device node in the share: " + p);
            }
        }
    }

    /** Remembers the node ids and handles the back-end gave out, for later requests to use. */
    private static void learn(byte[] req, byte[] reply, List<Long> nodes, List<Long> handles) {
        if (error(reply) != 0 || reply.length < 24) {
            return;
        }
        int opcode = ByteBuffer.wrap(req).order(ByteOrder.LITTLE_ENDIAN).getInt(4);
        long first = ByteBuffer.wrap(reply).order(ByteOrder.LITTLE_ENDIAN).getLong(16);
        boolean entry = opcode == HostileDriver.LOOKUP || opcode == HostileDriver.MKDIR || opcode == HostileDriver.MKNOD
                || opcode == HostileDriver.SYMLINK || opcode == HostileDriver.LINK || opcode == HostileDriver.CREATE;
        if (entry && nodes.size() < 1000) {
            nodes.add(first);
        }
        if ((opcode == HostileDriver.OPEN || opcode == HostileDriver.OPENDIR) && handles.size() < 1000) {
            handles.add(first);
        } else if (opcode == HostileDriver.CREATE && reply.length >= 16 + 128 + 8 && handles.size() < 1000) {
            handles.add(ByteBuffer.wrap(reply).order(ByteOrder.LITTLE_ENDIAN).getLong(16 + 128));
        }
    }

    private static long pick(Random rnd, List<Long> known) {
        return switch (rnd.nextInt(10)) {
            case 0 -> rnd.nextLong();
            case 1 -> rnd.nextInt(5);
            default -> known.isEmpty() ? rnd.nextInt(100) : known.get(rnd.nextInt(known.size()));
        };
    }

    private static long extreme(Random rnd) {
        return switch (rnd.nextInt(6)) {
            case 0 -> Long.MAX_VALUE;
            case 1 -> -1 - rnd.nextInt(100);
            case 2 -> rnd.nextLong();
            default -> rnd.nextInt(20000);
        };
    }

    private static byte[] name(Random rnd) {
        return switch (rnd.nextInt(8)) {
            case 0 -> {
                byte[] junk = new byte[rnd.nextInt(300)];
                rnd.nextBytes(junk);
                yield junk;
            }
            case 1 -> ("a".repeat(rnd.nextInt(5000))).getBytes(StandardCharsets.UTF_8);
            default -> HostileDriver.name(NAMES[rnd.nextInt(NAMES.length)]);
        };
    }

    private static byte[] cat(byte[]... parts) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    /** A mode: mostly a plain file or directory's, sometimes a device's or any bits at all. */
    private static int mode(Random rnd) {
        return switch (rnd.nextInt(6)) {
            case 0 -> rnd.nextInt();
            case 1 -> 0060000 | 0600; // a block device
            case 2 -> 0020000 | 0600; // a character device
            case 3 -> 0010000 | 0644; // a FIFO
            default -> 0100000 | rnd.nextInt(010000);
        };
    }

    private static byte[] request(HostileDriver guest, Random rnd, List<Long> nodes, List<Long> handles, boolean writable) {
        int opcode = rnd.nextInt(20) == 0 ? rnd.nextInt(64)
                : writable && rnd.nextBoolean() ? WRITES[rnd.nextInt(WRITES.length)] : OPCODES[rnd.nextInt(OPCODES.length)];
        long node = pick(rnd, nodes);
        byte[] body = switch (opcode) {
            case HostileDriver.LOOKUP -> name(rnd);
            case HostileDriver.FORGET -> HostileDriver.le(8).putLong(rnd.nextInt(4)).array();
            case HostileDriver.BATCH_FORGET -> {
                int n = rnd.nextInt(20);
                ByteBuffer b = HostileDriver.le(8 + 16 * n).putInt(rnd.nextInt(5) == 0 ? rnd.nextInt() : n).putInt(0);
                for (int i = 0; i < n; i++) {
                    b.putLong(pick(rnd, nodes)).putLong(rnd.nextInt(3));
                }
                yield b.array();
            }
            case HostileDriver.OPEN, HostileDriver.OPENDIR -> HostileDriver.le(8).putInt(rnd.nextInt(4) == 0 ? rnd.nextInt() : 0)
                    .array();
            case HostileDriver.READ, HostileDriver.READDIR -> HostileDriver.le(40).putLong(pick(rnd, handles))
                    .putLong(extreme(rnd)).putInt(rnd.nextInt(4) == 0 ? rnd.nextInt() : 4096).array();
            case HostileDriver.RELEASE, HostileDriver.RELEASEDIR -> HostileDriver.le(24).putLong(pick(rnd, handles)).array();
            case HostileDriver.CREATE -> cat(HostileDriver.le(16).putInt(rnd.nextInt(4) == 0 ? rnd.nextInt() : 0102)
                    .putInt(mode(rnd)).array(), name(rnd));
            case HostileDriver.MKDIR -> cat(HostileDriver.le(8).putInt(mode(rnd)).array(), name(rnd));
            case HostileDriver.MKNOD -> cat(HostileDriver.le(16).putInt(mode(rnd)).putInt(rnd.nextInt()).array(), name(rnd));
            case HostileDriver.SYMLINK -> cat(name(rnd), name(rnd));
            case HostileDriver.UNLINK, HostileDriver.RMDIR -> name(rnd);
            case HostileDriver.LINK -> cat(HostileDriver.le(8).putLong(pick(rnd, nodes)).array(), name(rnd));
            case HostileDriver.RENAME -> cat(HostileDriver.le(8).putLong(pick(rnd, nodes)).array(), name(rnd), name(rnd));
            case HostileDriver.RENAME2 -> cat(HostileDriver.le(16).putLong(pick(rnd, nodes)).putInt(rnd.nextInt(8)).array(),
                    name(rnd), name(rnd));
            case HostileDriver.SETATTR -> HostileDriver.le(88).putInt(rnd.nextInt(1 << 10)).putInt(0).putLong(pick(rnd, handles))
                    .putLong(rnd.nextInt(3) == 0 ? extreme(rnd) : rnd.nextInt(100_000)).putLong(0).putLong(extreme(rnd))
                    .putLong(extreme(rnd)).putLong(0).putInt(rnd.nextInt()).putInt(rnd.nextInt()).putInt(0).putInt(mode(rnd))
                    .putInt(0).putInt(rnd.nextInt(70000)).putInt(rnd.nextInt(70000)).array();
            case HostileDriver.WRITE -> {
                byte[] data = new byte[rnd.nextInt(3000)];
                rnd.nextBytes(data);
                int claimed = rnd.nextInt(4) == 0 ? rnd.nextInt() : data.length;
                yield cat(HostileDriver.le(40).putLong(pick(rnd, handles)).putLong(rnd.nextInt(3) == 0 ? extreme(rnd)
                        : rnd.nextInt(100_000)).putInt(claimed).array(), data);
            }
            case 20, 43 -> HostileDriver.le(32).putLong(pick(rnd, handles)).putLong(extreme(rnd)).putLong(extreme(rnd))
                    .putInt(rnd.nextInt(4)).array();
            default -> {
                byte[] b = new byte[rnd.nextInt(64)];
                rnd.nextBytes(b);
                yield b;
            }
        };
        byte[] req = guest.fuse(opcode, node, body);
        switch (rnd.nextInt(30)) {
            case 0 -> ByteBuffer.wrap(req).order(ByteOrder.LITTLE_ENDIAN).putInt(0, rnd.nextInt()); // a lying length
            case 1 -> req = java.util.Arrays.copyOf(req, rnd.nextInt(req.length)); // truncated
            case 2 -> req[rnd.nextInt(req.length)] ^= (byte) (1 << rnd.nextInt(8)); // one bit flipped
            default -> {
                // well-formed
            }
        }
        return req.length > HostileDriver.REQUEST_BYTES ? java.util.Arrays.copyOf(req, HostileDriver.REQUEST_BYTES) : req;
    }
}
