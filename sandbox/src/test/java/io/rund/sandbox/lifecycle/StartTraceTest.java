package io.rund.sandbox.lifecycle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.rund.sandbox.guest.GuestStep;
import java.util.List;
import org.junit.jupiter.api.Test;

class StartTraceTest {

    @Test
    void eachStepLastsUntilTheNextAndTheStepsCoverTheStart() throws Exception {
        StartTrace.Recorder r = new StartTrace.Recorder("s1");
        r.enter("first");
        Thread.sleep(20);
        r.enter("second");
        r.enter("third");
        Thread.sleep(5);
        StartTrace t = r.finish("clone abc (spare)", null);

        assertEquals(List.of("first", "second", "third"), t.steps().stream().map(StartTrace.Step::name).toList());
        assertTrue(t.steps().get(0).micros() >= 20_000, t.toString());
        assertTrue(t.steps().get(2).micros() >= 5_000, t.toString());
        long sum = t.steps().stream().mapToLong(StartTrace.Step::micros).sum();
        assertTrue(sum <= t.totalMicros() && t.totalMicros() - sum < 5_000, sum + " of " + t.totalMicros());
        assertEquals("", t.error());
        assertEquals("clone abc (spare)", t.boot());
        assertTrue(t.summary().matches("first [0-9]+ ms, second [0-9]+ ms, third [0-9]+ ms"), t.summary());
    }

    @Test
    void theGuestsStepsBelongToTheStepTheyWereReportedIn() {
        StartTrace.Recorder r = new StartTrace.Recorder("s3");
        r.enter("wait for the agent");
        r.enter("create the container");
        r.guest(List.of(new GuestStep("mount the writable layer", 41_000), new GuestStep("keep its namespaces", 900)));
        r.enter("record it running");
        StartTrace t = r.finish("cold", null);

        assertEquals(List.of(), t.steps().get(0).guest());
        assertEquals(List.of(new StartTrace.Step("mount the writable layer", 41_000), new StartTrace.Step("keep its namespaces", 900)),
                t.steps().get(1).guest());
        assertEquals(List.of(), t.steps().get(2).guest(), "a later step does not inherit them");
        assertTrue(t.summary().matches("wait for the agent [0-9]+ ms, create the container [0-9]+ ms"
                + " \\(guest: mount the writable layer 41 ms, keep its namespaces 0 ms\\), record it running [0-9]+ ms"),
                t.summary());
    }

    @Test
    void aFailedStartKeepsItsError() {
        StartTrace.Recorder r = new StartTrace.Recorder("s2");
        r.enter("launch the VM");
        StartTrace t = r.finish("", "start sandbox=s2: launch the VM: no QEMU");
        assertEquals("start sandbox=s2: launch the VM: no QEMU", t.error());
        assertEquals(List.of("launch the VM"), t.steps().stream().map(StartTrace.Step::name).toList());
    }

    @Test
    void theLatestStartsAreKeptOncePerIdNewestLast() {
        StartTrace.Kept kept = new StartTrace.Kept();
        for (int i = 0; i < StartTrace.Kept.KEPT + 10; i++) {
            kept.add(new StartTrace.Recorder("s" + i).finish("", null));
        }
        List<StartTrace> all = kept.all();
        assertEquals(StartTrace.Kept.KEPT, all.size());
        assertEquals("s10", all.get(0).id(), "the oldest are dropped first");
        assertTrue(kept.of("s9").isEmpty());

        // A second start of an id replaces its first and becomes the newest.
        kept.add(new StartTrace.Recorder("s10").finish("cold", "failed"));
        assertEquals(StartTrace.Kept.KEPT, kept.all().size());
        assertEquals("s11", kept.all().get(0).id());
        assertEquals("s10", kept.all().get(StartTrace.Kept.KEPT - 1).id());
        assertEquals("failed", kept.of("s10").orElseThrow().error());
    }
}
