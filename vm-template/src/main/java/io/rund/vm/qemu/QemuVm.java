package io.rund.vm.qemu;

import io.rund.vm.HypervisorException;
import io.rund.vm.Vm;
import io.rund.vm.VmJail;
import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * One QEMU process and its QMP connection. Its exit is watched, not polled:
 * {@link ProcessHandle#onExit()}. A VM this daemon launched knows its exit status (a jailed
 * one through its jailer, which waits for it and exits as it did); one it adopted from a
 * previous daemon ({@link QemuHypervisor#adopt}) is not its child, and reports -1.
 */
final class QemuVm implements Vm {

    private static final System.Logger LOG = System.getLogger(QemuVm.class.getName());
    private static final Duration QMP_TIMEOUT = Duration.ofSeconds(5);

    private final String sandboxId;
    private final ProcessHandle process;
    private final QmpClient qmp;
    private final CompletableFuture<Integer> exited;

    /** The jail and uid it runs as, or null and -1. */
    private final VmJail jail;
    private final int uid;
    /** The jailer waiting for a QEMU this daemon launched; 0 for none (not jailed, or adopted). */
    private long waiter;

    /**
     * A QEMU this daemon started: {@code child} is QEMU itself, or its jailer, whose exit
     * is QEMU's unless someone killed the jailer alone (then QEMU is watched itself).
     */
    QemuVm(String sandboxId, Process child, ProcessHandle qemu, QmpClient qmp, VmJail jail, int uid) {
        this(sandboxId, qemu, child.onExit().thenCompose(c -> qemu.isAlive()
                ? qemu.onExit().thenApply(q -> -1) : CompletableFuture.completedFuture(c.exitValue())), qmp, jail, uid);
        if (child.pid() != qemu.pid()) {
            waiter = child.pid();
        }
    }

    /** A QEMU that is not this daemon's child: its status is not ours to read. */
    QemuVm(String sandboxId, ProcessHandle process, QmpClient qmp, VmJail jail, int uid) {
        this(sandboxId, process, process.onExit().thenApply(p -> -1), qmp, jail, uid);
    }

    private QemuVm(String sandboxId, ProcessHandle process, CompletableFuture<Integer> exited, QmpClient qmp, VmJail jail,
            int uid) {
        this.sandboxId = sandboxId;
        this.process = process;
        this.qmp = qmp;
        this.jail = jail;
        this.uid = uid;
        this.exited = exited;
        exited.thenAccept(code -> {
            qmp.close();
            LOG.log(Level.INFO, "vm sandbox={0}: exited with {1}", sandboxId, code);
        });
        qmp.onEvent(e -> LOG.log(Level.DEBUG, "vm sandbox={0}: event {1} {2}", sandboxId, e.name(), e.data()));
    }

    @Override
    public long pid() {
        return process.pid();
    }

    @Override
    public java.util.List<Long> processes() {
        return waiter == 0 ? java.util.List.of(process.pid()) : java.util.List.of(process.pid(), waiter);
    }

    @Override
    public CompletableFuture<Integer> exited() {
        return exited;
    }

    @Override
    public void pause() throws HypervisorException {
        qmp.execute(new QmpCommand.Stop(), QMP_TIMEOUT);
    }

    @Override
    public void saveTemplate(Path state) throws HypervisorException {
        qmp.execute(new QmpCommand.Stop(), QMP_TIMEOUT);
        qmp.execute(new QmpCommand.IgnoreShared(), QMP_TIMEOUT);
        if (jail != null) {
            // QEMU writes the state file itself, as the VM's uid, in a directory it cannot write.
            try {
                Files.deleteIfExists(state);
                Files.createFile(state);
                jail.giveTo(state, uid);
            } catch (IOException e) {
                throw new HypervisorException("vm sandbox=" + sandboxId + ": prepare " + state + ": " + e.getMessage(), e);
            }
        }
        qmp.execute(new QmpCommand.Migrate(QemuHypervisor.migrationFile(state)), QMP_TIMEOUT);
        QemuHypervisor.awaitMigration(qmp, sandboxId, Duration.ofSeconds(60));
    }

    @Override
    public void resume() throws HypervisorException {
        qmp.execute(new QmpCommand.Cont(), QMP_TIMEOUT);
    }

    /** QEMU's state as QMP reports it, e.g. "running", "paused". */
    String status() throws HypervisorException {
        return qmp.execute(new QmpCommand.QueryStatus(), QMP_TIMEOUT).path("status").asText();
    }

    @Override
    public void stop(Duration grace) {
        if (exited.isDone()) {
            return;
        }
        try {
            qmp.execute(new QmpCommand.Quit(), grace);
        } catch (HypervisorException e) {
            // QEMU may close QMP as it quits; the exit below is what counts.
            LOG.log(Level.DEBUG, "vm sandbox={0}: quit: {1}", sandboxId, e.getMessage());
        }
        try {
            exited.get(grace.toMillis(), TimeUnit.MILLISECONDS);
            return;
        } catch (Exception e) {
            LOG.log(Level.WARNING, "vm sandbox={0}: did not quit within {1}, killing it", sandboxId, grace);
        }
        close();
    }

    @Override
    public void close() {
        process.destroyForcibly();
        try {
            exited.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (java.util.concurrent.ExecutionException e) {
            // onExit does not fail
        }
        qmp.close();
    }
}
