package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Sandbox directory names: short ids name themselves, CRI's 64-digit ids a short stable name. */
class DirNameTest {

    @Test
    void longIdsGetAShortStableNameThatIsItsOwnName() {
        assertEquals("web-1", SandboxManager.dirName("web-1"));
        String cri = "956436cb4d259b1e084fda574039cbfc89b1db855be40175017ea0f0dc5a1333";
        String name = SandboxManager.dirName(cri);
        assertEquals(33, name.length());
        assertTrue(name.startsWith("956436cb4d259b1e."), name);
        assertTrue(SandboxManager.isValidId(name), "recovery lists directories by the id rule");
        assertEquals(name, SandboxManager.dirName(name), "recovery may clean a directory by its name");
        assertEquals(name, SandboxManager.dirName(cri), "stable");
        assertNotEquals(name, SandboxManager.dirName(cri.substring(0, 63) + "4"), "the hash tells ids with one prefix apart");
    }
}
