package io.rund.shim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The launcher against a control socket that answers Start with bytes no daemon would
 * send: an address whose length varint never ends, and one that claims more bytes than
 * the answer holds. It must say the answer is malformed and exit 1, never read past it.
 */
class LauncherAnswerTest {

    @Test
    void malformedStartAnswersAreRefusedNotFollowed(@TempDir Path dir) throws Exception {
        Path bin = dir.resolve("bin");
        Command.run(Duration.ofMinutes(2), Path.of("launcher").toAbsolutePath(), Map.of(),
                List.of("make", "-s", "OUT=" + bin)).ok();
        byte[][] answers = {
            // StartResponse.address (field 1, length-delimited) with an 11-byte varint length
            {0x0a, (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff,
                    (byte) 0xff, (byte) 0xff, (byte) 0xff, 0x01},
            // a length of 100 with three bytes behind it
            {0x0a, 0x64, 'a', 'b', 'c'},
            // a varint that is cut off by the end of the answer
            {0x0a, (byte) 0x80},
        };
        for (byte[] answer : answers) {
            Path socket = dir.resolve("control-" + answer.length + ".sock");
            try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
                server.bind(UnixDomainSocketAddress.of(socket));
                Thread peer = Thread.ofVirtual().start(() -> answerOnce(server, answer));
                Command.Result r = Command.run(Duration.ofSeconds(30), dir, Map.of("RUND_CONTROL_SOCKET", socket.toString()),
                        List.of(bin.resolve("containerd-shim-rund-v2").toString(), "-namespace", "ns", "-address", "/a",
                                "-publish-binary", "/b", "-id", "t1", "start"));
                peer.join();
                assertEquals(1, r.exitCode(), r.toString());
                assertTrue(r.stderr().contains("malformed Start answer"), r.toString());
                assertEquals("", r.stdout(), "nothing printed for containerd to dial");
            }
        }
    }

    /** Reads one ttrpc request frame and answers it with a Response whose payload is {@code payload}. */
    private static void answerOnce(ServerSocketChannel server, byte[] payload) {
        try (SocketChannel c = server.accept()) {
            ByteBuffer header = ByteBuffer.allocate(10);
            while (header.hasRemaining() && c.read(header) >= 0) {
                // the request's header
            }
            ByteBuffer body = ByteBuffer.allocate(header.getInt(0));
            while (body.hasRemaining() && c.read(body) >= 0) {
                // the request, not looked at
            }
            // ttrpc Response { payload = 2 } with status OK (absent)
            ByteBuffer response = ByteBuffer.allocate(2 + payload.length).put((byte) 0x12).put((byte) payload.length)
                    .put(payload).flip();
            ByteBuffer frame = ByteBuffer.allocate(10 + response.remaining());
            frame.putInt(response.remaining()).putInt(header.getInt(4)).put((byte) 2).put((byte) 0).put(response).flip();
            while (frame.hasRemaining()) {
                c.write(frame);
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
