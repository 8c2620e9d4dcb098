package io.rund.shim.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** rund.toml: defaults, the file, then the environment; unknown keys and bad values refused by name. */
@Tag("unit")
class RundConfigTest {

    @Test
    void defaultsWhenThereIsNoFile(@TempDir Path dir) throws Exception {
        Daemon.Config c = RundConfig.load(Map.of("RUND_CONFIG", dir.resolve("none.toml").toString()));
        assertEquals(Path.of("/run/rund"), c.stateDir());
        assertEquals(8, c.poolSize());
        assertEquals("rund", c.cgroupPool());
        assertNull(c.accelerator(), "automatic");
        assertEquals(Path.of("/var/lib/rund/templates"), c.templates(), "VMs are cloned by default");
        assertEquals(2, c.spareVms());
        assertEquals(2_000_000, c.vmUidBase(), "VMs are confined by default");
        assertEquals(Path.of("/usr/local/lib/rund/rund-jail"), c.jailer());
        assertEquals(256, c.writableLayerMiB(), "each pod's disk");
        assertEquals(Runtime.getRuntime().availableProcessors(), c.startsAtOnce(), "one start at once per CPU");
    }

    @Test
    void theFileThenTheEnvironment(@TempDir Path dir) throws Exception {
        Path f = Files.writeString(dir.resolve("rund.toml"), """
                state_dir = "/run/rund-x"
                pool_size = 16
                accelerator = "tcg"
                templates = "off"
                spare_vms = 5
                starts_at_once = 3
                writable_layer_mib = 1024
                """);
        Daemon.Config c = RundConfig.load(Map.of("RUND_CONFIG", f.toString(), "RUND_POOL_SIZE", "3"));
        assertNull(c.templates(), "templates = off forces cold boot");
        assertEquals(Path.of("/tmp/t"), RundConfig.load(Map.of("RUND_CONFIG", f.toString(), "RUND_TEMPLATES", "/tmp/t"))
                .templates());
        assertEquals(Path.of("/run/rund-x"), c.stateDir());
        assertEquals(3, c.poolSize(), "the environment wins");
        assertEquals("tcg", c.accelerator());
        assertEquals(5, c.spareVms());
        assertEquals(3, c.startsAtOnce());
        assertEquals(7, RundConfig.load(Map.of("RUND_CONFIG", f.toString(), "RUND_STARTS_AT_ONCE", "7")).startsAtOnce());
        assertEquals(1024, c.writableLayerMiB());
        assertEquals(64, RundConfig.load(Map.of("RUND_CONFIG", f.toString(), "RUND_WRITABLE_LAYER_MIB", "64")).writableLayerMiB());
        assertEquals(0, RundConfig.load(Map.of("RUND_CONFIG", f.toString(), "RUND_SPARE_VMS", "0")).spareVms());
    }

    @Test
    void anUnknownKeyIsAnErrorNamingIt(@TempDir Path dir) throws Exception {
        Path f = Files.writeString(dir.resolve("rund.toml"), "pool_sise = 4\n");
        IOException e = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", f.toString())));
        assertTrue(e.getMessage().contains("unknown key pool_sise"), e.getMessage());
        assertTrue(e.getMessage().contains(f.toString()), e.getMessage());
    }

    @Test
    void badValuesAreErrorsNamingThem(@TempDir Path dir) throws Exception {
        Path accel = Files.writeString(dir.resolve("a.toml"), "accelerator = \"xen\"\n");
        IOException a = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", accel.toString())));
        assertTrue(a.getMessage().contains("xen"), a.getMessage());
        Path pool = Files.writeString(dir.resolve("p.toml"), "pool_size = 0\n");
        IOException p = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", pool.toString())));
        assertTrue(p.getMessage().contains("pool_size 0"), p.getMessage());
        Path spares = Files.writeString(dir.resolve("s.toml"), "spare_vms = -1\n");
        IOException s = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", spares.toString())));
        assertTrue(s.getMessage().contains("spare_vms -1"), s.getMessage());
        Path turns = Files.writeString(dir.resolve("t.toml"), "starts_at_once = -2\n");
        IOException t = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", turns.toString())));
        assertTrue(t.getMessage().contains("starts_at_once -2 is outside 0..1024"), t.getMessage());
        Path layer = Files.writeString(dir.resolve("l.toml"), "writable_layer_mib = 8\n");
        IOException l = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", layer.toString())));
        assertTrue(l.getMessage().contains("writable_layer_mib 8 is outside 16..1048576"), l.getMessage());
        Path uids = Files.writeString(dir.resolve("u.toml"), "vm_uid_base = 5\n");
        IOException u = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", uids.toString())));
        assertTrue(u.getMessage().contains("vm_uid_base 5"), u.getMessage());
        IOException root = assertThrows(IOException.class,
                () -> RundConfig.load(Map.of("RUND_CONFIG", uids.toString(), "RUND_VM_UID_BASE", "0")));
        assertTrue(root.getMessage().contains("vm_uid_base 0 is not in 1000..") && root.getMessage().contains("no longer run as root"),
                "VMs never run as root: their helpers reach their memory as their uid: " + root.getMessage());
                Path broken = Files.writeString(dir.resolve("b.toml"), "pool_size = = 3\n");
        IOException b = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", broken.toString())));
        assertTrue(b.getMessage().contains(broken.toString()), b.getMessage());
    }

    @Test
    void valuesOfTheWrongKindAreErrorsNamingTheKey(@TempDir Path dir) throws Exception {
        Path text = Files.writeString(dir.resolve("t.toml"), "pool_size = \"eight\"\n");
        IOException t = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", text.toString())));
        assertTrue(t.getMessage().contains("pool_size must be a whole number, not eight"), t.getMessage());
        Path number = Files.writeString(dir.resolve("n.toml"), "state_dir = 7\n");
        IOException n = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", number.toString())));
        assertTrue(n.getMessage().contains("state_dir must be a string, not 7"), n.getMessage());
        Path table = Files.writeString(dir.resolve("s.toml"), "[templates]\ndir = \"/x\"\n");
        IOException s = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", table.toString())));
        assertTrue(s.getMessage().contains("templates must be a string, not a table"), s.getMessage());
        Path big = Files.writeString(dir.resolve("b.toml"), "spare_vms = 99999999999\n");
        IOException b = assertThrows(IOException.class, () -> RundConfig.load(Map.of("RUND_CONFIG", big.toString())));
        assertTrue(b.getMessage().contains("spare_vms must be a whole number, not 99999999999"), b.getMessage());
    }
}
