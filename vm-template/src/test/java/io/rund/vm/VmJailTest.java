package io.rund.vm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** VM uids are never shared by two live VMs, and what VMs read is theirs to reach, and only to read. */
class VmJailTest {

    @Test
    void uidsAreUniqueUntilReleased() throws Exception {
        VmJail jail = new VmJail(Path.of("/nowhere/rund-jail"), 3_000_000);
        int a = jail.acquire();
        int b = jail.acquire();
        assertEquals(3_000_001, a);
        assertEquals(3_000_002, b);
        jail.release(a);
        assertEquals(a, jail.acquire(), "a released uid is handed out again");
        for (int i = 2; i < VmJail.UIDS; i++) {
            jail.acquire();
        }
        HypervisorException full = assertThrows(HypervisorException.class, jail::acquire);
        assertTrue(full.getMessage().contains("no free VM uid"), full.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new VmJail(Path.of("/j"), 0));
    }

    @Test
    void sharedFilesAreRootsReadableByTheGroupAndTheirParentPassable(@TempDir Path dir) throws Exception {
        VmJail jail = new VmJail(Path.of("/nowhere/rund-jail"), 3_000_000);
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx--x--x")); // JUnit makes it 0700
        Path closed = Files.createDirectory(dir.resolve("rund"), PosixFilePermissions.asFileAttribute(
                PosixFilePermissions.fromString("rwx------")));
        Path store = Files.createDirectory(closed.resolve("templates"));
        Path ram = Files.writeString(store.resolve("ram"), "pages");
        jail.giveTo(ram, 3_000_005);
        assertEquals(3_000_005, Files.getAttribute(ram, "unix:uid"), "a building VM's file");
        jail.grantRead(store);
        jail.grantRead(ram);
        assertEquals("rwxr-x---", PosixFilePermissions.toString(Files.getPosixFilePermissions(store)));
        assertEquals("rw-r-----", PosixFilePermissions.toString(Files.getPosixFilePermissions(ram)));
        assertEquals(0, Files.getAttribute(ram, "unix:uid"), "back to root: no VM may write it");
        assertEquals(3_000_000, Files.getAttribute(ram, "unix:gid"));
        assertEquals("rwx--x--x", PosixFilePermissions.toString(Files.getPosixFilePermissions(closed)),
                "the parent older rund closed is opened for passing through, not for listing");
        Path key = Files.createDirectory(store.resolve("key"));
        jail.grantRead(key);
        assertEquals("rwxr-x---", PosixFilePermissions.toString(Files.getPosixFilePermissions(store)),
                "a parent the VMs' group passes stays closed to others");

        // A closed parent that holds other things (like /root) is not opened: the error names it.
        Path busy = Files.createDirectory(dir.resolve("busy"), PosixFilePermissions.asFileAttribute(
                PosixFilePermissions.fromString("rwx------")));
        Files.writeString(busy.resolve("secret"), "x");
        Path busyStore = Files.createDirectory(busy.resolve("templates"));
        IOException closedBusy = assertThrows(IOException.class, () -> jail.grantRead(busyStore));
        assertTrue(closedBusy.getMessage().contains("cannot pass through " + busy), closedBusy.getMessage());
        assertEquals("rwx------", PosixFilePermissions.toString(Files.getPosixFilePermissions(busy)));

        Path deep = Files.createDirectories(dir.resolve("x/y"));
        Files.setPosixFilePermissions(dir.resolve("x"), PosixFilePermissions.fromString("rwx------"));
        Path inner = Files.createDirectory(deep.resolve("templates"));
        IOException e = assertThrows(IOException.class, () -> jail.grantRead(inner));
        assertTrue(e.getMessage().contains("cannot pass through " + dir.resolve("x")), e.getMessage());
    }
}
