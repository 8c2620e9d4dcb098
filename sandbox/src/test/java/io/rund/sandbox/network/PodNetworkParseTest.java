package io.rund.sandbox.network;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.rund.sandbox.guest.GuestNetwork;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** What is taken from iproute2's JSON of a pod's namespace (as the bridge plugin leaves it). */
@Tag("unit")
class PodNetworkParseTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Path NS = Path.of("/run/netns/cni-1");
    private static final String LO = """
            {"ifindex":1,"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00","mtu":65536,
             "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]}""";
    private static final String ETH0 = """
            {"ifindex":3,"ifname":"eth0","link_type":"ether","address":"7E:1B:2c:3d:4e:5f","mtu":1450,
             "addr_info":[{"family":"inet","local":"10.88.0.7","prefixlen":16,"scope":"global"},
                          {"family":"inet6","local":"fe80::7c1b:2cff:fe3d:4e5f","prefixlen":64,"scope":"link"}]}""";

    @Test
    void thePodInterfaceItsAddressesAndItsRoutesGatewaysLast() throws Exception {
        PodNetwork n = PodNetwork.parse(NS, JSON.readTree("[" + LO + "," + ETH0 + "]"), JSON.readTree("""
                [{"dst":"default","gateway":"10.88.0.1","dev":"eth0"},
                 {"dst":"10.88.0.0/16","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.88.0.7"},
                 {"dst":"10.99.0.9","dev":"eth0","scope":"link"},
                 {"dst":"192.168.0.0/24","gateway":"10.88.0.254","dev":"eth1"},
                 {"type":"blackhole","dst":"10.1.0.0/16"}]"""));
        assertEquals("eth0", n.ifname());
        assertEquals("7e:1b:2c:3d:4e:5f", n.mac());
        assertEquals(List.of(new GuestNetwork.Address("10.88.0.7", 16)), n.addresses());
        assertEquals(List.of(new GuestNetwork.Route("10.99.0.9/32", ""), new GuestNetwork.Route("default", "10.88.0.1")),
                n.routes());
        assertEquals(1450, n.guest().mtu());
        assertEquals("10.88.0.1", n.guest().routes().get(1).gateway());
    }

    @Test
    void aNamespaceWithOnlyLoopbackHasNoPodNetwork() throws Exception {
        assertNull(PodNetwork.parse(NS, JSON.readTree("[" + LO + "]"), JSON.readTree("[]")));
    }

    @Test
    void oddNamesAndAddressesAreRefusedNamingThem() throws Exception {
        NetworkException name = assertThrows(NetworkException.class, () -> PodNetwork.parse(NS,
                JSON.readTree("[" + ETH0.replace("\"eth0\"", "\"eth0;rm\"") + "]"), JSON.readTree("[]")));
        assertTrue(name.getMessage().contains("eth0;rm") && name.getMessage().contains(NS.toString()), name.getMessage());
        NetworkException mac = assertThrows(NetworkException.class, () -> PodNetwork.parse(NS,
                JSON.readTree("[" + ETH0.replace("7E:1B:2c:3d:4e:5f", "7e:1b") + "]"), JSON.readTree("[]")));
        assertTrue(mac.getMessage().contains("7e:1b"), mac.getMessage());
        NetworkException missing = assertThrows(NetworkException.class,
                () -> PodNetwork.inspect(Path.of("/run/netns/none-such")));
        assertTrue(missing.getMessage().contains("/run/netns/none-such"), missing.getMessage());
    }

    @Test
    void onlyANetworkNamespaceOtherThanTheDaemonsOwnIsJoined(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        Path own = Path.of("/proc/self/ns/net");
        NetworkException host = assertThrows(NetworkException.class, () -> PodNetwork.checkNamespace(own, own));
        assertTrue(host.getMessage().contains("network namespace /proc/self/ns/net is rund's own (the host's)"), host.getMessage());
        NetworkException uts = assertThrows(NetworkException.class,
                () -> PodNetwork.checkNamespace(Path.of("/proc/self/ns/uts"), own));
        assertTrue(uts.getMessage().contains("is a namespace of another kind"), uts.getMessage());
        Path file = java.nio.file.Files.writeString(dir.resolve("file"), "x");
        Path fifo = dir.resolve("fifo");
        io.rund.rootfs.Syscalls.mkfifo(fifo, 0644);
        for (Path bad : List.of(file, fifo, dir)) {
            NetworkException e = assertThrows(NetworkException.class, () -> PodNetwork.checkNamespace(bad, own));
            assertTrue(e.getMessage().contains("network namespace " + bad + " is not a namespace file"), e.getMessage());
        }
        // A namespace of its own (as CNI pins one) is joined.
        String name = "rund-check-" + ProcessHandle.current().pid();
        assertEquals(0, new ProcessBuilder("ip", "netns", "add", name).inheritIO().start().waitFor());
        try {
            PodNetwork.checkNamespace(Path.of("/run/netns", name), own);
        } finally {
            new ProcessBuilder("ip", "netns", "del", name).inheritIO().start().waitFor();
        }
    }
}
