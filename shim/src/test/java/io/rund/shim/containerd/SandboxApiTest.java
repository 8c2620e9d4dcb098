package io.rund.shim.containerd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.shim.TaskFault;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What a Sandbox API sandbox takes from CreateSandbox's options, a CRI PodSandboxConfig
 * written here from its field numbers (runtime.v1: hostname 2, dns_config 4 with servers
 * 1, searches 2, options 3, linux 8 with resources 5), and how the pod's /etc files reach
 * a container that joins.
 */
@Tag("unit")
class SandboxApiTest {

    private static Any podSandboxConfig(String hostname, List<String> servers, List<String> searches) throws Exception {
        ByteArrayOutputStream dns = new ByteArrayOutputStream();
        CodedOutputStream d = CodedOutputStream.newInstance(dns);
        for (String s : servers) {
            d.writeString(1, s);
        }
        for (String s : searches) {
            d.writeString(2, s);
        }
        d.writeString(3, "ndots:5");
        d.flush();
        ByteArrayOutputStream config = new ByteArrayOutputStream();
        CodedOutputStream c = CodedOutputStream.newInstance(config);
        c.writeBytes(1, ByteString.copyFromUtf8("\n\u0003web")); // metadata, not read
        c.writeString(2, hostname);
        c.writeString(3, "/var/log/pods/x"); // log_directory, not read
        c.writeBytes(4, ByteString.copyFrom(dns.toByteArray()));
        ByteArrayOutputStream resources = new ByteArrayOutputStream();
        CodedOutputStream r = CodedOutputStream.newInstance(resources);
        r.writeInt64(1, 100_000); // cpu_period
        r.writeInt64(2, 150_000); // cpu_quota
        r.writeInt64(4, 512L << 20); // memory_limit_in_bytes; no cpu_shares
        r.flush();
        ByteArrayOutputStream linux = new ByteArrayOutputStream();
        CodedOutputStream l = CodedOutputStream.newInstance(linux);
        l.writeString(1, "/kubepods/pod1"); // cgroup_parent, not read
        l.writeBytes(5, ByteString.copyFrom(resources.toByteArray()));
        l.flush();
        c.writeBytes(8, ByteString.copyFrom(linux.toByteArray()));
        c.flush();
        return Any.newBuilder().setTypeUrl("runtime.v1.PodSandboxConfig").setValue(ByteString.copyFrom(config.toByteArray()))
                .build();
    }

    @Test
    void thePodsHostnameAndDnsComeFromItsPodSandboxConfig() throws Exception {
        SandboxApi.PodConfig p = SandboxApi.podConfig("pod1", podSandboxConfig("web-0",
                List.of("10.96.0.10", "10.96.0.11"), List.of("default.svc.cluster.local", "svc.cluster.local")));
        assertEquals("web-0", p.hostname());
        assertEquals(List.of("10.96.0.10", "10.96.0.11"), p.servers());
        assertEquals(List.of("default.svc.cluster.local", "svc.cluster.local"), p.searches());
        assertEquals(List.of("ndots:5"), p.options());
        assertEquals(java.util.Map.of("io.kubernetes.cri.sandbox-cpu-period", "100000",
                "io.kubernetes.cri.sandbox-cpu-quota", "150000", "io.kubernetes.cri.sandbox-memory", "536870912"),
                p.resources(), "the pod's size as CRI's annotations give it to a pause container");

        TaskFault line = assertThrows(TaskFault.class, () -> SandboxApi.podConfig("pod1",
                podSandboxConfig("web", List.of("10.0.0.1\nnameserver 6.6.6.6"), List.of())));
        assertEquals(Fault.INVALID_ARGUMENT, line.kind);
        assertTrue(line.getMessage().contains("nameserver 6.6.6.6"), line.getMessage());

        TaskFault garbage = assertThrows(TaskFault.class, () -> SandboxApi.podConfig("pod1", Any.newBuilder()
                .setTypeUrl("x").setValue(ByteString.copyFrom(new byte[] {0x12, 0x7f, 'a'})).build()));
        assertTrue(garbage.getMessage().contains("not a PodSandboxConfig"), garbage.getMessage());
    }

    @Test
    void aJoiningContainerGetsThePodsFilesWhereItsSpecBindsNoneOfItsOwn(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("hostname"), "web-0\n");
        Files.writeString(dir.resolve("hosts"), "127.0.0.1 localhost\n");
        Files.writeString(dir.resolve("resolv.conf"), "nameserver 10.96.0.10\n");
        ContainerSpec spec = new ContainerSpec("c1", List.of(), "web-0",
                new ProcessSpec(List.of("sh"), List.of(), "/", 0, 0, List.of(), List.of(), false,
                        ProcessSpec.Capabilities.NONE, false, null, null),
                ContainerConfig.of(List.of(), List.of(), List.of()), List.of(),
                List.of(new ContainerSpec.FileMount("/etc/hosts", "the kubelet's\n".getBytes(StandardCharsets.UTF_8), false)),
                List.of(), null, null, 0);
        ContainerSpec joined = SandboxApi.withPodFiles(spec, dir);
        assertEquals(List.of("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"),
                joined.files().stream().map(ContainerSpec.FileMount::destination).toList());
        assertEquals("the kubelet's\n", new String(joined.files().get(0).data(), StandardCharsets.UTF_8),
                "the spec's own /etc/hosts stays");
        assertEquals("nameserver 10.96.0.10\n", new String(joined.files().get(2).data(), StandardCharsets.UTF_8));
    }
}
