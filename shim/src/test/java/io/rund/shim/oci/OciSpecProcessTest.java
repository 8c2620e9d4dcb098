package io.rund.shim.oci;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.lifecycle.ContainerSpec;
import io.rund.shim.TaskFault;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** config.json's process and resources as the OCI translation reads them; bad values named by their field. */
@Tag("unit")
class OciSpecProcessTest {

    @Test
    void theProcessIsTranslatedFieldByField(@TempDir Path bundle) throws Exception {
        Files.writeString(bundle.resolve("config.json"), """
                {"hostname": "web",
                 "process": {"args": ["nginx", "-g", "daemon off;"], "env": ["PATH=/usr/bin", "A=b"], "cwd": "/srv",
                   "terminal": true, "noNewPrivileges": true,
                   "user": {"uid": 101, "gid": 102, "additionalGids": [4, 27]},
                   "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
                   "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
                     "permitted": ["CAP_NET_BIND_SERVICE"], "inheritable": [], "ambient": []}},
                 "linux": {"resources": {"memory": {"limit": 67108864}, "cpu": {"quota": 50000, "period": 100000}},
                   "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]}}
                """);
        ContainerSpec b = OciSpec.readBundle("web", bundle, List.of(), true);
        ProcessSpec p = b.process();
        assertEquals(List.of("nginx", "-g", "daemon off;"), p.args());
        assertEquals(List.of("PATH=/usr/bin", "A=b"), p.env());
        assertEquals("/srv", p.cwd());
        assertTrue(p.terminal());
        assertTrue(p.noNewPrivileges());
        assertEquals(101, p.uid());
        assertEquals(102, p.gid());
        assertEquals(List.of(4, 27), p.additionalGids());
        assertEquals(List.of(new ProcessSpec.Rlimit("RLIMIT_NOFILE", 1024, 4096)), p.rlimits());
        assertEquals(List.of("CAP_CHOWN", "CAP_NET_BIND_SERVICE"), p.capabilities().bounding());
        assertEquals(List.of("CAP_NET_BIND_SERVICE"), p.capabilities().effective());
        assertEquals("web", b.hostname());
        assertEquals(67108864, b.resources().memoryLimitBytes());
        assertEquals(50000, b.resources().quotaPer100ms(), "quota per 100 ms period");
        assertFalse(OciSpec.readBundle("web", bundle, List.of(), false).process().terminal(), "containerd's terminal wins");
    }

    @Test
    void badProcessesAreRefusedNamingTheField(@TempDir Path bundle) throws Exception {
        for (String[] c : new String[][] {
                {"{}", "process is missing"},
                {"{\"process\": {\"args\": []}}", "process.args is empty"},
                {"{\"process\": {\"args\": [\"true\"], \"user\": {\"uid\": -1}}}", "process.user.uid"},
                {"{\"process\": {\"args\": [\"true\"], \"user\": {\"uid\": 0, \"gid\": \"root\"}}}", "process.user.gid"},
                {"{\"process\": {\"args\": [\"true\", 3]}}", "process.args"},
                {"[]", "is not a JSON object"},
                {"{not json", "config.json"}}) {
            Files.writeString(bundle.resolve("config.json"), c[0]);
            TaskFault f = assertThrows(TaskFault.class, () -> OciSpec.readBundle("c", bundle, List.of(), false), c[0]);
            assertEquals(Fault.INVALID_ARGUMENT, f.kind, c[0]);
            assertTrue(f.getMessage().contains(c[1]), c[0] + " -> " + f.getMessage());
        }
        TaskFault exec = assertThrows(TaskFault.class,
                () -> OciSpec.execProcess("{\"args\": []}".getBytes(StandardCharsets.UTF_8)));
        assertTrue(exec.getMessage().contains("exec spec.args is empty"), exec.getMessage());
    }
}
