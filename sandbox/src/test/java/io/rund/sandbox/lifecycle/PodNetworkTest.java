package io.rund.sandbox.lifecycle;

import static io.rund.sandbox.lifecycle.SandboxLifecycleTest.run;
import static io.rund.sandbox.lifecycle.SandboxLifecycleTest.runWith;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.network.PodNetwork;
import io.rund.testing.Tcp;
import io.rund.vm.template.TemplateStore;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A sandbox VM takes a pod network's place: real network namespaces and veth pairs (as a
 * CNI plugin leaves them), QEMU's tap moved in and joined by tc redirect, the guest agent
 * configuring eth0. The host end of each veth stands for the rest of the network.
 */
@Timeout(600)
class PodNetworkTest {

    private static final String LOOP = "while :; do sleep 1; done";
    private static final List<String> NET_RAW = List.of("CAP_NET_RAW");
    private static Fixture fx;
    private static Path templateRoot;
    private static SandboxManager manager;
    private static final List<String> namespaces = new ArrayList<>();
    private static final String TAG = Long.toString(ProcessHandle.current().pid() % 100000);

    @BeforeAll
    static void setUp() throws Exception {
        fx = new Fixture("net");
        templateRoot = fx.templateRoot;
        manager = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store,
                TemplateStore.open(templateRoot, fx.hypervisor, AgentClient.ready(Duration.ofSeconds(60))));
        manager.startSpares(1);
    }

    @AfterAll
    static void tearDown() throws Exception {
        if (manager != null) {
            manager.close();
        }
        for (String ns : namespaces) {
            sh("ip", "netns", "del", ns);
        }
        if (fx != null) {
            fx.close();
        }
    }

    /** Runs a host command; its exit status and output as "status:output". */
    static String sh(String... argv) throws IOException, InterruptedException {
        java.lang.Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        return p.waitFor() + ":" + out;
    }

    static void must(String... argv) throws IOException, InterruptedException {
        String r = sh(argv);
        if (!r.startsWith("0:")) {
            throw new AssertionError(String.join(" ", argv) + " -> " + r);
        }
    }

    /**
     * A network namespace as the bridge plugin leaves one, minus the bridge: "eth0" with
     * 10.201.{@code net}.2/24, MTU 1400 and a default route via .1, the other end of its
     * veth in the host's namespace with .1.
     */
    private static Path podNamespace(int net) throws Exception {
        String ns = "rund-test-" + TAG + "-" + net;
        String host = "rtv" + TAG + "x" + net;
        must("ip", "netns", "add", ns);
        namespaces.add(ns);
        must("ip", "link", "add", host, "mtu", "1400", "type", "veth", "peer", "name", "eth0", "mtu", "1400", "netns", ns);
        must("ip", "addr", "add", "10.201." + net + ".1/24", "dev", host);
        must("ip", "link", "set", host, "up");
        must("ip", "-n", ns, "addr", "add", "10.201." + net + ".2/24", "dev", "eth0");
        must("ip", "-n", ns, "link", "set", "eth0", "up");
        must("ip", "-n", ns, "route", "add", "default", "via", "10.201." + net + ".1");
        return Path.of("/run/netns/" + ns);
    }

    private static ContainerSpec spec(String id, Path netns, List<ContainerSpec.FileMount> files) {
        return Fixture.container(id, fx.image(), id, files, netns, "sh", "-c", LOOP);
    }

    private static void awaitSpare() throws InterruptedException {
        long end = System.nanoTime() + Duration.ofSeconds(120).toNanos();
        while (manager.sparesReady() < 1 && System.nanoTime() < end) {
            Thread.sleep(50);
        }
        assertEquals(1, manager.sparesReady(), "a spare VM must be ready");
    }

    @Test
    void aPodVmTakesThePodInterfacesPlace() throws Exception {
        Path nsA = podNamespace(1);
        Path nsB = podNamespace(2);
        String macA = sh("ip", "-n", nsA.getFileName().toString(), "-o", "link", "show", "eth0").replaceAll(
                "(?s).*link/ether ([0-9a-f:]{17}).*", "$1");
        byte[] resolv = "nameserver 10.201.1.53\nsearch pods.test\n".getBytes(StandardCharsets.UTF_8);
        awaitSpare();
        Sandbox a = manager.start(spec("net-a", nsA, List.of(new ContainerSpec.FileMount("/etc/resolv.conf", resolv, true))));
        Sandbox b = null;
        try {
            assertTrue(a.boot().startsWith("clone "), a.boot());
            b = manager.start(spec("net-b", nsB, List.of()));
            PodNetwork net = a.network();
            assertNotNull(net);
            assertEquals("eth0", net.ifname());
            assertEquals(macA, net.mac());

            // The guest's eth0 is the pod's: its MAC, MTU, address and default route.
            assertEquals("0:" + macA + "\n", run(a, "cat", "/sys/class/net/eth0/address"));
            assertEquals("0:1400\n", run(a, "cat", "/sys/class/net/eth0/mtu"));
            String addr = run(a, "ip", "-4", "addr", "show", "eth0");
            assertTrue(addr.contains("inet 10.201.1.2/24"), addr);
            String routes = run(a, "ip", "route");
            assertTrue(routes.contains("default via 10.201.1.1 dev eth0"), routes);
            assertTrue(run(a, "ip", "link", "show", "lo").contains("UP"), "loopback is up");

            // Out of the pod to the network, and in from it, for both VMs.
            assertEquals(0, status(runWith(a, a.id(), NET_RAW, "ping", "-c", "1", "-W", "5", "10.201.1.1")));
            assertEquals(0, status(runWith(b, b.id(), NET_RAW, "ping", "-c", "1", "-W", "5", "10.201.2.1")));
            assertTrue(sh("/bin/busybox", "ping", "-c", "1", "-W", "5", "10.201.2.2").startsWith("0:"));
            // TCP into the guest: only the VM listens on the pod's address (the namespace has nothing on 7777).
            a.agent().execProcess(a.id(), "srv", io.rund.sandbox.guest.ProcessSpec.of(
                    List.of("sh", "-c", "echo hello-from-the-guest | nc -l -p 7777"), List.of("PATH=/bin"), "/"));
            a.agent().startProcess(a.id(), "srv");
            assertEquals("hello-from-the-guest\n", Tcp.readAll("10.201.1.2", 7777, Duration.ofSeconds(20)));

            // The resolv.conf CRI would bind in is the host's bytes, read-only.
            assertEquals("0:nameserver 10.201.1.53\nsearch pods.test\n", run(a, "cat", "/etc/resolv.conf"));
            assertEquals(1, status(run(a, "sh", "-c", "echo x >> /etc/resolv.conf")));

            String state = Files.readString(a.dir().resolve("state.json"));
            assertTrue(state.contains("\"netns\":\"" + nsA + "\"") && state.contains("\"podInterface\":\"eth0\""), state);
            String ingress = sh("ip", "netns", "exec", nsA.getFileName().toString(), "tc", "qdisc", "show", "dev", "eth0");
            assertTrue(ingress.contains("ingress"), ingress);
        } finally {
            a.stop(Duration.ofSeconds(5));
            if (b != null) {
                b.stop(Duration.ofSeconds(5));
            }
        }
        // The redirect is gone, and the tap went with its VM: the namespaces are as the plugin left them.
        for (Path ns : List.of(nsA, nsB)) {
            String name = ns.getFileName().toString();
            String qdiscs = sh("ip", "netns", "exec", name, "tc", "qdisc", "show", "dev", "eth0");
            assertFalse(qdiscs.contains("ingress"), qdiscs);
            String links = sh("ip", "-n", name, "-o", "link");
            assertEquals(2, links.strip().split("\n").length, links);
        }
        awaitSpare();
        manager.close();
        manager = new SandboxManager(fx.config(), fx.hypervisor, fx.pool, fx.store,
                TemplateStore.open(templateRoot, fx.hypervisor, AgentClient.ready(Duration.ofSeconds(60))));
        fx.assertNothingLeft();
    }

    @Test
    void aMissingNetworkNamespaceIsRefusedAndLeavesNothing() throws Exception {
        Path missing = Path.of("/run/netns/rund-test-none-" + TAG);
        SandboxException e = assertThrows(SandboxException.class, () -> manager.start(spec("net-x", missing, List.of())));
        assertEquals(Fault.INVALID_ARGUMENT, e.kind());
        assertTrue(e.getMessage().contains(missing.toString()), e.getMessage());
        assertFalse(Files.exists(manager.dirOf("net-x")));
        assertTrue(fx.pool.claimed().isEmpty());
    }

    private static int status(String result) {
        return Integer.parseInt(result.substring(0, result.indexOf(':')));
    }
}
