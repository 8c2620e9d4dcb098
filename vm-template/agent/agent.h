/* rund-agent: PID 1 of every rund guest. See agent.proto for the API it serves. */
#ifndef RUND_AGENT_H
#define RUND_AGENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.pb-c.h"

#define AGENT_VERSION "rund-agent 0.1.0"
#define MAX_ID_LEN 64
#define MAX_STREAM_CHUNK (1u << 20)

/* A failed call: a ttrpc code and a message for the host. */
struct fault {
    int code;
    char message[512];
};

/* Sets f (when it is still clear) and returns -1, so callers can `return fail(...)`. */
int fail(struct fault *f, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The steps of one call, each timed on the guest's monotonic clock, for the host's trace
 * of a start (CreateContainerResponse.steps). Names are string literals. */
#define MAX_STEPS 16
struct steps {
    size_t n;
    const char *name[MAX_STEPS];
    uint64_t micros[MAX_STEPS];
    const char *current; /* the step under way, or NULL */
    uint64_t since;      /* when it began, in microseconds */
};

/* Ends the step under way, if any, and begins `name` (NULL: none). */
void steps_enter(struct steps *s, const char *name);

/* True when the host that made the calling thread's call has left (main.c): its answer
 * would be dropped, so a call that would consume something (output read from a process)
 * must stop before it does and leave it for the host's next connection. */
bool call_abandoned(void);

/* Wakes the calls waiting for a process's exit, so that those of a host that left end. */
void procs_host_left(void);

/* Validation of what the host sends. */
int check_id(struct fault *f, const char *what, const char *id, bool may_be_empty);
int check_path(struct fault *f, const char *what, const char *path);

enum proc_state { PROC_CREATED, PROC_RUNNING, PROC_EXITED };

struct container;

/* One process the agent runs: a container's init (exec_id "") or an exec. Guarded by
 * g_lock, except the fds, which only change under g_lock but are used outside it. */
struct proc {
    struct container *c;
    char exec_id[MAX_ID_LEN + 1];
    enum proc_state state;
    pid_t pid;
    bool terminal;
    int stdin_fd;   /* agent's end: pipe write end, or the pty master (dup) */
    int stdout_fd;  /* pipe read end, or the pty master */
    int stderr_fd;  /* pipe read end; -1 with a terminal */
    int start_fd;   /* init only: writing a byte lets the created process exec */
    int error_fd;   /* reads the child's setup/exec error; EOF means exec happened */
    uint8_t *spec;  /* packed Rund__Agent__V1__Process, for execs until started */
    size_t spec_len;
    int exit_status;
    int64_t exited_at_ns;
    /* Per output stream (stdout, stderr): what acked reads answered and no read has yet
     * acknowledged, ending at stream offset `off`. */
    struct {
        uint64_t off;
        uint8_t *pend;
        size_t len;
    } out[2];
    int users;      /* calls using the fds right now; delete waits for 0 */
    int stdin_users; /* of those, writers to stdin; closing stdin waits for 0 */
    struct proc *next;
};

struct seccomp_program;

struct container {
    char id[MAX_ID_LEN + 1];
    char cgroup[256];
    char upper_root[600];   /* its own directory on the pod's disk, deleted at removal; "" for the disk's root */
    int mnt_ns, uts_ns, ipc_ns;
    int pid_ns;             /* its init's PID namespace, which its execs join */
    int net_ns, cgroup_ns;  /* its own, when it has one; -1: the VM's */
    int device_prog;        /* its cgroup's BPF device program; -1: none (every device allowed) */
    struct seccomp_program *seccomp; /* applied to its init and every exec; NULL for none */
    struct proc *procs;     /* init first */
    uint64_t oom_kills;
    int oom_watch;
    struct container *next;
};

extern pthread_mutex_t g_lock;
extern pthread_cond_t g_changed;  /* broadcast when a process exits or a table changes */
extern struct container *g_containers;

/* process.c */
void procs_init(void);
/* Reads the serials of the disks present now (at boot: before a template is saved), so
 * that finding a disk by serial later asks no device (child.c). */
void disks_learn(void);
struct container *find_container(const char *id);
struct proc *find_proc(struct container *c, const char *exec_id);
/* Mounts the writable disk `serial` (ext4) at /run/rund/disks/<serial>, its path into
 * dir (cap bytes), unless it is mounted already (a template's guest mounted it). */
int disk_mount(struct fault *f, const char *serial, char *dir, size_t cap);
/* disk_mount, then the first container's upper and work directories, written through:
 * MountDisk, in a template's guest. */
int disk_prepare(struct fault *f, const char *serial);
int container_create(const Rund__Agent__V1__CreateContainerRequest *req, struct steps *steps, struct fault *f);
int proc_start(const char *cid, const char *eid, pid_t *pid, struct fault *f);
int proc_exec(const Rund__Agent__V1__ExecProcessRequest *req, struct fault *f);
int proc_signal(const char *cid, const char *eid, int sig, bool all, struct fault *f);
int proc_wait(const char *cid, const char *eid, int *status, int64_t *at, struct fault *f);
int proc_delete(const char *cid, const char *eid, struct fault *f);
int proc_write_stdin(const char *cid, const char *eid, const uint8_t *data, size_t len, size_t *written, struct fault *f);
int proc_close_stdin(const char *cid, const char *eid, struct fault *f);
/* Reads a process's output into buf (at most max). acked: from stream offset `offset`
 * (ReadStreamRequest), the answer's offset in *at. */
int proc_read(const char *cid, const char *eid, bool err_stream, bool acked, uint64_t offset, size_t max, uint8_t *buf,
              size_t *n, bool *eof, uint64_t *at, struct fault *f);
int proc_resize(const char *cid, const char *eid, unsigned rows, unsigned cols, struct fault *f);
int container_pids(const char *cid, uint32_t **pids, size_t *n, struct fault *f);
int container_stats(const char *cid, Rund__Agent__V1__StatsResponse *out, struct fault *f);
int container_freeze(const char *cid, bool freeze, struct fault *f);
int container_update(const Rund__Agent__V1__UpdateResourcesRequest *req, struct fault *f);
int container_wait_oom(char *cid_out, size_t cap, struct fault *f);
int container_remove(const char *cid, struct fault *f);
void agent_counts(uint32_t *containers, uint32_t *procs);

/* net.c */
void net_loopback_up(void);
/* Sets `set` in interface `name`'s flags (SIOCGIFFLAGS, then SIOCSIFFLAGS); system calls only. */
int net_if_flags(int sock, const char *name, short set, struct fault *f);
int net_configure(const Rund__Agent__V1__ConfigureNetworkRequest *req, struct fault *f);

/* Logs a line to the kernel log (and so the serial console), prefixed with the agent's name. */
void alog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int64_t realtime_ns(void);

#endif
