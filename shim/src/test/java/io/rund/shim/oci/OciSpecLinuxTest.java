package io.rund.shim.oci;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.guest.SeccompProfile;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.shim.TaskFault;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The spec's Linux settings as the OCI translation hands them to the guest: mounts in
 * order, namespaces, sysctls, resources, seccomp; and what a VM cannot honour refused at
 * Create, naming the field and its value.
 */
@Tag("unit")
class OciSpecLinuxTest {

    private static final String NAMESPACES = """
            [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]""";

    /** A spec as containerd writes one, with {@code linux} extra fields and {@code top} extra top-level ones. */
    private static ContainerSpec read(Path bundle, String linux, String top) throws Exception {
        Files.writeString(bundle.resolve("config.json"), """
                {"process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0, "umask": 18}, "oomScoreAdj": 500},
                 "root": {"path": "rootfs", "readonly": true},
                 "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=65536k"]},
                            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid"]}]
                 %s,
                 "linux": {"namespaces": %s %s}}
                """.formatted(top, NAMESPACES, linux));
        return OciSpec.readBundle("c1", bundle, List.of(), false);
    }

    @Test
    void theSpecsMountsPathsAndProcessSettingsReachTheGuestAsWritten(@TempDir Path bundle) throws Exception {
        ContainerSpec c = read(bundle, """
                , "maskedPaths": ["/proc/acpi", "/proc/kcore"], "readonlyPaths": ["/proc/sys"],
                  "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000000"},
                  "rootfsPropagation": "rslave",
                  "resources": {"memory": {"limit": 33554432, "swap": 33554432, "reservation": 1000},
                                "cpu": {"shares": 512, "quota": 200000, "period": 100000, "cpus": "0-1"},
                                "pids": {"limit": 99},
                                "devices": [{"allow": false, "access": "rwm"}]}""", "");
        ContainerConfig k = c.config();
        assertEquals(List.of("/proc proc proc []", "/run tmpfs tmpfs [nosuid, mode=755, size=65536k]",
                "/sys/fs/cgroup cgroup cgroup [ro, nosuid]"), k.mounts().stream()
                .map(m -> m.destination() + " " + m.type() + " " + m.source() + " " + m.options()).toList());
        assertEquals(List.of("/proc/acpi", "/proc/kcore"), k.maskedPaths());
        assertEquals(List.of("/proc/sys"), k.readonlyPaths());
        assertTrue(k.readonlyRoot());
        assertEquals(Map.of("net.ipv4.ip_forward", "1", "kernel.shmmax", "1000000"), k.sysctls());
        assertEquals("rslave", k.rootfsPropagation());
        assertEquals(new ContainerConfig.Namespaces(false, false, true, false), k.namespaces(),
                "a network namespace without a path is the container's own");
        assertEquals(33554432L, k.resources().memoryLimit());
        assertEquals(33554432L, k.resources().memorySwap());
        assertEquals(512L, k.resources().cpuShares());
        assertEquals(200000, k.resources().quotaPer100ms());
        assertEquals("0-1", k.resources().cpusetCpus());
        assertEquals(99L, k.resources().pidsLimit());
        assertEquals(List.of(new ResourceLimits.DeviceRule(false, "a", null, null, "rwm")), k.resources().devices());
        assertEquals(18, c.process().umask());
        assertEquals(500, c.process().oomScoreAdj());
        assertNull(k.seccomp());
    }

    @Test
    void aPodsContainerJoinsThePodsNamespacesByPath(@TempDir Path bundle) throws Exception {
        Files.writeString(bundle.resolve("config.json"), """
                {"process": {"args": ["sh"]},
                 "annotations": {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod1"},
                 "linux": {"namespaces": [{"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
                   {"type": "uts", "path": "/proc/42/ns/uts"}, {"type": "mount"}, {"type": "network", "path": "/proc/42/ns/net"},
                   {"type": "cgroup"}]}}
                """);
        ContainerConfig.Namespaces ns = OciSpec.readBundle("c2", bundle, List.of(), false).config().namespaces();
        assertEquals(new ContainerConfig.Namespaces(true, true, false, true), ns);
    }

    @Test
    void aPodsSandboxContainerSizesTheVmFromCrisAnnotations(@TempDir Path bundle) throws Exception {
        Files.writeString(bundle.resolve("config.json"), """
                {"process": {"args": ["/pause"]},
                 "annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod1",
                   "io.kubernetes.cri.sandbox-memory": "536870912", "io.kubernetes.cri.sandbox-cpu-quota": "150000",
                   "io.kubernetes.cri.sandbox-cpu-period": "100000", "io.kubernetes.cri.sandbox-cpu-shares": "1536"},
                 "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}], "resources": {"cpu": {"shares": 2}}}}
                """);
        ResourceLimits vm = OciSpec.readBundle("pod1", bundle, List.of(), false).vmResources();
        assertEquals(536870912L, vm.memoryLimit());
        assertEquals(150000, vm.quotaPer100ms());
        assertEquals(1536L, vm.cpuShares(), "the pod's shares, not the pause container's own");

        Files.writeString(bundle.resolve("config.json"), """
                {"process": {"args": ["/pause"]},
                 "annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-cpu-shares": "-4"},
                 "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}]}}
                """);
        TaskFault bad = assertThrows(TaskFault.class, () -> OciSpec.readBundle("pod1", bundle, List.of(), false));
        assertTrue(bad.getMessage().contains("io.kubernetes.cri.sandbox-cpu-shares=-4"), bad.getMessage());
    }

