/* What process.c and child.c share: the plan a child follows (made before fork), the
 * rootfs it assembles, and the report it sends when it fails before exec. Private to the
 * agent's process code. */
#ifndef RUND_SPAWN_H
#define RUND_SPAWN_H

#include <stdbool.h>
#include <stdint.h>
#include <ftw.h>
#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "agent.h"

#define MAX_ARGS 4096
#define MAX_ENV 4096
#define MAX_GROUPS 64
#define MAX_MOUNTS 128
#define MAX_PATHS 128
#define MAX_SYSCTLS 64
#define MAX_FILE_MOUNT (1 << 20)
/* A pod's shared /dev/shm in the guest (the host translates CRI's to it). */
#define POD_SHM "/run/rund/pod-shm"
/* The pod's memory volumes (emptyDir medium: Memory): a tmpfs each, /run/rund/pod-memory/<name>. */
#define POD_MEMORY "/run/rund/pod-memory/"
/* The sandbox's share of host directories (virtio-fs tag "hostdirs", the
 * host's VmConfig.HOST_DIRS_TAG), mounted when a container first binds from it. */
#define HOST_DIRS_TAG "hostdirs"
#define HOST_DIRS_SHARE "/run/rund/shares/" HOST_DIRS_TAG

/* The highest capability this kernel knows (from /proc/sys/kernel/cap_last_cap). */
extern int g_cap_last;

struct rlim {
    int resource;
    struct rlimit value;
};

/* A compiled seccomp filter (seccomp.c), installed by a child just before or after it
 * gives up its privileges (as runc: before, unless no_new_privs lets it do so after). */
struct seccomp_program {
    struct sock_filter *filter;
    unsigned short len;
    unsigned int flags; /* SECCOMP_FILTER_FLAG_* */
};

struct plan {
    char **argv;
    char **envp;        /* with a free slot at the end for HOME, when the spec's env has none */
    size_t nenv;
    bool need_home;     /* HOME comes from the container's /etc/passwd (runc's default) */
    char home[1100];    /* "HOME=...", filled in the child */
    int umask;          /* 022 unless the spec says */
    bool has_oom_score_adj;
    int oom_score_adj;
    const struct seccomp_program *seccomp; /* the container's; NULL for none */
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
    unsigned long propagation; /* MS_PRIVATE, MS_SLAVE, MS_SHARED or MS_UNBINDABLE (| MS_REC), applied after */
    bool bind, readonly_bind;
    char data[512];
};

struct rootfs_plan {
    char dir[256];          /* /run/rund/c/<id> */
    char share[128], disk[128]; /* the pod's mounts: /run/rund/shares/<tag>, /run/rund/disks/<serial> */
    char lower[600], rootfs[300];
    char lower_tag[64];
    char overlay_data[1900];
    char upper_root[600], upper[620], work[620];
    char hostname[65];
    /* The pod's UTS and IPC namespaces to join (the agent's fds, valid while it holds
     * g_lock, under which the child is forked), or -1 for new ones. */
    int join_uts, join_ipc;
    bool new_net;       /* a network namespace of its own, with lo up */
    bool new_cgroupns;  /* a cgroup namespace rooted at its cgroup (joined first) */
    int cgroup_procs;   /* the container's cgroup.procs, joined before anything else */
    bool readonly_root;
    unsigned long propagation; /* MS_PRIVATE, MS_SLAVE or MS_SHARED (| MS_REC) for "/", 0: rprivate */
    struct mount_spec mounts[MAX_MOUNTS];
    size_t nmounts;
    char masked[MAX_PATHS][1200];
    size_t nmasked;
    char readonly[MAX_PATHS][1200];
    size_t nreadonly;
    char sysctl_path[MAX_SYSCTLS][300]; /* <rootfs>/proc/sys/... */
    char sysctl_value[MAX_SYSCTLS][256];
    size_t nsysctls;
};

void plan_free(struct plan *p);
int plan_make(struct fault *f, const Rund__Agent__V1__Process *p, const struct seccomp_program *seccomp,
              struct plan *out);
void child_fail(int fd, const char *what, int err);
void child_stdio(int report, const struct plan *p, int in, int out, int err, const char *pty_slave);
void child_terminal(int report, int sock);
int receive_terminal(int sock);
void child_exec(int report, struct plan *p, int cgroup_procs);
void child_close_others(int report, const int *keep, size_t n);
void child_reset_signals(void);
int parse_mount(struct fault *f, const char *root, const Rund__Agent__V1__Mount *m, struct mount_spec *out);
/* "rprivate" and friends as mount(2) flags; -1 for a name that is none of them. */
int propagation_of(const char *name, unsigned long *out);
int find_disk(struct fault *f, const char *serial, char *dev, size_t cap);
void mkdirs(char *path);
int place_file(struct fault *f, struct rootfs_plan *r, size_t index, const Rund__Agent__V1__Mount *in,
                      struct mount_spec *m);
int ensure_mounted(struct fault *f, const char *src, char *target, const char *type, unsigned long flags,
                   const char *data, const char *what);
void remove_container_dir(const char *id);
void child_rootfs(int report, struct rootfs_plan *r);
/* cgroups.c: a cgroup file of `dir` into buf (NUL-terminated), a value into one, and one number
 * of a file ("max" is 0; or the value of `key` in a "key value" file). */
int read_file(const char *dir, const char *name, char *buf, size_t cap);
int write_file(const char *dir, const char *name, const char *value);
uint64_t number(const char *dir, const char *name, const char *key);

/* seccomp.c */
int seccomp_compile(struct fault *f, const Rund__Agent__V1__Seccomp *s, struct seccomp_program *out);
void seccomp_program_free(struct seccomp_program *p);
/* cgroups.c: applies a container's limits to its cgroup `dir` (absent values left as they
 * are); its device program's fd is *device_prog (-1: none yet), replaced when rules come;
 * device_prog NULL leaves the device rules alone. */
int cgroup_apply(struct fault *f, const char *dir, const Rund__Agent__V1__Resources *r, int *device_prog);
/* devices.c: devices_preload loads the program of containerd's usual rules once, at start. */
void devices_preload(void);
int devices_apply(struct fault *f, const char *cg, Rund__Agent__V1__DeviceRule **rules, size_t n, int *prog_fd);

/* nftw callback: removes one entry of a container's upper directory. */
int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw);

#endif
