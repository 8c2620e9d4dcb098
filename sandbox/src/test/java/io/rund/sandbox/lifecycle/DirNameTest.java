package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.id.Ids;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** Sandbox directory names: short ids name themselves, CRI's 64-digit ids a short stable name. */
@Tag("unit")
class DirNameTest {

    @Test
    void longIdsGetAShortStableNameThatIsItsOwnName() {
        assertEquals("web-1", Ids.dirName("web-1"));
        String cri = "956436cb4d259b1e084fda574039cbfc89b1db855be40175017ea0f0dc5a1333";
        String name = Ids.dirName(cri);
        assertEquals(33, name.length());
        assertTrue(name.startsWith("956436cb4d259b1e."), name);
        assertTrue(Ids.isValid(name), "recovery lists directories by the id rule");
        assertEquals(name, Ids.dirName(name), "recovery may clean a directory by its name");
        assertEquals(name, Ids.dirName(cri), "stable");
        assertNotEquals(name, Ids.dirName(cri.substring(0, 63) + "4"), "the hash tells ids with one prefix apart");
    }
}
