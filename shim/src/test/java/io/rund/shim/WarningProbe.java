package io.rund.shim;

import io.rund.containerd.task.v2.StateRequest;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * A program that does the two things that make a JVM of ours warn on stderr: protobuf's
 * use of sun.misc.Unsafe and an FFM downcall (a restricted method). It prints one line on
 * stdout, so that anything on stderr is the JVM's own.
 */
public final class WarningProbe {

    private WarningProbe() {}

    public static void main(String[] args) throws Throwable {
        StateRequest parsed = StateRequest.parseFrom(StateRequest.newBuilder().setId("probe").build().toByteArray());
        Linker linker = Linker.nativeLinker();
        MethodHandle getpid = linker.downcallHandle(linker.defaultLookup().find("getpid").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.JAVA_INT));
        int pid = (int) getpid.invokeExact();
        System.out.println(parsed.getId() + " " + (pid == ProcessHandle.current().pid()));
    }
}
