package io.rund.shim.control;

import io.rund.shim.containerd.TaskService;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A task endpoint's relay as the daemon sees it (shim/launcher/relay.c: the process that
 * holds containerd's connections across daemon restarts): its control link, over which it
 * is told which fifos to hold and when to go. Orders given while no relay is linked (before
 * its hello, or after a link broke) are kept and sent when one links.
 *
 * <p>Threads: any; orders are written whole, in order.
 */
final class Relay implements TaskService.Fifos {

    private static final System.Logger LOG = System.getLogger(Relay.class.getName());
    /** Orders kept while no relay is linked; past it the oldest go (a relay that never came). */
    private static final int MAX_PENDING = 4096;

    final String name;
    private SocketChannel link;
    private final List<String> pending = new ArrayList<>();

    Relay(String name) {
        this.name = name;
    }

    /** The relay said hello on {@code ch}: it is answered "ok" and gets what was ordered meanwhile. */
    synchronized void attach(SocketChannel ch) throws IOException {
        if (link != null) {
            closeQuietly(link); // a relay that reconnected: the old link is dead
        }
        link = ch;
        write("ok");
        List<String> orders = List.copyOf(pending);
        pending.clear();
        for (String order : orders) {
            send(order);
        }
    }

    /** The link {@code ch} ended (the relay exited, or will link again). */
    synchronized void detach(SocketChannel ch) {
        if (link == ch) {
            link = null;
        }
    }

    @Override
    public void hold(String key, boolean read, String path) {
        if (path.indexOf('\n') >= 0) {
            return; // a fifo path containerd would never make; not one line of the protocol
        }
        send("hold " + key + (read ? " r " : " w ") + path);
    }

    @Override
    public void drop(String key) {
        send("drop " + key);
    }

    /** The endpoint is closed: the relay passes on what answers are left and exits. */
    void quit() {
        send("quit");
    }

    private synchronized void send(String order) {
        if (link != null) {
            try {
                write(order);
                return;
            } catch (IOException e) {
                LOG.log(Level.DEBUG, "relay {0}: {1}", name, e.getMessage());
                closeQuietly(link);
                link = null;
            }
        }
        if (pending.size() == MAX_PENDING) {
            pending.removeFirst();
        }
        pending.add(order);
    }

    private void write(String line) throws IOException {
        ByteBuffer b = ByteBuffer.wrap((line + "\n").getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
            link.write(b);
        }
    }

    static void closeQuietly(SocketChannel ch) {
        try {
            ch.close();
        } catch (IOException e) {
            // gone already
        }
    }
}
