/* What process.c and child.c share: the plan a child follows (made before fork), the
 * rootfs it assembles, and the report it sends when it fails before exec. Private to the
 * agent's process code. */
#ifndef RUND_SPAWN_H
#define RUND_SPAWN_H

#include <stdbool.h>
#include <stdint.h>
#include <ftw.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "agent.h"

#define MAX_ARGS 4096
#define MAX_ENV 4096
#define MAX_GROUPS 64
#define MAX_MOUNTS 128
#define MAX_FILE_MOUNT (1 << 20)

/* The highest capability this kernel knows (from /proc/sys/kernel/cap_last_cap). */
extern int g_cap_last;

struct rlim {
    int resource;
    struct rlimit value;
};

struct plan {
    char **argv;
    char **envp;
    char cwd[1025];
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    size_t ngroups;
    struct rlim rlimits[RLIM_NLIMITS];
    size_t nrlimits;
    bool no_new_privs;
    uint64_t bounding, effective, permitted, inheritable, ambient;
    bool terminal;
};

struct report {
    int stage; /* 1: set up and waiting for start; 2: failed */
    int err;
    char what[240];
};

struct mount_spec {
    char target[1200];
    char source[1100];
    char type[32];
    unsigned long flags;
    bool bind, readonly_bind;
    char data[512];
};

struct rootfs_plan {
    char dir[256];          /* /run/rund/c/<id> */
    char share[128], disk[128]; /* the pod's mounts: /run/rund/shares/<tag>, /run/rund/disks/<serial> */
    char lower[600], rootfs[300];
    char lower_tag[64];
    char disk_dev[300];
    char overlay_data[1900];
    char upper_root[600], upper[620], work[620];
    char hostname[65];
    /* The pod's UTS and IPC namespaces to join (the agent's fds, valid while it holds
     * g_lock, under which the child is forked), or -1 for new ones. */
    int join_uts, join_ipc;
    struct mount_spec mounts[MAX_MOUNTS];
    size_t nmounts;
    char masked[64][1200];
    size_t nmasked;
    char readonly[64][1200];
    size_t nreadonly;
};

void plan_free(struct plan *p);
int plan_make(struct fault *f, const Rund__Agent__V1__Process *p, struct plan *out);
void child_fail(int fd, const char *what, int err);
void child_stdio(int report, const struct plan *p, int in, int out, int err, const char *pty_slave);
void child_terminal(int report, int sock);
int receive_terminal(int sock);
void child_exec(int report, const struct plan *p, int cgroup_procs);
void child_reset_signals(void);
int parse_mount(struct fault *f, const char *root, const Rund__Agent__V1__Mount *m, struct mount_spec *out);
int find_disk(struct fault *f, const char *serial, char *dev, size_t cap);
void mkdirs(char *path);
int place_file(struct fault *f, struct rootfs_plan *r, size_t index, const Rund__Agent__V1__Mount *in,
                      struct mount_spec *m);
int ensure_mounted(struct fault *f, const char *src, char *target, const char *type, unsigned long flags,
                          const char *what);
void remove_container_dir(const char *id);
void child_rootfs(int report, struct rootfs_plan *r);
/* cgroups.c: a cgroup file of `dir` into buf (NUL-terminated), a value into one, and one number
 * of a file ("max" is 0; or the value of `key` in a "key value" file). */
int read_file(const char *dir, const char *name, char *buf, size_t cap);
int write_file(const char *dir, const char *name, const char *value);
uint64_t number(const char *dir, const char *name, const char *key);

/* nftw callback: removes one entry of a container's upper directory. */
int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw);

#endif
