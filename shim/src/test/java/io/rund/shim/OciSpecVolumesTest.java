package io.rund.shim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.rund.sandbox.lifecycle.ContainerSpec;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Which of a spec's mounts become pod volumes in the VM, and which bad ones are refused by name. */
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
    void badNamesAndDestinationsAreRefusedNamingThem() {
        TaskFault name = assertThrows(TaskFault.class, () -> OciSpec.volumes("spec", JSON.readTree(
                "[{\"destination\":\"/c\",\"type\":\"bind\",\"source\":\"" + DIR + "../../etc\"}]")));
        assertTrue(name.getMessage().contains(DIR + "../../etc"), name.getMessage());
        TaskFault dest = assertThrows(TaskFault.class, () -> OciSpec.volumes("spec", JSON.readTree(
                "[{\"destination\":\"relative\",\"type\":\"bind\",\"source\":\"" + DIR + "c\"}]")));
        assertTrue(dest.getMessage().contains("relative"), dest.getMessage());
    }
}
