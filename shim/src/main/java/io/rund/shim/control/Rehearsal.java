package io.rund.shim.control;

import io.rund.containerd.task.v2.DeleteResponse;
import io.rund.control.v1.DeleteRequest;
import io.rund.control.v1.StartRequest;
import io.rund.control.v1.StartResponse;
import io.rund.control.v1.StatusRequest;
import io.rund.control.v1.StatusResponse;
import io.rund.rootfs.Syscalls;
import io.rund.rootfs.WritableLayerStore;
import io.rund.sandbox.cgroup.CgroupLayout;
import io.rund.sandbox.cgroup.CgroupPool;
import io.rund.shim.containerd.TaskRecord;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Metadata;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.List;

/**
 * A daemon's start rehearsed on a node of its own, so that the code of a real one has run
 * before it is needed: the training run of the ahead-of-time cache ({@link Training}), and
 * the standby daemon's warm-up ({@link Standby}), whose takeover then runs warm (a tenth of a
 * cold start's time). Nothing of the real node is touched: the node's configuration with a
 * private state directory (holding one endpoint a dead daemon left, to be cleaned), a private
 * cgroup pool of one (removed after), a private writable-layer store seeded from the node's
 * (on its reflink filesystem, removed after), no templates and no spares; then what the
 * launcher and {@code rund status} ask (Start, Status, Delete), {@code rounds} times.
 */
final class Rehearsal {

    private static final String CONTROL = "rund.control.v1.Control";

    private Rehearsal() {}

    static void run(Daemon.Config node, int rounds) throws Exception {
        // Its lines would read as the node's: formatted as the daemon's are (that code runs too), then dropped.
        java.util.logging.Logger root = java.util.logging.Logger.getLogger("");
        java.util.logging.Handler[] handlers = root.getHandlers();
        java.util.logging.Handler dropped = new java.util.logging.Handler() {
            private final java.util.logging.Formatter format = new java.util.logging.SimpleFormatter();

            @Override
            public void publish(java.util.logging.LogRecord r) {
                format.format(r);
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        };
        for (java.util.logging.Handler h : handlers) {
            root.removeHandler(h);
        }
        root.addHandler(dropped);
        try {
            rehearse(node, rounds);
        } finally {
            root.removeHandler(dropped);
            for (java.util.logging.Handler h : handlers) {
                root.addHandler(h);
            }
        }
    }

    private static void rehearse(Daemon.Config node, int rounds) throws Exception {
        removeLeftovers(node);
        long pid = ProcessHandle.current().pid();
        // Named by pid, as the store and the pool are: what a killed rehearsal left is known as such.
        Path dir = Files.createTempDirectory("rund-rehearsal-" + pid + "-");
        Path store = node.scratch().resolve(".rehearsal-" + pid);
        String pool = "rund-rehearsal-" + pid;
        Daemon.Config config = new Daemon.Config(dir.resolve("state"), node.guestDir(), store, 1, pool,
                node.accelerator(), null, 0, node.vmUidBase(), node.jailer(), node.guestMemoryMiB(), node.writableLayerMiB(), "", false,
                node.startsAtOnce());
        try {
            WritableLayerStore.seed(node.scratch(), store, node.writableLayerMiB());
            Path t = Files.createDirectories(config.stateDir().resolve("t"));
            new TaskRecord("default", "gone", "unix:///nonexistent", 0, List.of("gone"), List.of(), null, List.of())
                    .write(t.resolve("0000000000000000.json"));
            try (Daemon daemon = new Daemon(config);
                    Client control = Client.connect(config.stateDir().resolve("rund.sock"))) {
                CallOptions call = new CallOptions(Duration.ofSeconds(30), Metadata.EMPTY);
                Path bundle = Files.createDirectories(dir.resolve("bundle"));
                Files.writeString(bundle.resolve("config.json"), "{\"process\":{\"args\":[\"true\"],\"cwd\":\"/\"}}");
                for (int i = 0; i < rounds; i++) {
                    String id = "rehearsal" + i;
                    control.call(CONTROL, "Start", StartRequest.newBuilder().setId(id).setNamespace("default")
                            .setBundle(bundle.toString()).setTtrpcAddress("/nonexistent").build(), StartResponse.parser(),
                            call);
                    control.call(CONTROL, "Status", StatusRequest.getDefaultInstance(), StatusResponse.parser(), call);
                    control.call(CONTROL, "Delete", DeleteRequest.newBuilder().setId(id).setNamespace("default").build(),
                            DeleteResponse.parser(), call);
                }
            }
        } finally {
            CgroupPool.open(CgroupLayout.detect(pool), config.stateDir().resolve("cgroup-claims"), 1).destroy();
            Syscalls.unmountAll(config.stateDir());
            deleteTree(dir);
            deleteTree(store);
        }
    }

    /**
     * What a rehearsal that was killed left (a standby ended mid-way): private stores, pools
     * and directories (its state directory a mount of its own) of dead pids.
     */
    private static void removeLeftovers(Daemon.Config node) {
        try (var temps = Files.list(Path.of(System.getProperty("java.io.tmpdir")))) {
            for (Path p : temps.toList()) {
                String n = p.getFileName().toString();
                if (n.startsWith("rund-rehearsal-") && !alive(n.substring("rund-rehearsal-".length()).split("-")[0])) {
                    Syscalls.unmountAll(p.resolve("state"));
                    deleteTree(p);
                }
            }
        } catch (Exception e) {
            System.getLogger(Rehearsal.class.getName()).log(System.Logger.Level.WARNING,
                    "rehearsal: removing what an earlier one left: {0}", e.toString());
        }
        try (var entries = Files.list(node.scratch())) {
            for (Path p : entries.toList()) {
                String n = p.getFileName().toString();
                if (n.startsWith(".rehearsal-") && !alive(n.substring(".rehearsal-".length()))) {
                    deleteTree(p);
                }
            }
            Path hierarchy = CgroupLayout.detect("x").roots().values().iterator().next().getParent();
            try (var pools = Files.list(hierarchy)) {
                for (Path p : pools.toList()) {
                    String n = p.getFileName().toString();
                    if (n.startsWith("rund-rehearsal-") && !alive(n.substring("rund-rehearsal-".length()))) {
                        Path claims = Files.createTempDirectory("rund-rehearsal-" + ProcessHandle.current().pid() + "-claims-");
                        CgroupPool.open(CgroupLayout.detect(n), claims, 1).destroy();
                        deleteTree(claims);
                    }
                }
            }
        } catch (Exception e) {
            System.getLogger(Rehearsal.class.getName()).log(System.Logger.Level.WARNING,
                    "rehearsal: removing what an earlier one left: {0}", e.toString());
        }
    }

    private static boolean alive(String pid) {
        try {
            return ProcessHandle.of(Long.parseLong(pid)).isPresent();
        } catch (NumberFormatException e) {
            return true; // not one of ours: left alone
        }
    }

    private static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) {
            return;
        }
        try (var walk = Files.walk(root)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
