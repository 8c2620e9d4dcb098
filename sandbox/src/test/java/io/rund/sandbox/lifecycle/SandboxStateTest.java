package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** state.json as a restarted daemon reads it: phases by their lower-case names, each step adding to the last. */
@Tag("unit")
class SandboxStateTest {

    @Test
    void stepsAddToTheStateAndTheFileKeepsItsShape(@TempDir Path dir) throws Exception {
        SandboxState s = SandboxState.of("web-1", SandboxState.Phase.STARTING, "TCG")
                .withVm(0, "clone abc", "/run/rund/sandboxes/.spare-1-2")
                .withNetwork("/var/run/netns/cni-1", "eth0")
                .withCgroup("free-3")
                .withVm(4242, "clone abc", "/run/rund/sandboxes/.spare-1-2")
                .with(SandboxState.Phase.RUNNING);
        s.write(dir);
        String json = Files.readString(dir.resolve(SandboxState.FILE));
        assertTrue(json.contains("\"phase\":\"running\""), json);
        assertEquals(s, SandboxState.read(dir));
        assertEquals("free-3", s.cgroupSlot());
        assertEquals("/var/run/netns/cni-1", s.netns(), "a later step keeps what an earlier one added");

        Files.writeString(dir.resolve(SandboxState.FILE), "{\"sandboxId\":\"old\",\"phase\":\"starting\",\"cgroupSlot\":\"\","
                + "\"vmPid\":7,\"accelerator\":\"TCG\",\"boot\":\"\",\"future\":1}");
        SandboxState old = SandboxState.read(dir);
        assertEquals(SandboxState.Phase.STARTING, old.phase(), "files an earlier daemon wrote still read");
        assertEquals(7, old.vmPid());
    }
}
