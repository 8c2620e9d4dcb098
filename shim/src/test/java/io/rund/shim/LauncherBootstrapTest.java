package io.rund.shim;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.UnknownFieldSet;
import io.rund.testing.Command;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What the launcher reads on a start's stdin and what it answers, for each containerd:
 * the runtime options as a bare Any (1.6 to 2.2), or a BootstrapParams (2.3 and later),
 * its bytes written here from the field numbers of containerd's
 * api/runtime/bootstrap/v1/bootstrap.proto. The daemon is a control socket of the test's
 * that records the Start request and answers an address.
 */
class LauncherBootstrapTest {

    private static final String ADDRESS = "unix:///run/rund/t/abc.sock";
    private static Path launcher;

    @TempDir
    static Path bin;

    @BeforeAll
    static void build() throws Exception {
        Command.run(Duration.ofMinutes(2), Path.of("launcher").toAbsolutePath(), Map.of(),
                List.of("make", "-s", "OUT=" + bin)).ok();
        launcher = bin.resolve("containerd-shim-rund-v2");
    }

    /** runc's options, as containerd 1.x writes them on stdin. */
    private static final byte[] OPTIONS = Any.newBuilder().setTypeUrl("containerd.runc.v1.Options")
            .setValue(ByteString.copyFromUtf8("\n\u0004runc")).build().toByteArray();

    private static byte[] bootstrapParams(String id, String namespace) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        CodedOutputStream out = CodedOutputStream.newInstance(bytes);
        out.writeString(1, id); // instance_id
        out.writeString(2, namespace);
        out.writeInt32(3, -4); // log_level DEBUG: a negative enum, ten bytes of varint
        out.writeString(4, "2.3.0"); // containerd_version
        out.writeString(5, "/run/containerd/containerd.sock.ttrpc");
        out.writeString(6, "/run/containerd/containerd.sock");
        out.writeString(7, "/usr/bin/containerd");
        ByteArrayOutputStream extension = new ByteArrayOutputStream();
        CodedOutputStream ext = CodedOutputStream.newInstance(extension);
        ext.writeBytes(1, ByteString.copyFrom(OPTIONS)); // Extension.value
        ext.flush();
        out.writeBytes(8, ByteString.copyFrom(extension.toByteArray()));
        out.writeString(9, "/run/containerd/s"); // socket_dir, 2.3's later addition
        out.flush();
        return bytes.toByteArray();
    }

    /** Runs `start` with {@code stdin}; the request the daemon got, and what the launcher printed. */
    private static Object[] start(Path dir, byte[] stdin, Map<String, String> env) throws Exception {
        Path socket = dir.resolve("control.sock");
        Files.deleteIfExists(socket);
        Path input = Files.write(dir.resolve("stdin"), stdin);
        AtomicReference<byte[]> request = new AtomicReference<>();
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(socket));
            Thread peer = Thread.ofVirtual().start(() -> answerOnce(server, request));
            Map<String, String> all = new HashMap<>(env);
            all.put("RUND_CONTROL_SOCKET", socket.toString());
            Command.Result r = Command.run(Duration.ofSeconds(30), dir, all, List.of("sh", "-c",
                    "exec \"$0\" -namespace k8s.io -address /a -publish-binary /b -id t1 start < \"$1\"",
                    launcher.toString(), input.toString()));
            peer.join();
            assertEquals(0, r.exitCode(), r.toString());
            return new Object[] {UnknownFieldSet.parseFrom(request.get()), r.stdout()};
        }
    }

    private static ByteString field(Object[] started, int number) {
        List<ByteString> values = ((UnknownFieldSet) started[0]).getField(number).getLengthDelimitedList();
        return values.isEmpty() ? ByteString.EMPTY : values.getFirst();
    }

    @Test
    void legacyOptionsArePassedOnAndTheBareAddressPrinted(@TempDir Path dir) throws Exception {
        Object[] s = start(dir, OPTIONS, Map.of("TTRPC_ADDRESS", "/env/ttrpc", "MAX_SHIM_VERSION", "2"));
        assertEquals(ByteString.copyFrom(OPTIONS), field(s, 7), "the Any, as containerd wrote it");
        assertEquals("/env/ttrpc", field(s, 5).toStringUtf8());
        assertEquals(ADDRESS, s[1], "containerd 1.6 reads a bare address only");

        Object[] none = start(dir, new byte[0], Map.of());
        assertEquals(ByteString.EMPTY, field(none, 7), "no options");
        assertEquals(ADDRESS, none[1]);
    }

    @Test
    void bootstrapParamsAreReadAndAnsweredWithTaskApiV3(@TempDir Path dir) throws Exception {
        Object[] s = start(dir, bootstrapParams("t1", "k8s.io"), Map.of());
        assertEquals(ByteString.copyFrom(OPTIONS), field(s, 7), "the options, from the params' extension");
        assertEquals("/run/containerd/containerd.sock.ttrpc", field(s, 5).toStringUtf8(), "containerd's ttrpc address");
        assertEquals("{\"version\":3,\"address\":\"" + ADDRESS + "\",\"protocol\":\"ttrpc\"}", s[1]);
    }

    @Test
    void paramsOfAnotherTaskAreNotTakenForBootstrap(@TempDir Path dir) throws Exception {
        // An options Any can parse as a BootstrapParams; only the id and namespace tell them apart.
        byte[] other = bootstrapParams("t2", "k8s.io");
        Object[] s = start(dir, other, Map.of());
        assertEquals(ByteString.copyFrom(other), field(s, 7), "taken for options, passed on whole");
        assertEquals(ADDRESS, s[1]);
    }

    /** Reads one ttrpc request frame, keeps its payload, and answers StartResponse { address }. */
    private static void answerOnce(ServerSocketChannel server, AtomicReference<byte[]> got) {
        try (SocketChannel c = server.accept()) {
            ByteBuffer header = read(c, 10);
            ByteBuffer body = read(c, header.getInt(0));
            // ttrpc Request { service = 1; method = 2; payload = 3; ... }
            List<ByteString> payload = UnknownFieldSet.parseFrom(body.array()).getField(3).getLengthDelimitedList();
            got.set(payload.isEmpty() ? new byte[0] : payload.getFirst().toByteArray());
            ByteArrayOutputStream answer = new ByteArrayOutputStream();
            CodedOutputStream a = CodedOutputStream.newInstance(answer);
            a.writeString(1, ADDRESS);
            a.flush();
            ByteArrayOutputStream response = new ByteArrayOutputStream();
            CodedOutputStream r = CodedOutputStream.newInstance(response);
            r.writeBytes(2, ByteString.copyFrom(answer.toByteArray())); // Response.payload, status OK
            r.flush();
            ByteBuffer frame = ByteBuffer.allocate(10 + response.size());
            frame.putInt(response.size()).putInt(header.getInt(4)).put((byte) 2).put((byte) 0).put(response.toByteArray())
                    .flip();
            while (frame.hasRemaining()) {
                c.write(frame);
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static ByteBuffer read(SocketChannel c, int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        while (b.hasRemaining() && c.read(b) >= 0) {
            // until full or closed
        }
        return b;
    }
}
