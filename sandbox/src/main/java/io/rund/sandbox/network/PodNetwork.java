package io.rund.sandbox.network;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.rund.sandbox.guest.GuestNetwork;
import io.rund.sandbox.guest.GuestNetwork.Address;
import io.rund.sandbox.guest.GuestNetwork.Route;
import io.rund.rootfs.Syscalls;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.System.Logger.Level;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

/**
 * A pod's network as its CNI plugin left it in the pod's network namespace, and the
 * connection of that namespace to a VM (Kata's "tcfilter" model): the VM's tap device is
 * moved into the namespace, and tc filters on the ingress of the pod's interface and of
 * the tap redirect every frame to the other one's egress. The guest's interface then
 * takes the pod interface's MAC, MTU, addresses and routes ({@link #guest()}), so
 * that to the rest of the network the VM is the pod.
 *
 * <p>The pod interface keeps its addresses, but nothing reaches the namespace's own
 * stack any more: all it receives goes to the VM. Removing the ingress qdiscs
 * ({@link #disconnect}) undoes the connection; the tap goes when the VM ends.
 *
 * <p>Only IPv4 addresses and routes of the main table are carried; a namespace with more
 * than one interface connects the first (the others are named in the log).
 *
 * <p>The work is done by iproute2's {@code ip} and {@code tc}, entered into the namespace
 * with {@code nsenter}: four short processes per pod.
 */
public final class PodNetwork {

    private static final System.Logger LOG = System.getLogger(PodNetwork.class.getName());
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Pattern IFNAME = Pattern.compile("[A-Za-z0-9_.@-]{1,15}");
    private static final Pattern MAC = Pattern.compile("[0-9a-f]{2}(:[0-9a-f]{2}){5}");
    private static final long TIMEOUT_SECONDS = 10;

    private final Path netns;
    private final String ifname;
    private final String mac;
    private final int mtu;
    private final List<Address> addresses;
    private final List<Route> routes;

    private PodNetwork(Path netns, String ifname, String mac, int mtu, List<Address> addresses, List<Route> routes) {
        this.netns = netns;
        this.ifname = ifname;
        this.mac = mac;
        this.mtu = mtu;
        this.addresses = List.copyOf(addresses);
        this.routes = List.copyOf(routes);
    }

    /** _IO(0xb7, 0x3): which kind of namespace an nsfs descriptor is. */
    private static final long NS_GET_NSTYPE = 0xb703;
    private static final int CLONE_NEWNET = 0x40000000;

    /**
     * Refuses a path that is not a network namespace (it is checked on its inode, and opened
     * only when it is an nsfs file, never blocking) or that is {@code own}, the daemon's
     * namespace: joining it would put the pod on the host's network, which rund refuses.
     */
    static void checkNamespace(Path netns, Path own) throws NetworkException {
        String what = "network namespace " + netns;
        int path = -1;
        int fd = -1;
        try {
            path = Syscalls.open(netns, Syscalls.O_PATH | Syscalls.O_CLOEXEC, 0);
            Syscalls.Stat st = Syscalls.fstat(path);
            if (st.type() != Syscalls.S_IFREG) {
                throw new NetworkException(what + " is not a namespace file (mode 0" + Integer.toOctalString(st.mode()) + ")");
            }
            fd = Syscalls.reopen(path, Syscalls.O_RDONLY | Syscalls.O_NONBLOCK);
            int type;
            try {
                type = Syscalls.ioctl(fd, NS_GET_NSTYPE, 0);
            } catch (Syscalls.SyscallException e) {
                throw new NetworkException(what + " is not a namespace file (" + e.getMessage() + ")");
            }
            if (type != CLONE_NEWNET) {
                throw new NetworkException(what + " is a namespace of another kind (0x" + Integer.toHexString(type) + ")");
            }
            int mine = Syscalls.open(own, Syscalls.O_PATH | Syscalls.O_CLOEXEC, 0);
            Syscalls.Stat self;
            try {
                self = Syscalls.fstat(mine);
            } finally {
                Syscalls.closeQuietly(mine);
            }
            if (self.dev() == st.dev() && self.ino() == st.ino()) {
                throw new NetworkException(what + " is rund's own (the host's) network namespace; a VM cannot join"
                        + " the host's network, and rund refuses host networking");
            }
        } catch (Syscalls.SyscallException e) {
            throw new NetworkException(what + ": " + e.getMessage());
        } finally {
            Syscalls.closeQuietly(fd);
            Syscalls.closeQuietly(path);
        }
    }

