package io.rund.shim.control;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.net.StandardProtocolFamily;
import jdk.net.UnixDomainPrincipal;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jdk.net.ExtendedSocketOptions;

/**
 * Where relays link to the daemon: {@code <state>/relay.sock} (0600, root's). A link
 * begins with one line: {@code ctl NAME PID} (a relay's control link, answered "ok" or
 * "unknown") or {@code conn NAME} (one of containerd's connections, ttrpc from the next
 * byte on). Only the daemon's own user may link.
 */
final class RelayLinks implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(RelayLinks.class.getName());
    private static final int MAX_HELLO = 160;

    /** What the daemon does with a link. */
    interface Endpoints {
        /** A relay's control link for endpoint {@code name}; false when there is no such endpoint. */
        boolean control(String name, long pid, SocketChannel ch) throws IOException;

        /** A containerd connection of endpoint {@code name}; false when there is no such endpoint. */
        boolean connection(String name, SocketChannel ch);

        /** The control link {@code ch} of endpoint {@code name} ended. */
        void controlClosed(String name, SocketChannel ch);

        /** Every containerd connection of endpoint {@code name}'s relay has closed. */
        void idle(String name);
    }

    private final ServerSocketChannel listener;
    private final Endpoints endpoints;

    RelayLinks(Path socket, Endpoints endpoints) throws IOException {
        this.endpoints = endpoints;
        Files.deleteIfExists(socket);
        listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(socket));
        Files.setPosixFilePermissions(socket, PosixFilePermissions.fromString("rw-------"));
        Thread.ofVirtual().name("relay-links").start(this::acceptLoop);
    }

    private void acceptLoop() {
        while (listener.isOpen()) {
            try {
                SocketChannel ch = listener.accept();
                Thread.ofVirtual().name("relay-link").start(() -> link(ch));
            } catch (IOException e) {
                if (!listener.isOpen()) {
                    return;
                }
                LOG.log(Level.WARNING, "relay links: accept: {0}", e.getMessage());
                try {
                    Thread.sleep(100);
                } catch (InterruptedException ie) {
                    return;
                }
            }
        }
    }

    private void link(SocketChannel ch) {
        // A relay that says nothing is not waited for.
        CompletableFuture<Void> hello = new CompletableFuture<>();
        hello.orTimeout(5, TimeUnit.SECONDS).exceptionally(t -> {
            Relay.closeQuietly(ch);
            return null;
        });
        String line;
        try {
            UnixDomainPrincipal peer = ch.getOption(ExtendedSocketOptions.SO_PEERCRED);
            if (!peer.user().getName().equals(System.getProperty("user.name"))) {
                throw new IOException("a link from user " + peer.user().getName());
            }
            line = readLine(ch);
            hello.complete(null);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "relay links: refused: {0}", e.getMessage());
            Relay.closeQuietly(ch);
            return;
        }
        String[] w = line.split(" ");
        try {
            if (w.length == 3 && w[0].equals("ctl") && w[2].matches("[0-9]{1,10}")) {
                if (!endpoints.control(w[1], Long.parseLong(w[2]), ch)) {
                    ch.write(ByteBuffer.wrap("unknown\n".getBytes(StandardCharsets.US_ASCII)));
                    Relay.closeQuietly(ch);
                    return;
                }
                String name = w[1];
                readLines(ch, said -> {
                    if (said.equals("idle")) {
                        endpoints.idle(name);
                    }
                });
                endpoints.controlClosed(name, ch);
                Relay.closeQuietly(ch);
            } else if (w.length == 2 && w[0].equals("conn")) {
                if (!endpoints.connection(w[1], ch)) {
                    Relay.closeQuietly(ch);
                }
            } else {
                LOG.log(Level.WARNING, "relay links: unknown hello {0}", line);
                Relay.closeQuietly(ch);
            }
        } catch (IOException e) {
            LOG.log(Level.DEBUG, "relay links: {0}", e.getMessage());
            Relay.closeQuietly(ch);
        }
    }

    /** One line, read a byte at a time: what follows it is ttrpc, for the server. */
    private static String readLine(SocketChannel ch) throws IOException {
        ByteBuffer one = ByteBuffer.allocate(1);
        StringBuilder b = new StringBuilder();
        while (b.length() < MAX_HELLO) {
            one.clear();
            if (ch.read(one) < 0) {
                throw new IOException("the link closed before its hello");
            }
            char c = (char) (one.get(0) & 0xff);
            if (c == '\n') {
                return b.toString();
            }
            b.append(c);
        }
        throw new IOException("a hello over " + MAX_HELLO + " bytes");
    }

    /** Hands each line the relay says to {@code each} until the link ends; an overlong line ends it. */
    private static void readLines(SocketChannel ch, java.util.function.Consumer<String> each) {
        ByteBuffer in = ByteBuffer.allocate(MAX_HELLO);
        try {
            while (ch.read(in) >= 0) {
                int nl;
                while ((nl = indexOf(in, (byte) '\n')) >= 0) {
                    String line = new String(in.array(), 0, nl, StandardCharsets.US_ASCII);
                    in.flip().position(nl + 1);
                    in.compact();
                    each.accept(line);
                }
                if (!in.hasRemaining()) {
                    LOG.log(Level.WARNING, "relay links: a line over {0} bytes; closing the link", MAX_HELLO);
                    Relay.closeQuietly(ch);
                    return;
                }
            }
        } catch (IOException e) {
            // the link broke: the same as its end
        }
    }

    private static int indexOf(ByteBuffer b, byte c) {
        for (int i = 0; i < b.position(); i++) {
            if (b.get(i) == c) {
                return i;
            }
        }
        return -1;
    }

    @Override
    public void close() {
        try {
            listener.close();
        } catch (IOException e) {
            // closing anyway
        }
    }
}
