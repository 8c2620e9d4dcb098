package io.rund.vm.qemu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A VM's log never passes its cap, and always ends with the newest output. */
@Tag("unit")
class CappedLogTest {

    @Test
    void aFloodKeepsTheNewestHalfAfterALineSayingWhatWasDropped(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("console.log");
        CappedLog log = CappedLog.open(file, 4096);
        long written = 0;
        for (int i = 0; i < 10_000; i++) {
            byte[] line = ("line " + i + "\n").getBytes(StandardCharsets.US_ASCII);
            log.write(ByteBuffer.wrap(line));
            written += line.length;
            assertTrue(Files.size(file) <= 4096 + 100, "size " + Files.size(file) + " after line " + i);
        }
        log.close();
        String s = Files.readString(file);
        assertTrue(s.endsWith("line 9999\n"), s.substring(s.length() - 20));
        assertTrue(s.startsWith("[rund: "), s.substring(0, 60));
        long dropped = Long.parseLong(s.substring(7, s.indexOf(' ', 7)));
        int firstKept = s.indexOf('\n') + 1;
        assertEquals(written, dropped + (s.length() - firstKept), "what was dropped and what is kept add up");
    }

    @Test
    void oneWriteLargerThanTheCapKeepsItsTail(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("qemu.log");
        byte[] big = new byte[100_000];
        java.util.Arrays.fill(big, (byte) 'x');
        big[big.length - 1] = 'Z';
        Thread pump = CappedLog.pump(new ByteArrayInputStream(big), file, 4096, "test-pump");
        pump.join(10_000);
        String s = Files.readString(file);
        assertTrue(s.length() <= 4096 + 100, "length " + s.length());
        assertTrue(s.endsWith("xZ"));
    }
}
