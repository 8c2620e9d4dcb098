package io.rund.shim.oci;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.shim.TaskFault;
import io.rund.testing.Trees;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** Which of a spec's mounts become pod volumes or copied files in the VM, its network namespace, and which bad ones are refused by name. */
@Tag("unit")
class OciSpecVolumesTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String DIR = "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/";

    @Test
    void emptyDirBindsBecomeVolumesAndOtherMountsStayOut() throws Exception {
        List<ContainerSpec.Volume> v = OciSpec.volumes("spec", JSON.readTree("""
                [{"destination":"/proc","type":"proc","source":"proc"},
                 {"destination":"/etc/hosts","type":"bind","source":"/var/lib/containerd/sandboxes/x/hosts","options":["rbind","rw"]},
                 {"destination":"/cache","type":"bind","source":"%1$scache","options":["rbind","rprivate","rw"]},
                 {"destination":"/in","type":"bind","source":"%1$scache","options":["rbind","ro"]}]
                """.formatted(DIR)));
        assertEquals(List.of(new ContainerSpec.Volume("cache", "/cache", false), new ContainerSpec.Volume("cache", "/in", true)), v);
    }

    @Test
    void aTmpfsAtAnEmptyDirIsAMemoryVolumeOfItsSize() {
        String mountinfo = """
                22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
                91 22 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem rw,relatime shared:40 - tmpfs tmpfs rw,size=65536k,inode64
                92 22 0:51 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/big rw,relatime - tmpfs tmpfs rw,inode64
                93 22 0:52 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/a\\040b rw - tmpfs tmpfs rw,size=1g
                94 22 0:53 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/over rw - tmpfs tmpfs rw,size=1g
                95 94 8:1 /x /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/over rw - ext4 /dev/sda1 rw
                """;
        assertEquals(64L << 20, OciSpec.tmpfsSize(DIR + "mem", mountinfo), "sizeLimit, as the kubelet mounted it");
        assertEquals(0, OciSpec.tmpfsSize(DIR + "big", mountinfo), "no size: tmpfs's default");
        assertEquals(1L << 30, OciSpec.tmpfsSize(DIR + "a b", mountinfo), "escaped mount points are read");
        assertEquals(-1, OciSpec.tmpfsSize(DIR + "disk", mountinfo), "no mount: on the disk");
        assertEquals(-1, OciSpec.tmpfsSize(DIR + "over", mountinfo), "the last mount there decides");
    }

    @Test
    void badNamesAndDestinationsAreRefusedNamingThem() {
        TaskFault name = assertThrows(TaskFault.class, () -> OciSpec.volumes("spec", JSON.readTree(
                "[{\"destination\":\"/c\",\"type\":\"bind\",\"source\":\"" + DIR + "../../etc\"}]")));
        assertTrue(name.getMessage().contains(DIR + "../../etc"), name.getMessage());
        TaskFault dest = assertThrows(TaskFault.class, () -> OciSpec.volumes("spec", JSON.readTree(
                "[{\"destination\":\"relative\",\"type\":\"bind\",\"source\":\"" + DIR + "c\"}]")));
        assertTrue(dest.getMessage().contains("relative"), dest.getMessage());
    }

    @Test
    void regularFileBindsAreCopiedDirectoriesStayOutAndTooLargeFilesAreRefused() throws Exception {
        java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("rund-ocispec-");
        try {
            java.nio.file.Path resolv = java.nio.file.Files.writeString(dir.resolve("resolv.conf"), "nameserver 10.0.0.53\n");
            java.nio.file.Path hosts = java.nio.file.Files.writeString(dir.resolve("hosts"), "127.0.0.1 localhost\n");
            List<ContainerSpec.FileMount> f = OciSpec.files("spec", JSON.readTree("""
                    [{"destination":"/etc/resolv.conf","type":"bind","source":"%s","options":["rbind","ro"]},
                     {"destination":"/etc/hosts","source":"%s","options":["bind","rw"]},
                     {"destination":"/data","type":"bind","source":"%s","options":["rbind"]},
                     {"destination":"/cache","type":"bind","source":"%sc"},
                     {"destination":"/proc","type":"proc","source":"proc"}]
                    """.formatted(resolv, hosts, dir, DIR)));
            assertEquals(2, f.size(), f.toString());
            assertEquals("/etc/resolv.conf", f.get(0).destination());
            assertEquals("nameserver 10.0.0.53\n", new String(f.get(0).data(), java.nio.charset.StandardCharsets.UTF_8));
            assertTrue(f.get(0).readOnly());
            assertEquals("/etc/hosts", f.get(1).destination());
            assertTrue(!f.get(1).readOnly());

            java.nio.file.Path big = dir.resolve("big");
            try (java.io.RandomAccessFile r = new java.io.RandomAccessFile(big.toFile(), "rw")) {
                r.setLength(OciSpec.MAX_FILE_BIND + 1);
            }
            TaskFault tooBig = assertThrows(TaskFault.class, () -> OciSpec.files("spec", JSON.readTree(
                    "[{\"destination\":\"/big\",\"type\":\"bind\",\"source\":\"" + big + "\"}]")));
            assertTrue(tooBig.getMessage().contains(big.toString()), tooBig.getMessage());

            // Read once by descriptor: a symlink is not followed, a FIFO never opened (it would block),
            // a device refused, a /proc file (size 0 on stat) read for what it holds, up to the limit.
            java.nio.file.Path link = java.nio.file.Files.createSymbolicLink(dir.resolve("link"), resolv);
            java.nio.file.Path fifo = dir.resolve("fifo");
            io.rund.rootfs.Syscalls.mkfifo(fifo, 0644);
            for (java.nio.file.Path bad : List.of(link, fifo, java.nio.file.Path.of("/dev/zero"))) {
                TaskFault refused = assertThrows(TaskFault.class, () -> OciSpec.files("spec", JSON.readTree(
                        "[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":\"" + bad + "\"}]")));
                assertTrue(refused.getMessage().contains("bind source " + bad + " is "), refused.getMessage());
            }
            List<ContainerSpec.FileMount> proc = OciSpec.files("spec", JSON.readTree(
                    "[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":\"/proc/self/status\"}]"));
            assertTrue(new String(proc.getFirst().data(), java.nio.charset.StandardCharsets.UTF_8).startsWith("Name:"));
            TaskFault missing = assertThrows(TaskFault.class, () -> OciSpec.files("spec", JSON.readTree(
                    "[{\"destination\":\"/x\",\"type\":\"bind\",\"source\":\"" + dir.resolve("none") + "\"}]")));
            assertTrue(missing.getMessage().contains(dir.resolve("none").toString()), missing.getMessage());
        } finally {
            Trees.delete(dir);
        }
    }

    @Test
    void theNetworkNamespaceIsTheOneWithAPath() throws Exception {
        assertEquals(java.nio.file.Path.of("/var/run/netns/cni-1"), OciSpec.netns("spec", JSON.readTree("""
                [{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]""")));
        assertEquals(null, OciSpec.netns("spec", JSON.readTree("[{\"type\":\"network\"}]")));
        TaskFault rel = assertThrows(TaskFault.class, () -> OciSpec.netns("spec", JSON.readTree(
                "[{\"type\":\"network\",\"path\":\"netns/x\"}]")));
        assertTrue(rel.getMessage().contains("netns/x"), rel.getMessage());
    }
}
