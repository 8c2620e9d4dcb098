package io.rund.test;

import io.rund.containerd.task.v2.PidsRequest;
import io.rund.containerd.task.v2.PidsResponse;
import io.rund.containerd.task.v2.StateRequest;
import io.rund.containerd.task.v2.StateResponse;
import io.rund.sandbox.id.Ids;
import io.rund.ttrpc.CallOptions;
import io.rund.ttrpc.Client;
import io.rund.ttrpc.Metadata;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The restart window as containerd sees it: with N sandboxes running under rund on a
 * private containerd, the daemon is killed (SIGKILL) and, from that instant, every
 * endpoint is asked State (answered from the record: the first answered call) and Pids
 * (which needs the sandbox adopted and its agent connected: the last one answered is the
 * last sandbox adopted), over connections opened before the kill, as containerd holds
 * them. The relays start the next daemon. Run by `hack/bench restart` (LEVELS, default
 * "1 10 50"; ROUNDS, default 10); prints Markdown rows and writes CSV to the given path.
 */
public final class RestartBench {

    private static final String TASK = "containerd.task.v2.Task";
    private static final CallOptions CALL = new CallOptions(Duration.ofSeconds(60),
            Metadata.of(Metadata.CONTAINERD_NAMESPACE, "default"));

    public static void main(String[] args) throws Exception {
        int rounds = Integer.parseInt(args[0]);
        Path csv = Path.of(args[1]);
        String daemon = args[2];
        int[] levels = Arrays.stream(args).skip(3).mapToInt(Integer::parseInt).toArray();
        List<String> rows = new ArrayList<>();
        List<String> data = new ArrayList<>(List.of("restart,sandboxes,round,first_answer_ms,last_adopted_ms"));
        for (boolean standby : List.of(true, false)) {
            run(standby, daemon, rounds, levels, rows, data);
        }
        Files.write(csv, data);
        System.out.println("| restart | sandboxes | from the kill to | rounds | median ms | p90 ms | max ms |");
        System.out.println("|---|---:|---|---:|---:|---:|---:|");
        rows.forEach(System.out::println);
    }

    private static void run(boolean standby, String daemonScript, int rounds, int[] levels, List<String> rows,
            List<String> data) throws Exception {
        String mode = standby ? "standby takes over" : "relay starts a daemon";
        try (Containerd ctd = new Containerd("restart-bench", Map.of("RUND_DAEMON", daemonScript,
                "RUND_STANDBY", Boolean.toString(standby)))) {
            List<String> ids = new ArrayList<>();
            for (int n : levels) {
                while (ids.size() < n) {
                    String id = "r" + ids.size();
                    ctd.ctr(Duration.ofMinutes(2), "run", "-d", "--runtime", "io.containerd.rund.v2", Containerd.IMAGE, id,
                            "sleep", "100000").ok();
                    ids.add(id);
                }
                Map<String, Client> clients = new LinkedHashMap<>();
                for (String id : ids) {
                    clients.put(id, Client.connect(endpoint(ctd, id)));
                }
                double[] first = new double[rounds];
                double[] last = new double[rounds];
                for (int round = 0; round < rounds; round++) {
                    settle(ctd, clients, standby);
                    long pid = ctd.daemonPid();
                    ProcessHandle daemon = ProcessHandle.of(pid).orElseThrow();
                    long t0 = System.nanoTime();
                    daemon.destroyForcibly();
                    long[] stateAt = new long[ids.size()];
                    long[] pidsAt = new long[ids.size()];
                    List<Thread> calls = new ArrayList<>();
                    int i = 0;
                    for (var e : clients.entrySet()) {
                        int k = i++;
                        calls.add(Thread.ofVirtual().start(() -> {
                            try {
                                e.getValue().call(TASK, "State", StateRequest.newBuilder().setId(e.getKey()).build(),
                                        StateResponse.parser(), CALL);
                                stateAt[k] = System.nanoTime();
                            } catch (Exception ex) {
                                throw new AssertionError("State of " + e.getKey() + ": " + ex, ex);
                            }
                        }));
                        calls.add(Thread.ofVirtual().start(() -> {
                            try {
                                e.getValue().call(TASK, "Pids", PidsRequest.newBuilder().setId(e.getKey()).build(),
                                        PidsResponse.parser(), CALL);
                                pidsAt[k] = System.nanoTime();
                            } catch (Exception ex) {
                                throw new AssertionError("Pids of " + e.getKey() + ": " + ex, ex);
                            }
                        }));
                    }
                    for (Thread t : calls) {
                        t.join();
                    }
                    daemon.onExit().get(10, TimeUnit.SECONDS);
                    first[round] = (Arrays.stream(stateAt).min().orElseThrow() - t0) / 1e6;
                    last[round] = (Arrays.stream(pidsAt).max().orElseThrow() - t0) / 1e6;
                    data.add((standby ? "standby" : "cold") + "," + n + "," + round + ","
                            + String.format("%.1f", first[round]) + "," + String.format("%.1f", last[round]));
                    System.err.printf("%s sandboxes=%d round=%d first=%.0f ms last adopted=%.0f ms%n", mode, n, round,
                            first[round], last[round]);
                }
                for (Client c : clients.values()) {
                    c.close();
                }
                rows.add(row(mode, n, "first answered call (State)", first));
                rows.add(row(mode, n, "last sandbox adopted (Pids)", last));
            }
            for (String id : ids) {
                ctd.killAndDelete(id);
            }
            ctd.awaitNothingLeft();
        }
    }

    /** The relay's socket of task {@code id} (namespace default), as the daemon names it. */
    private static Path endpoint(Containerd ctd, String id) {
        return ctd.rundState.resolve("t").resolve(Ids.shortHash("default/" + id) + ".sock");
    }

    /**
     * Waits until the daemon serves every endpoint and has made its spare VMs, then a second
     * more: a round starts from a node at rest.
     */
    private static void settle(Containerd ctd, Map<String, Client> clients, boolean standby) throws Exception {
        for (var e : clients.entrySet()) {
            e.getValue().call(TASK, "Pids", PidsRequest.newBuilder().setId(e.getKey()).build(), PidsResponse.parser(),
                    CALL);
        }
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < end) {
            String status = ctd.rund(Duration.ofSeconds(30), "status").stdout();
            if (status.matches("(?s).*spare VMs\\s+" + Containerd.SPARES + " ready.*")) {
                break;
            }
            Thread.sleep(200);
        }
        if (standby) {
            ctd.awaitStandby();
        }
        Thread.sleep(1000);
    }

    private static String row(String mode, int n, String what, double[] ms) {
        double[] s = ms.clone();
        Arrays.sort(s);
        return String.format("| %s | %d | %s | %d | %.0f | %.0f | %.0f |", mode, n, what, s.length, s[(s.length - 1) / 2],
                s[Math.min(s.length - 1, (int) Math.ceil(s.length * 0.9) - 1)], s[s.length - 1]);
    }
}