    /**
     * What the namespace at {@code netns} holds: its first interface with an IPv4 address
     * (other than loopback), and the routes through it. Null when it has none (a pod with
     * no network: the VM's interface stays down).
     */
    public static PodNetwork inspect(Path netns) throws NetworkException {
        if (!netns.isAbsolute() || !Files.exists(netns)) {
            throw new NetworkException("network namespace " + netns + " does not exist");
        }
        checkNamespace(netns, Path.of("/proc/self/ns/net"));
        String out = run(List.of("nsenter", "--net=" + netns, "ip", "-j", "-batch", "-"), "addr show\nroute show\n");
        List<JsonNode> docs = new ArrayList<>();
        // Two arrays, one after the other (a MappingIterator would take the first array's elements).
        try (com.fasterxml.jackson.core.JsonParser parser = JSON.createParser(out)) {
            JsonNode doc;
            while ((doc = JSON.readTree(parser)) != null) {
                docs.add(doc);
            }
        } catch (IOException | RuntimeException e) {
            throw new NetworkException("network namespace " + netns + ": ip printed what is not JSON: " + e.getMessage());
        }
        if (docs.size() != 2) {
            throw new NetworkException("network namespace " + netns + ": ip printed " + docs.size()
                    + " JSON documents for addr and route, not 2");
        }
        return parse(netns, docs.get(0), docs.get(1));
    }

    /** The pod network in {@code ip -j addr show} and {@code ip -j route show} output; null if it has none. */
    static PodNetwork parse(Path netns, JsonNode links, JsonNode routeList) throws NetworkException {
        List<String> skipped = new ArrayList<>();
        JsonNode chosen = null;
        List<Address> addresses = new ArrayList<>();
        for (JsonNode link : links) {
            List<Address> v4 = new ArrayList<>();
            for (JsonNode a : link.path("addr_info")) {
                if (a.path("family").asText().equals("inet")) {
                    v4.add(new Address(a.path("local").asText(), a.path("prefixlen").asInt(-1)));
                }
            }
            if (!link.path("link_type").asText().equals("ether") || v4.isEmpty()) {
                continue;
            }
            if (chosen == null) {
                chosen = link;
                addresses = v4;
            } else {
                skipped.add(link.path("ifname").asText());
            }
        }
        if (chosen == null) {
            return null;
        }
        String ifname = chosen.path("ifname").asText();
        String mac = chosen.path("address").asText().toLowerCase(java.util.Locale.ROOT);
        int mtu = chosen.path("mtu").asInt(0);
        if (!IFNAME.matcher(ifname).matches()) {
            throw new NetworkException("network namespace " + netns + ": interface name " + ifname + " is not plain");
        }
        if (!MAC.matcher(mac).matches()) {
            throw new NetworkException("network namespace " + netns + ": " + ifname + " has MAC " + mac
                    + ", not an Ethernet address");
        }
        if (!skipped.isEmpty()) {
            LOG.log(Level.WARNING, "network namespace {0}: connects {1} only; not {2}", netns, ifname, skipped);
        }
        // The guest makes the prefix routes of its addresses itself, like the kernel did here.
        List<Route> onLink = new ArrayList<>();
        List<Route> via = new ArrayList<>();
        for (JsonNode r : routeList) {
            if (!r.path("dev").asText().equals(ifname) || r.path("protocol").asText().equals("kernel")
                    || !r.path("type").asText("unicast").equals("unicast")) {
                continue;
            }
            String dst = r.path("dst").asText();
            if (!dst.equals("default") && !dst.contains("/")) {
                dst = dst + "/32";
            }
            String gateway = r.path("gateway").asText("");
            (gateway.isEmpty() ? onLink : via).add(new Route(dst, gateway));
        }
        List<Route> routes = new ArrayList<>(onLink);
        routes.addAll(via);
        return new PodNetwork(netns, ifname, mac, mtu, addresses, routes);
    }

