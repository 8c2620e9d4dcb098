package io.rund.test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.testing.Command;
import io.rund.test.cri.ContainerStats;
import io.rund.test.cri.ContainerStatsRequest;
import io.rund.test.cri.ContainerStatsResponse;
import io.rund.test.cri.ExecSyncResponse;
import io.rund.test.cri.ImageSpec;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.PodSandboxConfig;
import io.rund.test.cri.PodSandboxStatusRequest;
import io.rund.test.cri.PodSandboxStatusResponse;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * A real workload in a pod: Debian bookworm's python3 (an image made by debootstrap from
 * Debian's archive, hack/make-image --debian) serving HTTP, under runc and under rund on
 * the same containerd. The node and a pod of busybox fetch its page over the pod network;
 * an exec probe asks it from inside; its request log reaches CRI's log file; CRI's
 * ContainerStats reports its CPU and memory.
 */
@Timeout(900)
class CriWorkloadTest {

    static final String IMAGE = "docker.io/rund/debian-python:latest";
    private static final Duration T = Duration.ofSeconds(120);
    private static Containerd ctd;
    private static CriClient cri;
    private static CriPods pods;

    @RegisterExtension
    static final TestWatcher DUMP = Containerd.dumpOnFailure(() -> ctd);

    @BeforeAll
    static void start() throws Exception {
        pods = CriPods.start("work");
        ctd = pods.ctd();
        cri = pods.cri();
        Path image = ctd.dir.resolve("debian-python.tar");
        Command.run(Duration.ofMinutes(15), Containerd.REPO, Map.of(), List.of("hack/make-image", "--debian",
                image.toString(), IMAGE)).ok();
        ctd.ctr(Duration.ofMinutes(2), "-n", Containerd.CRI_NAMESPACE, "images", "import", image.toString()).ok();
    }

    @AfterAll
    static void stop() throws Exception {
        if (pods != null) {
            pods.close();
        }
    }

    /** The probe the kubelet would run: python asks the server from inside the container. */
    private static final String PROBE = "import sys, urllib.request;"
            + " sys.exit(0 if b'hello from a pod' in urllib.request.urlopen('http://127.0.0.1:8080/', timeout=5).read() else 1)";

    private static String served(String handler) throws Exception {
        PodSandboxConfig web = pods.pod("web-" + handler, NamespaceMode.POD);
        String podId = pods.runPod(web, handler);
        String ip = cri.runtime("PodSandboxStatus", PodSandboxStatusRequest.newBuilder().setPodSandboxId(podId).build(),
                PodSandboxStatusResponse.parser()).getStatus().getNetwork().getIp();
        String http = pods.createAndStart(podId, web, CriPods.container("http", "").clearCommand()
                .setImage(ImageSpec.newBuilder().setImage(IMAGE))
                .addAllCommand(List.of("sh", "-c", "mkdir -p /srv && echo 'hello from a pod' > /srv/index.html"
                        + " && exec python3 -m http.server 8080 --directory /srv")));

        // The exec probe, until the server answers (python starts slowly under TCG).
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        ExecSyncResponse probe;
        while ((probe = pods.exec(http, "python3", "-c", PROBE)).getExitCode() != 0) {
            assertTrue(System.nanoTime() < end, handler + ": the probe never passed: " + probe.getStderr().toStringUtf8());
            Thread.sleep(500);
        }

        // The node fetches the page over the pod network.
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        HttpResponse<String> page = client.send(HttpRequest.newBuilder(URI.create("http://" + ip + ":8080/"))
                .timeout(Duration.ofSeconds(30)).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, page.statusCode());

        // Another pod does too (a rund pod of busybox, whatever runs the server).
        PodSandboxConfig other = pods.pod("client-" + handler, NamespaceMode.POD);
        String otherId = pods.runPod(other, "rund");
        String wget = pods.createAndStart(otherId, other, "wget", "while :; do sleep 1; done");
        ExecSyncResponse fetched = pods.exec(wget, "wget", "-q", "-O", "-", "http://" + ip + ":8080/");
        assertEquals(0, fetched.getExitCode(), fetched.getStderr().toStringUtf8());

        // The server's request log (stderr) is in CRI's log file, in CRI's format.
        Path log = Path.of(web.getLogDirectory(), "http.log");
        end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.readString(log).contains("\"GET / HTTP/1.1\" 200")) {
            assertTrue(System.nanoTime() < end, handler + ": no request in " + Files.readString(log));
            Thread.sleep(200);
        }
        assertTrue(Files.readString(log).matches("(?s).*\\S+ stderr F \\S+ - - \\[[^]]+\\] \"GET / HTTP/1.1\" 200 -\\n.*"),
                Files.readString(log));

        // CRI's stats: the server used CPU and holds memory.
        ContainerStats stats = cri.runtime("ContainerStats", ContainerStatsRequest.newBuilder().setContainerId(http)
                .build(), ContainerStatsResponse.parser()).getStats();
        assertTrue(stats.getCpu().getUsageCoreNanoSeconds().getValue() > 0, handler + ": " + stats);
        long memory = stats.getMemory().getWorkingSetBytes().getValue();
        assertTrue(memory > (1 << 20) && memory < (512L << 20), handler + ": working set " + memory);
        System.out.println("workload " + handler + ": python3 http.server working set " + (memory >> 10) + " KiB, cpu "
                + stats.getCpu().getUsageCoreNanoSeconds().getValue() / 1_000_000 + " ms");

        pods.stopAndRemovePod(otherId);
        pods.stopAndRemovePod(podId);
        return page.body() + fetched.getStdout().toStringUtf8();
    }

    @Test
    void aPythonServiceInAPodServesTheNodeAndAnotherPodAsUnderRunc() throws Exception {
        assertEquals("hello from a pod\nhello from a pod\n", served("runc"), "runc, the reference");
        assertEquals("hello from a pod\nhello from a pod\n", served("rund"));
        ctd.awaitNothingLeft();
    }
}
