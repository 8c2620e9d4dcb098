package io.rund.testing;

import java.io.IOException;
import java.io.InputStream;
import java.net.ConnectException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;

/** A TCP client for tests that reach a server in a VM or container. */
public final class Tcp {

    private Tcp() {}

    /**
     * Everything the server at {@code host}:{@code port} sends until it closes, as UTF-8;
     * a refused connection is retried for {@code within} (the listener may still be starting).
     */
    public static String readAll(String host, int port, Duration within) throws IOException, InterruptedException {
        long end = System.nanoTime() + within.toNanos();
        while (true) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress(host, port), 5000);
                s.setSoTimeout(10_000);
                try (InputStream in = s.getInputStream()) {
                    return new String(in.readAllBytes(), StandardCharsets.UTF_8);
                }
            } catch (ConnectException e) {
                if (System.nanoTime() > end) {
                    throw e;
                }
                Thread.sleep(100);
            }
        }
    }
}