    /**
     * Connects {@code tap} (a VM's, in the host's namespace) to the pod interface: moves it
     * into the pod's namespace, sets its MTU and brings it up, and redirects each one's
     * ingress to the other's egress.
     */
    public void connect(String tap) throws NetworkException {
        if (!IFNAME.matcher(tap).matches()) {
            throw new IllegalArgumentException("tap name " + tap + " is not plain");
        }
        run(List.of("ip", "link", "set", "dev", tap, "netns", netns.toString()), null);
        run(List.of("nsenter", "--net=" + netns, "ip", "link", "set", "dev", tap, "mtu", Integer.toString(mtu), "up"),
                null);
        run(List.of("nsenter", "--net=" + netns, "tc", "-batch", "-"), String.join("\n",
                "qdisc add dev " + ifname + " ingress",
                "filter add dev " + ifname + " parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev " + tap,
                "qdisc add dev " + tap + " ingress",
                "filter add dev " + tap + " parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev " + ifname,
                ""));
    }

    /**
     * Removes the redirect from the pod interface {@code ifname} of {@code netns}, if both
     * still exist (the CNI plugin may have deleted them first). Best effort: failures are
     * logged.
     */
    public static void disconnect(Path netns, String ifname) {
        if (netns == null || ifname == null || ifname.isEmpty() || !Files.exists(netns) || !IFNAME.matcher(ifname).matches()) {
            return;
        }
        try {
            run(List.of("nsenter", "--net=" + netns, "tc", "qdisc", "del", "dev", ifname, "ingress"), null);
        } catch (NetworkException e) {
            // Gone already (the plugin deleted the interface) or never added (a start that failed first).
            if (!e.getMessage().contains("Cannot find") && !e.getMessage().contains("Invalid handle")
                    && !e.getMessage().contains("No such file")) {
                LOG.log(Level.WARNING, "network namespace {0}: {1}", netns, e.getMessage());
            }
        }
    }

    /** What the guest's agent needs to take the pod interface's place. */
    public GuestNetwork guest() {
        return new GuestNetwork(mac, mtu, addresses, routes);
    }

    public Path netns() {
        return netns;
    }

    /** The pod interface's name in its namespace. */
    public String ifname() {
        return ifname;
    }

    public String mac() {
        return mac;
    }

    public List<Address> addresses() {
        return addresses;
    }

    public List<Route> routes() {
        return routes;
    }

    @Override
    public String toString() {
        return ifname + " " + mac + " mtu " + mtu + " " + addresses + " routes " + routes + " in " + netns;
    }

    /** Runs a command to its end; its standard output, or an exception naming it and what it printed. */
    private static String run(List<String> argv, String input) throws NetworkException {
        Process p;
        try {
            p = new ProcessBuilder(argv).redirectErrorStream(false).start();
        } catch (IOException e) {
            throw new NetworkException(String.join(" ", argv) + ": " + e.getMessage());
        }
        try (OutputStream in = p.getOutputStream(); InputStream out = p.getInputStream(); InputStream err = p.getErrorStream()) {
            if (input != null) {
                in.write(input.getBytes(StandardCharsets.UTF_8));
            }
            in.close();
            // stderr drains beside stdout, so that neither pipe can fill and stall the other.
            java.util.concurrent.FutureTask<byte[]> errBytes = new java.util.concurrent.FutureTask<>(err::readAllBytes);
            Thread.ofVirtual().start(errBytes);
            String stdout = new String(out.readAllBytes(), StandardCharsets.UTF_8);
            String stderr;
            try {
                stderr = new String(errBytes.get(), StandardCharsets.UTF_8).strip();
            } catch (java.util.concurrent.ExecutionException e) {
                stderr = "(stderr unreadable: " + e.getCause() + ")";
            }
            if (!p.waitFor(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                throw new NetworkException(String.join(" ", argv) + ": no exit after " + TIMEOUT_SECONDS + " s");
            }
            if (p.exitValue() != 0) {
                throw new NetworkException(String.join(" ", argv) + (input == null ? "" : " <<< " + input.strip().replace('\n', ';'))
                        + ": exit " + p.exitValue() + ": " + stderr);
            }
            return stdout;
        } catch (IOException e) {
            throw new NetworkException(String.join(" ", argv) + ": " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new NetworkException(String.join(" ", argv) + ": interrupted");
        } finally {
            p.destroyForcibly();
        }
    }
}
