package io.rund.sandbox.agent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** A guest's error text reaches logs and containerd bounded, and unable to forge lines. */
@Tag("unit")
class AgentExceptionTest {

    @Test
    void guestTextIsCutAndItsControlCharactersEscaped() {
        assertEquals("no such process", AgentException.guestText("no such process"));
        assertEquals("line\\x0aforged\\x0d\\x1b[31m\\x00", AgentException.guestText("line\nforged\r\u001b[31m\0"));
        assertEquals("a\\x2028b\\x85", AgentException.guestText("a\u2028b\u0085"));
        String huge = AgentException.guestText("x".repeat(10_000_000));
        assertTrue(huge.length() < AgentException.MAX_GUEST_TEXT + 100, "length " + huge.length());
        assertTrue(huge.endsWith("x... (" + (10_000_000 - AgentException.MAX_GUEST_TEXT)
                + " more characters from the guest)"), huge.substring(huge.length() - 80));
        String escapes = AgentException.guestText("\n".repeat(5000));
        assertTrue(escapes.length() < AgentException.MAX_GUEST_TEXT + 100, "escapes count against the cap too");
    }
}
