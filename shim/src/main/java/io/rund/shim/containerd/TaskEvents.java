package io.rund.shim.containerd;

import io.rund.containerd.events.TaskCreate;
import io.rund.containerd.events.TaskDelete;
import io.rund.containerd.events.TaskExecAdded;
import io.rund.containerd.events.TaskExecStarted;
import io.rund.containerd.events.TaskExit;
import io.rund.containerd.events.TaskIO;
import io.rund.containerd.events.TaskOOM;
import io.rund.containerd.events.TaskPaused;
import io.rund.containerd.events.TaskResumed;
import io.rund.containerd.events.TaskStart;
import io.rund.containerd.task.v2.CreateTaskRequest;
import io.rund.shim.Timestamps;

/**
 * The task events containerd expects from a shim, by topic, built in one place: what each
 * carries (ids, pid, exit status and time) is decided here, when is the task adapter's.
 */
final class TaskEvents {

    private final EventPublisher publisher;

    TaskEvents(EventPublisher publisher) {
        this.publisher = publisher;
    }

    void created(CreateTaskRequest r, int pid) {
        publisher.publish("/tasks/create", TaskCreate.newBuilder().setContainerId(r.getId()).setBundle(r.getBundle())
                .addAllRootfs(r.getRootfsList())
                .setIo(TaskIO.newBuilder().setStdin(r.getStdin()).setStdout(r.getStdout()).setStderr(r.getStderr())
                        .setTerminal(r.getTerminal()))
                .setPid(pid).build());
    }

    /** A task's init process (execId "") or an exec started. */
    void started(String containerId, String execId, int pid) {
        if (execId.isEmpty()) {
            publisher.publish("/tasks/start", TaskStart.newBuilder().setContainerId(containerId).setPid(pid).build());
        } else {
            publisher.publish("/tasks/exec-started", TaskExecStarted.newBuilder().setContainerId(containerId)
                    .setExecId(execId).setPid(pid).build());
        }
    }

    void execAdded(String containerId, String execId) {
        publisher.publish("/tasks/exec-added", TaskExecAdded.newBuilder().setContainerId(containerId).setExecId(execId).build());
    }

    /** A process exited; {@code sent} runs once containerd has the event (or it was given up on). */
    void exited(String containerId, String execId, int pid, TaskService.Exit exit, Runnable sent) {
        publisher.publish("/tasks/exit", TaskExit.newBuilder().setContainerId(containerId)
                .setId(execId.isEmpty() ? containerId : execId).setPid(pid).setExitStatus(exit.status())
                .setExitedAt(Timestamps.of(exit.at())).build(), sent);
    }

    void deleted(String containerId, String execId, int pid, TaskService.Exit exit) {
        publisher.publish("/tasks/delete", TaskDelete.newBuilder().setContainerId(containerId).setPid(pid)
                .setExitStatus(exit.status()).setExitedAt(Timestamps.of(exit.at()))
                .setId(execId.isEmpty() ? containerId : execId).build());
    }

    /** A process of the container was killed for memory (the guest's cgroup OOM killer). */
    void oom(String containerId) {
        publisher.publish("/tasks/oom", TaskOOM.newBuilder().setContainerId(containerId).build());
    }

    void paused(String containerId, boolean paused) {
        if (paused) {
            publisher.publish("/tasks/paused", TaskPaused.newBuilder().setContainerId(containerId).build());
        } else {
            publisher.publish("/tasks/resumed", TaskResumed.newBuilder().setContainerId(containerId).build());
        }
    }
}
