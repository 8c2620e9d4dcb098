package io.rund.rootfs.virtiofs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The FUSE server over a real directory, driven with the bytes a guest kernel sends. */
class FuseServerTest {

    private static byte[] request(int opcode, long nodeid, byte[] body) {
        ByteBuffer b = ByteBuffer.allocate(FuseServer.IN_HEADER + body.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(FuseServer.IN_HEADER + body.length).putInt(opcode).putLong(7).putLong(nodeid).putInt(0).putInt(0)
                .putInt(1).putShort((short) 0).putShort((short) 0).put(body);
        return b.array();
    }

    private static byte[] name(String n) {
        byte[] s = n.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(s.length + 1).put(s).array();
    }

    /** The reply's error (negative errno, 0 for success). */
    private static int error(byte[] reply) {
        return ByteBuffer.wrap(reply).order(ByteOrder.LITTLE_ENDIAN).getInt(4);
    }

    private static ByteBuffer body(byte[] reply) {
        return ByteBuffer.wrap(reply, FuseServer.OUT_HEADER, reply.length - FuseServer.OUT_HEADER).slice()
                .order(ByteOrder.LITTLE_ENDIAN);
    }

    @Test
    void looksUpOpensAndReadsAFileAndRefusesEverythingElse(@TempDir Path root) throws Exception {
        Files.writeString(root.resolve("hello.txt"), "hello from the image\n");
        Files.createSymbolicLink(root.resolve("link"), Path.of("/etc/passwd"));
        FuseServer fs = new FuseServer(root);
        try {
        ByteBuffer init = ByteBuffer.allocate(64).order(ByteOrder.LITTLE_ENDIAN).putInt(7).putInt(38).putInt(1 << 16);
        assertEquals(0, error(fs.handle(request(FuseServer.INIT, 0, init.array()), 4096)));

        byte[] entry = fs.handle(request(FuseServer.LOOKUP, 1, name("hello.txt")), 4096);
        assertEquals(0, error(entry));
        long node = body(entry).getLong(0);
        assertEquals(21, body(entry).getLong(40 + 8), "the entry's size");
        byte[] open = fs.handle(request(FuseServer.OPEN, node, new byte[8]), 4096);
        assertEquals(0, error(open));
        long fh = body(open).getLong(0);
        ByteBuffer read = ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN).putLong(fh).putLong(6).putInt(100);
        byte[] data = fs.handle(request(FuseServer.READ, node, read.array()), 4096);
        assertEquals("from the image\n", new String(data, FuseServer.OUT_HEADER, data.length - FuseServer.OUT_HEADER,
                StandardCharsets.UTF_8));

        // A symlink is not followed on the host: the guest gets its target to resolve itself.
        long link = body(fs.handle(request(FuseServer.LOOKUP, 1, name("link")), 4096)).getLong(0);
        byte[] target = fs.handle(request(FuseServer.READLINK, link, new byte[0]), 4096);
        assertEquals("/etc/passwd", new String(target, FuseServer.OUT_HEADER, target.length - FuseServer.OUT_HEADER,
                StandardCharsets.UTF_8));

        assertEquals(-FuseServer.ENOENT, error(fs.handle(request(FuseServer.LOOKUP, 1, name("..")), 4096)),
                "no way up from the root");
        assertEquals(-FuseServer.ENOENT, error(fs.handle(request(FuseServer.LOOKUP, 1, name("a/b")), 4096)));
        assertEquals(-FuseServer.ENOENT, error(fs.handle(request(FuseServer.LOOKUP, 99, name("x")), 4096)),
                "an unknown node");
        assertEquals(-FuseServer.EROFS, error(fs.handle(request(FuseServer.OPEN, node, new byte[] {1, 0, 0, 0, 0, 0, 0, 0}), 4096)),
                "open for writing");
        assertEquals(-FuseServer.EROFS, error(fs.handle(request(9 /* MKDIR */, 1, new byte[16]), 4096)));
        assertEquals(-FuseServer.ENOSYS, error(fs.handle(request(22 /* GETXATTR */, node, new byte[16]), 4096)));
        assertEquals(-FuseServer.EBADF, error(fs.handle(request(FuseServer.READ, node,
                ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN).putLong(12345).array()), 4096)));
        byte[] lying = request(FuseServer.GETATTR, node, new byte[16]);
        ByteBuffer.wrap(lying).order(ByteOrder.LITTLE_ENDIAN).putInt(0, 999);
        assertEquals(-FuseServer.EINVAL, error(fs.handle(lying, 4096)), "a length that is not the request's");
        assertNull(fs.handle(new byte[10], 4096), "shorter than a header: nothing to answer");

        ByteBuffer forget = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(1);
        assertNull(fs.handle(request(FuseServer.FORGET, node, forget.array()), 4096), "FORGET has no reply");
        assertEquals(1, fs.openNodes(), "only the link is still looked up");
        assertEquals(-FuseServer.ENOENT, error(fs.handle(request(FuseServer.GETATTR, node, new byte[16]), 4096)),
                "a forgotten node is gone");
        } finally {
            fs.close();
        }
    }
}