    @Test
    void seccompIsHandedOverRuleByRule(@TempDir Path bundle) throws Exception {
        SeccompProfile p = read(bundle, """
                , "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "architectures": ["SCMP_ARCH_X86_64"],
                   "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}""", "").config().seccomp();
        assertEquals("SCMP_ACT_ERRNO", p.defaultAction());
        assertEquals(38, p.defaultErrnoRet());
        assertEquals(List.of("SCMP_ARCH_X86_64"), p.architectures());
        assertEquals(3, p.syscalls().size());
        assertEquals(List.of(new SeccompProfile.Arg(0, 8, 0, "SCMP_CMP_EQ")), p.syscalls().get(1).args());
        assertEquals(1, p.syscalls().get(2).errnoRet());
    }

    @Test
    void whatAVmCannotHonourIsRefusedNamingTheFieldAndValue(@TempDir Path bundle) throws Exception {
        String[][] cases = {
                // linux extras, top-level extras, what the error must name
                {"", "", null},
                {", \"devices\": [{\"path\": \"/dev/sda\", \"type\": \"b\", \"major\": 8, \"minor\": 0}]", "", "/dev/sda"},
                {", \"uidMappings\": [{\"containerID\": 0, \"hostID\": 1000, \"size\": 1}]", "", "uidMappings"},
                {", \"sysctl\": {\"vm.swappiness\": \"10\"}", "", "vm.swappiness"},
                {", \"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"listenerPath\": \"/run/agent.sock\"}", "", "/run/agent.sock"},
                {", \"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"open\"], \"action\": \"SCMP_ACT_NOTIFY\"}]}", "", "SCMP_ACT_NOTIFY"},
                {", \"resources\": {\"hugepageLimits\": [{\"pageSize\": \"2MB\", \"limit\": 1}]}", "", "hugepageLimits"},
                {", \"resources\": {\"memory\": {\"disableOOMKiller\": true}}", "", "disableOOMKiller"},
                {", \"resources\": {\"blockIO\": {\"weight\": 10}}", "", "blockIO"},
                {", \"intelRdt\": {\"closID\": \"x\"}", "", "intelRdt"},
                {", \"rootfsPropagation\": \"sideways\"", "", "sideways"},
                {"", ", \"hooks\": {\"prestart\": [{\"path\": \"/usr/bin/hook\"}]}", "prestart"},
                {"", ", \"domainname\": \"example.org\"", "example.org"},
                {"", ", \"windows\": {}", "windows"},
                {", \"futureField\": 1", "", "linux.futureField"},
                {", \"resources\": {\"cpu\": {\"burst\": 1000}}", "", "burst"},
                {"", ", \"futureTop\": {}", "futureTop"},
        };
        for (String[] c : cases) {
            if (c[2] == null) {
                read(bundle, c[0], c[1]); // the plain spec is taken
                continue;
            }
            TaskFault f = assertThrows(TaskFault.class, () -> read(bundle, c[0], c[1]), c[2]);
            assertEquals(Fault.INVALID_ARGUMENT, f.kind, c[2]);
            assertTrue(f.getMessage().contains(c[2]), c[2] + " -> " + f.getMessage());
        }
    }

    @Test
    void hostNamespacesAndForeignMountsAreRefused(@TempDir Path bundle) throws Exception {
        String[][] cases = {
                {"[{\"type\": \"pid\"}, {\"type\": \"ipc\"}, {\"type\": \"uts\"}, {\"type\": \"mount\"}]", "network absent"},
                {"[{\"type\": \"ipc\"}, {\"type\": \"uts\"}, {\"type\": \"mount\"}, {\"type\": \"network\"}]", "pid absent"},
                {"[{\"type\": \"pid\"}, {\"type\": \"ipc\"}, {\"type\": \"uts\"}, {\"type\": \"mount\"}, {\"type\": \"network\"},"
                        + " {\"type\": \"user\"}]", "user"},
                {"[{\"type\": \"pid\", \"path\": \"/proc/1/ns/pid\"}, {\"type\": \"ipc\"}, {\"type\": \"uts\"}, {\"type\": \"mount\"},"
                        + " {\"type\": \"network\"}]", "/proc/1/ns/pid"},
        };
        for (String[] c : cases) {
            Files.writeString(bundle.resolve("config.json"),
                    "{\"process\": {\"args\": [\"sh\"]}, \"linux\": {\"namespaces\": " + c[0] + "}}");
            TaskFault f = assertThrows(TaskFault.class, () -> OciSpec.readBundle("c", bundle, List.of(), false), c[1]);
            assertTrue(f.getMessage().contains(c[1]), c[1] + " -> " + f.getMessage());
        }
        Files.writeString(bundle.resolve("config.json"), "{\"process\": {\"args\": [\"sh\"]}, \"mounts\": [{\"destination\":"
                + " \"/data\", \"type\": \"ext4\", \"source\": \"/dev/sdb1\"}], \"linux\": {\"namespaces\": " + NAMESPACES + "}}");
        TaskFault ext4 = assertThrows(TaskFault.class, () -> OciSpec.readBundle("c", bundle, List.of(), false));
        assertTrue(ext4.getMessage().contains("/data of type ext4"), ext4.getMessage());
        assertFalse(ext4.getMessage().isEmpty());
    }
}
