/* The child side of a container's processes: the plan made from the agent's request before
 * fork (argv, env, user, groups, rlimits, capabilities), what the child does between fork and
 * exec (only system calls, on data prepared before), and the container's rootfs: its mounts,
 * the pod's shared mounts, file mounts, /dev, sysctls. process.c forks and tracks; this file
 * prepares. Just over the project's ~700 lines (740), on purpose: everything a child does
 * between fork and exec is here, where the rule that it does only system calls on data
 * prepared before the fork can be checked in one read. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef BLKFLSBUF
#define BLKFLSBUF _IO(0x12, 97)
#endif

#include "agent.h"
#include "ttrpc.h"
#include "spawn.h"

/* ---- what a child needs, prepared before fork --------------------------------------- */



void plan_free(struct plan *p)
{
    if (p->argv) {
        for (char **a = p->argv; *a; a++)
            free(*a);
        free(p->argv);
    }
    if (p->envp) {
        for (char **e = p->envp; *e; e++)
            free(*e);
        free(p->envp);
    }
    memset(p, 0, sizeof(*p));
}

static const char *CAPS[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
};

static int cap_mask(struct fault *f, const char *set, char **names, size_t n, uint64_t *mask)
{
    *mask = 0;
    for (size_t i = 0; i < n; i++) {
        size_t c = 0;
        while (c < sizeof(CAPS) / sizeof(CAPS[0]) && strcmp(CAPS[c], names[i]) != 0)
            c++;
        if (c == sizeof(CAPS) / sizeof(CAPS[0]))
            return fail(f, CODE_INVALID_ARGUMENT, "%s capability %.64s is unknown", set, names[i]);
        if ((int)c <= g_cap_last)
            *mask |= 1ull << c;
    }
    return 0;
}

static const struct {
    const char *name;
    int resource;
} RLIMITS[] = {
    {"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_FSIZE", RLIMIT_FSIZE},   {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_STACK", RLIMIT_STACK},     {"RLIMIT_CORE", RLIMIT_CORE},     {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_NOFILE", RLIMIT_NOFILE}, {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_AS", RLIMIT_AS},           {"RLIMIT_LOCKS", RLIMIT_LOCKS},   {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},   {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
};

static char **copy_strings(char **src, size_t n)
{
    char **out = calloc(n + 1, sizeof(char *));
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = strdup(src[i]))) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    return out;
}

/* Checks an OCI process description and turns it into a plan; `seccomp` (the container's,
 * or NULL) goes on last. */
int plan_make(struct fault *f, const Rund__Agent__V1__Process *p, const struct seccomp_program *seccomp,
              struct plan *out)
{
    memset(out, 0, sizeof(*out));
    if (!p)
        return fail(f, CODE_INVALID_ARGUMENT, "process is missing");
    if (p->n_args == 0 || p->args[0][0] == 0)
        return fail(f, CODE_INVALID_ARGUMENT, "process.args is empty");
    if (p->n_args > MAX_ARGS)
        return fail(f, CODE_INVALID_ARGUMENT, "process.args has %zu entries, more than %d", p->n_args, MAX_ARGS);
    if (p->n_env > MAX_ENV)
        return fail(f, CODE_INVALID_ARGUMENT, "process.env has %zu entries, more than %d", p->n_env, MAX_ENV);
    for (size_t i = 0; i < p->n_env; i++)
        if (!strchr(p->env[i], '=') || p->env[i][0] == '=')
            return fail(f, CODE_INVALID_ARGUMENT, "process.env entry %.64s is not NAME=value", p->env[i]);
    const char *cwd = p->cwd[0] ? p->cwd : "/";
    if (check_path(f, "process.cwd", cwd))
        return -1;
    if (p->n_additional_gids > MAX_GROUPS)
        return fail(f, CODE_INVALID_ARGUMENT, "process.additional_gids has %zu entries, more than %d",
                    p->n_additional_gids, MAX_GROUPS);
    for (size_t i = 0; i < p->n_rlimits; i++) {
        size_t r = 0;
        while (r < sizeof(RLIMITS) / sizeof(RLIMITS[0]) && strcmp(RLIMITS[r].name, p->rlimits[i]->type) != 0)
            r++;
        if (r == sizeof(RLIMITS) / sizeof(RLIMITS[0]))
            return fail(f, CODE_INVALID_ARGUMENT, "rlimit %.64s is unknown", p->rlimits[i]->type);
        if (p->rlimits[i]->soft > p->rlimits[i]->hard)
            return fail(f, CODE_INVALID_ARGUMENT, "rlimit %s: soft %llu is above hard %llu", p->rlimits[i]->type,
                        (unsigned long long)p->rlimits[i]->soft, (unsigned long long)p->rlimits[i]->hard);
        if (out->nrlimits < RLIM_NLIMITS)
            out->rlimits[out->nrlimits++] =
                (struct rlim){RLIMITS[r].resource, {p->rlimits[i]->soft, p->rlimits[i]->hard}};
    }
    if (cap_mask(f, "bounding", p->bounding, p->n_bounding, &out->bounding) ||
        cap_mask(f, "effective", p->effective, p->n_effective, &out->effective) ||
        cap_mask(f, "permitted", p->permitted, p->n_permitted, &out->permitted) ||
        cap_mask(f, "inheritable", p->inheritable, p->n_inheritable, &out->inheritable) ||
        cap_mask(f, "ambient", p->ambient, p->n_ambient, &out->ambient))
        return -1;
    if (p->umask && p->umask->value > 0777)
        return fail(f, CODE_INVALID_ARGUMENT, "process.user.umask %o is not a mode", p->umask->value);
    if (p->oom_score_adj && (p->oom_score_adj->value < -1000 || p->oom_score_adj->value > 1000))
        return fail(f, CODE_INVALID_ARGUMENT, "process.oomScoreAdj %d is outside -1000..1000", p->oom_score_adj->value);
    out->argv = copy_strings(p->args, p->n_args);
    /* One slot more than the spec's env: HOME, which runc adds when the spec has none. */
    out->envp = copy_strings(p->env, p->n_env);
    char **grown = out->envp ? realloc(out->envp, (p->n_env + 2) * sizeof(char *)) : NULL;
    if (grown) {
        out->envp = grown;
        grown[p->n_env] = grown[p->n_env + 1] = NULL;
    }
    if (!out->argv || !out->envp || !grown) {
        plan_free(out);
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    snprintf(out->cwd, sizeof(out->cwd), "%s", cwd);
    out->uid = p->uid;
    out->gid = p->gid;
    for (size_t i = 0; i < p->n_additional_gids; i++)
        out->groups[i] = p->additional_gids[i];
    out->ngroups = p->n_additional_gids;
    out->no_new_privs = p->no_new_privileges;
    out->terminal = p->terminal;
    out->nenv = p->n_env;
    out->need_home = true;
    for (size_t i = 0; i < p->n_env; i++)
        if (strncmp(p->env[i], "HOME=", 5) == 0)
            out->need_home = false;
    out->umask = p->umask ? (int)p->umask->value : 022;
    out->has_oom_score_adj = p->oom_score_adj != NULL;
    out->oom_score_adj = p->oom_score_adj ? p->oom_score_adj->value : 0;
    out->seccomp = seccomp;
    return 0;
}

/* ---- in the child: only system calls from here --------------------------------------- */

/* What a child tells its parent over the report pipe. */

void child_fail(int fd, const char *what, int err)
{
    struct report r = {.stage = 2, .err = err};
    snprintf(r.what, sizeof(r.what), "%s", what);
    (void)!write(fd, &r, sizeof(r));
    _exit(127);
}

void child_stdio(int report, const struct plan *p, int in, int out, int err, const char *pty_slave)
{
    if (setsid() < 0)
        child_fail(report, "setsid", errno);
    if (p->terminal) {
        int t = open(pty_slave, O_RDWR);
        if (t < 0)
            child_fail(report, "open the terminal", errno);
        if (ioctl(t, TIOCSCTTY, 0) < 0)
            child_fail(report, "make the terminal controlling", errno);
        in = out = err = t;
    }
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        child_fail(report, "set up stdio", errno);
}

/* In a new container: opens a pty from the container's /dev/pts, sends the master to the
 * agent over `sock` (SCM_RIGHTS) and makes the slave this process's controlling terminal
 * and stdio. */
void child_terminal(int report, int sock)
{
    int m = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        child_fail(report, "open the container's /dev/pts/ptmx", errno);
    int unlock = 0;
    unsigned int n = 0;
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCGPTN, &n) < 0)
        child_fail(report, "unlock the pseudo-terminal", errno);
    char byte = 't';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &m, sizeof(int));
    if (sendmsg(sock, &msg, 0) != 1)
        child_fail(report, "hand the terminal to the agent", errno);
    close(m);
    if (setsid() < 0)
        child_fail(report, "setsid", errno);
    char slave[32];
    snprintf(slave, sizeof(slave), "/dev/pts/%u", n);
    int t = open(slave, O_RDWR);
    if (t < 0)
        child_fail(report, "open the terminal", errno);
    if (ioctl(t, TIOCSCTTY, 0) < 0)
        child_fail(report, "make the terminal controlling", errno);
    if (dup2(t, 0) < 0 || dup2(t, 1) < 0 || dup2(t, 2) < 0)
        child_fail(report, "set up stdio", errno);
}

/* Receives the pty master a child sent with child_terminal; -1 on failure. */
int receive_terminal(int sock)
{
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

/* HOME as runc sets it when the spec's env has none: the home of the process's uid in the
 * container's /etc/passwd (read in its root, by system calls only), else "/". */
static void child_home(struct plan *p)
{
    static char passwd[65536];
    const char *home = "/";
    size_t home_len = 1;
    int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK); /* a FIFO there must not hang us */
    ssize_t n = fd >= 0 ? read(fd, passwd, sizeof(passwd) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n > 0) {
        passwd[n] = 0;
        /* name:password:uid:gid:gecos:home:shell */
        for (char *line = passwd; line && *line; ) {
            char *next = strchr(line, '\n');
            if (next)
                *next++ = 0;
            char *field[7] = {0};
            int k = 0;
            field[k++] = line;
            for (char *c = line; *c && k < 7; c++)
                if (*c == ':') {
                    *c = 0;
                    field[k++] = c + 1;
                }
            if (k >= 6) {
                char *end = NULL;
                unsigned long uid = strtoul(field[2], &end, 10);
                if (end != field[2] && *end == 0 && uid == p->uid && field[5][0]) {
                    home = field[5];
                    home_len = strlen(home);
                    break;
                }
            }
            line = next;
        }
    }
    if (home_len > sizeof(p->home) - 6)
        home_len = sizeof(p->home) - 6;
    memcpy(p->home, "HOME=", 5);
    memcpy(p->home + 5, home, home_len);
    p->home[5 + home_len] = 0;
    p->envp[p->nenv] = p->home;
}

static void child_seccomp(int report, const struct plan *p)
{
    if (!p->seccomp)
        return;
    struct sock_fprog prog = {.len = p->seccomp->len, .filter = p->seccomp->filter};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, p->seccomp->flags, &prog) < 0)
        child_fail(report, "install the seccomp filter", errno);
}

/* The process's own settings, in runc's order, then exec: rlimits, oom_score_adj, HOME, the
 * seccomp filter when it cannot wait for no_new_privs, user and groups, capabilities,
 * umask, no_new_privs, cwd, the seccomp filter otherwise. cgroup_procs >= 0: join that
 * cgroup first (an exec; a container's init joined it before its rootfs). */
void child_exec(int report, struct plan *p, int cgroup_procs)
{
    if (cgroup_procs >= 0 && write(cgroup_procs, "0", 1) < 0)
        child_fail(report, "join the container's cgroup", errno);
    for (size_t i = 0; i < p->nrlimits; i++)
        if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].value) < 0)
            child_fail(report, "setrlimit", errno);
    if (p->oom_score_adj) {
        char v[16];
        int len = snprintf(v, sizeof(v), "%d", p->oom_score_adj);
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, v, (size_t)len) != len)
            child_fail(report, "write oom_score_adj", errno);
        close(fd);
    }
    if (p->need_home)
        child_home(p);
    if (!p->no_new_privs)
        child_seccomp(report, p);
    for (int c = 0; c <= g_cap_last; c++)
        if (!(p->bounding & (1ull << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
            child_fail(report, "drop a capability from the bounding set", errno);
    if (setgroups(p->ngroups, p->groups) < 0)
        child_fail(report, "setgroups", errno);
    if (setresgid(p->gid, p->gid, p->gid) < 0)
        child_fail(report, "setresgid", errno);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        child_fail(report, "keep capabilities across setuid", errno);
    if (setresuid(p->uid, p->uid, p->uid) < 0)
        child_fail(report, "setresuid", errno);
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2] = {
        {(uint32_t)p->effective, (uint32_t)p->permitted, (uint32_t)p->inheritable},
        {(uint32_t)(p->effective >> 32), (uint32_t)(p->permitted >> 32), (uint32_t)(p->inheritable >> 32)},
    };
    if (syscall(SYS_capset, &h, d) < 0)
        child_fail(report, "capset", errno);
    for (int c = 0; c <= g_cap_last; c++)
        if ((p->ambient & (1ull << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
            child_fail(report, "raise an ambient capability", errno);
    umask((mode_t)p->umask);
    if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(report, "set no_new_privs", errno);
    if (chdir(p->cwd) < 0)
        child_fail(report, "chdir to the process's cwd", errno);
    if (p->no_new_privs)
        child_seccomp(report, p);
    environ = p->envp;
    execvp(p->argv[0], p->argv);
    child_fail(report, "exec", errno);
}

/* Closes every descriptor from 3 up but the `n` in `keep` (-1 ignored): what a child holds
 * of the agent's (its port to the host, other containers' pipes and namespaces) goes before
 * the child is anything of a container's. */
void child_close_others(int report, const int *keep, size_t n)
{
    int k[16];
    size_t m = 0;
    for (size_t i = 0; i < n && m < sizeof(k) / sizeof(k[0]); i++) {
        if (keep[i] < 3)
            continue;
        size_t j = m++;
        for (; j > 0 && k[j - 1] > keep[i]; j--)
            k[j] = k[j - 1];
        k[j] = keep[i];
    }
    unsigned int from = 3;
    for (size_t i = 0; i < m; i++) {
        if ((unsigned int)k[i] > from && syscall(SYS_close_range, from, (unsigned int)k[i] - 1, 0) < 0)
            child_fail(report, "close the agent's descriptors", errno);
        if ((unsigned int)k[i] >= from)
            from = (unsigned int)k[i] + 1;
    }
    if (syscall(SYS_close_range, from, ~0U, 0) < 0)
        child_fail(report, "close the agent's descriptors", errno);
}

void child_reset_signals(void)
{
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
}

/* ---- the rootfs ------------------------------------------------------------------------ */



static const struct {
    const char *name;
    unsigned long set, clear;
} MOUNT_FLAGS[] = {
    {"ro", MS_RDONLY, 0},       {"rw", 0, MS_RDONLY},         {"nosuid", MS_NOSUID, 0},   {"suid", 0, MS_NOSUID},
    {"nodev", MS_NODEV, 0},     {"dev", 0, MS_NODEV},         {"noexec", MS_NOEXEC, 0},   {"exec", 0, MS_NOEXEC},
    {"relatime", MS_RELATIME, 0}, {"norelatime", 0, MS_RELATIME}, {"noatime", MS_NOATIME, 0},
    {"atime", 0, MS_NOATIME},   {"strictatime", MS_STRICTATIME, 0}, {"nostrictatime", 0, MS_STRICTATIME},
    {"nodiratime", MS_NODIRATIME, 0}, {"diratime", 0, MS_NODIRATIME}, {"lazytime", MS_LAZYTIME, 0},
    {"nolazytime", 0, MS_LAZYTIME}, {"sync", MS_SYNCHRONOUS, 0}, {"async", 0, MS_SYNCHRONOUS},
    {"dirsync", MS_DIRSYNC, 0}, {"mand", MS_MANDLOCK, 0},     {"nomand", 0, MS_MANDLOCK},
    {"nosymfollow", 256 /* MS_NOSYMFOLLOW */, 0}, {"symfollow", 0, 256},
    {"bind", MS_BIND, 0},       {"rbind", MS_BIND | MS_REC, 0}, {"defaults", 0, 0},
};

static const struct {
    const char *name;
    unsigned long flags;
} PROPAGATION[] = {
    {"private", MS_PRIVATE},   {"rprivate", MS_PRIVATE | MS_REC},   {"slave", MS_SLAVE},
    {"rslave", MS_SLAVE | MS_REC}, {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

int propagation_of(const char *name, unsigned long *out)
{
    for (size_t k = 0; k < sizeof(PROPAGATION) / sizeof(PROPAGATION[0]); k++)
        if (strcmp(PROPAGATION[k].name, name) == 0) {
            *out = PROPAGATION[k].flags;
            return 0;
        }
    return -1;
}

int parse_mount(struct fault *f, const char *root, const Rund__Agent__V1__Mount *m, struct mount_spec *out)
{
    if (check_path(f, "mount destination", m->destination))
        return -1;
    if (strlen(m->type) >= sizeof(out->type) || strlen(m->source) >= sizeof(out->source))
        return fail(f, CODE_INVALID_ARGUMENT, "mount at %.200s: type or source too long", m->destination);
    memset(out, 0, sizeof(*out));
    snprintf(out->target, sizeof(out->target), "%s%s", root, m->destination);
    /* The guest's cgroups are v2 only: a v1 "cgroup" mount becomes cgroup2, as runc does on such a host. */
    snprintf(out->type, sizeof(out->type), "%s", strcmp(m->type, "cgroup") == 0 ? "cgroup2" : m->type);
    snprintf(out->source, sizeof(out->source), "%s",
             strcmp(m->type, "cgroup") == 0 ? "cgroup2" : m->source[0] ? m->source : m->type);
    for (size_t i = 0; i < m->n_options; i++) {
        const char *o = m->options[i];
        size_t k = 0;
        while (k < sizeof(MOUNT_FLAGS) / sizeof(MOUNT_FLAGS[0]) && strcmp(MOUNT_FLAGS[k].name, o) != 0)
            k++;
        if (k < sizeof(MOUNT_FLAGS) / sizeof(MOUNT_FLAGS[0])) {
            out->flags = (out->flags | MOUNT_FLAGS[k].set) & ~MOUNT_FLAGS[k].clear;
            continue;
        }
        if (propagation_of(o, &out->propagation) == 0)
            continue;
        if (strchr(o, ',') || strlen(out->data) + strlen(o) + 2 > sizeof(out->data))
            return fail(f, CODE_INVALID_ARGUMENT, "mount at %.200s: option %.64s is not acceptable", m->destination, o);
        if (out->data[0])
            strcat(out->data, ",");
        strcat(out->data, o);
    }
    if (strcmp(out->type, "bind") == 0)
        out->flags |= MS_BIND;
    out->bind = out->flags & MS_BIND;
    if (out->bind) {
        if (check_path(f, "bind mount source", out->source))
            return -1;
        out->readonly_bind = out->flags & MS_RDONLY;
    }
    return 0;
}

/* The /dev/vdX whose virtio-blk serial is `serial`. */
/* Disks by serial, as found. Reading a serial asks the device itself (a request to the
 * VMM: ~10 ms under TCG), so the disks present at boot are read once then, before a
 * template is saved: a clone has its template's devices and finds its disk without
 * asking. An entry is used while its block device still exists. */
#define MAX_KNOWN_DISKS 16
static struct {
    char serial[64];
    char name[32];
} g_known_disks[MAX_KNOWN_DISKS];
static int g_nknown_disks;
static pthread_mutex_t g_known_disks_lock = PTHREAD_MUTEX_INITIALIZER;

static void remember_disk(const char *serial, const char *name)
{
    pthread_mutex_lock(&g_known_disks_lock);
    int i = 0;
    while (i < g_nknown_disks && strcmp(g_known_disks[i].serial, serial) != 0)
        i++;
    if (i < MAX_KNOWN_DISKS) {
        snprintf(g_known_disks[i].serial, sizeof(g_known_disks[i].serial), "%s", serial);
        snprintf(g_known_disks[i].name, sizeof(g_known_disks[i].name), "%s", name);
        if (i == g_nknown_disks)
            g_nknown_disks++;
    }
    pthread_mutex_unlock(&g_known_disks_lock);
}

static bool known_disk(const char *serial, char *dev, size_t cap)
{
    bool found = false;
    pthread_mutex_lock(&g_known_disks_lock);
    for (int i = 0; i < g_nknown_disks && !found; i++) {
        if (strcmp(g_known_disks[i].serial, serial) == 0) {
            char path[64];
            snprintf(path, sizeof(path), "/sys/block/%s", g_known_disks[i].name);
            found = access(path, F_OK) == 0;
            if (found)
                snprintf(dev, cap, "/dev/%s", g_known_disks[i].name);
        }
    }
    pthread_mutex_unlock(&g_known_disks_lock);
    return found;
}

/* The serial of block device `name` into s (cap bytes), trailing blanks cut; its length. */
static ssize_t disk_serial(const char *name, char *s, size_t cap)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "/sys/block/%s", name);
    if (read_file(dir, "serial", s, cap) < 0)
        return -1;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
    return (ssize_t)n;
}

void disks_learn(void)
{
    DIR *d = opendir("/sys/block");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char s[64];
        if (e->d_name[0] != '.' && strlen(e->d_name) < sizeof(g_known_disks[0].name) && disk_serial(e->d_name, s, sizeof(s)) > 0)
            remember_disk(s, e->d_name);
    }
    closedir(d);
}

int find_disk(struct fault *f, const char *serial, char *dev, size_t cap)
{
    if (known_disk(serial, dev, cap))
        return 0;
    for (int tries = 0; tries < 200; tries++) {
        DIR *d = opendir("/sys/block");
        if (!d)
            return fail(f, CODE_INTERNAL, "open /sys/block: %s", strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char s[64];
            if (e->d_name[0] == '.' || disk_serial(e->d_name, s, sizeof(s)) <= 0 || strcmp(s, serial) != 0)
                continue;
            snprintf(dev, cap, "/dev/%s", e->d_name);
            if (strlen(e->d_name) < sizeof(g_known_disks[0].name))
                remember_disk(s, e->d_name);
            closedir(d);
            return 0;
        }
        closedir(d);
        usleep(10000); /* a hot-plugged disk may still be probing */
    }
    return fail(f, CODE_NOT_FOUND, "no virtio-blk disk with serial %.64s", serial);
}

void mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0755);
            *p = '/';
        }
    mkdir(path, 0755);
}

/* A "file" mount: the host's bytes become a file of the container's directory in the
 * agent's tmpfs, bound onto the destination like any file bind. */
int place_file(struct fault *f, struct rootfs_plan *r, size_t index, const Rund__Agent__V1__Mount *in,
                      struct mount_spec *m)
{
    if (in->data.len > MAX_FILE_MOUNT)
        return fail(f, CODE_INVALID_ARGUMENT, "file mount at %.200s: %zu bytes are more than %d", in->destination,
                    in->data.len, MAX_FILE_MOUNT);
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/files", r->dir);
    mkdirs(dir);
    snprintf(m->source, sizeof(m->source), "%s/%zu", dir, index);
    int fd = open(m->source, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(f, CODE_INTERNAL, "file mount at %.200s: create %s: %s", in->destination, m->source, strerror(errno));
    size_t done = 0;
    while (done < in->data.len) {
        ssize_t n = write(fd, in->data.data + done, in->data.len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return fail(f, CODE_INTERNAL, "file mount at %.200s: write %s: %s", in->destination, m->source,
                        strerror(n < 0 ? errno : ENOSPC));
        }
        done += (size_t)n;
    }
    close(fd);
    snprintf(m->type, sizeof(m->type), "bind");
    m->flags |= MS_BIND;
    m->bind = true;
    m->readonly_bind = m->flags & MS_RDONLY;
    return 0;
}

static void child_mount(int report, const char *src, const char *dst, const char *type, unsigned long flags,
                        const char *data, const char *what)
{
    if (mount(src, dst, type, flags, data) < 0)
        child_fail(report, what, errno);
}

/* ---- the pod's mounts ------------------------------------------------------------------ */

/* The virtio-fs share and the writable disk are mounted once, in the agent's own mount
 * namespace, and every container of the pod takes its own directory of each: a second
 * mount of either would only return the same superblock, and one mount here lets the
 * agent delete a removed container's upper directory without entering its namespace. */
static pthread_mutex_t g_mounts_lock = PTHREAD_MUTEX_INITIALIZER;

int ensure_mounted(struct fault *f, const char *src, char *target, const char *type, unsigned long flags,
                   const char *data, const char *what)
{
    int rc = 0;
    pthread_mutex_lock(&g_mounts_lock);
    mkdirs(target);
    char up[160];
    snprintf(up, sizeof(up), "%s/..", target);
    struct stat here, parent;
    bool mounted = stat(target, &here) == 0 && stat(up, &parent) == 0 && here.st_dev != parent.st_dev;
    if (!mounted && strncmp(src, "/dev/", 5) == 0) {
        /* A clone's disk is not its template's: blocks the template's kernel read at probe
         * (the partition scan) may still be cached, and would shadow the clone's own. */
        int fd = open(src, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, BLKFLSBUF, 0) < 0)
            rc = fail(f, CODE_INTERNAL, "drop cached blocks of %s %s: %s", what, src, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (!mounted && rc == 0 && mount(src, target, type, flags, data) < 0)
        rc = fail(f, CODE_INTERNAL, "mount %s %s at %s: %s", what, src, target, strerror(errno));
    pthread_mutex_unlock(&g_mounts_lock);
    return rc;
}

int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
        alog("remove %s: %s", path, strerror(errno));
    return 0;
}

/* /run/rund/c/<id>: the rootfs mountpoint (a mount only in the container's namespace,
 * an empty directory here) and the files of "file" mounts. */
void remove_container_dir(const char *id)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "/run/rund/c/%s", id);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Brings up the loopback interface of the network namespace the child is in. */
static void child_loopback(int report)
{
    struct fault f = {0};
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || net_if_flags(sock, "lo", IFF_UP, &f) < 0)
        child_fail(report, "bring lo up", errno);
    close(sock);
}

/* A tmpfs /dev as runc makes it: the device nodes of its default list, made with mknod as
 * runc makes them outside a user namespace, and the links fd, stdin, stdout, stderr, ptmx. */
static void child_dev(int report, const char *rootfs)
{
    static const struct {
        const char *name;
        unsigned major, minor;
    } nodes[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    static const char *links[][2] = {
        {"/proc/self/fd", "fd"},       {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
    };
    char dst[1300];
    mode_t old = umask(0);
    for (size_t n = 0; n < sizeof(nodes) / sizeof(nodes[0]); n++) {
        snprintf(dst, sizeof(dst), "%s/dev/%s", rootfs, nodes[n].name);
        if (mknod(dst, S_IFCHR | 0666, makedev(nodes[n].major, nodes[n].minor)) < 0 && errno != EEXIST)
            child_fail(report, "make a device node", errno);
    }
    umask(old);
    for (size_t n = 0; n < sizeof(links) / sizeof(links[0]); n++) {
        snprintf(dst, sizeof(dst), "%s/dev/%s", rootfs, links[n][1]);
        if (symlink(links[n][0], dst) < 0 && errno != EEXIST)
            child_fail(report, "link a /dev entry", errno);
    }
}

/* Writes the namespaced sysctls through the container's /proc, in its namespaces. */
static void child_sysctls(int report, const struct rootfs_plan *r)
{
    for (size_t i = 0; i < r->nsysctls; i++) {
        int fd = open(r->sysctl_path[i], O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        size_t len = strlen(r->sysctl_value[i]);
        if (fd < 0 || write(fd, r->sysctl_value[i], len) != (ssize_t)len)
            child_fail(report, r->sysctl_path[i] + strlen(r->rootfs), errno);
        close(fd);
    }
}

/* Assembles the rootfs in new namespaces and pivots into it: the container's cgroup (and
 * a cgroup namespace rooted there), its UTS, IPC (or the pod's), network and mount
 * namespaces, the overlay, the spec's mounts in order, sysctls, masked and read-only
 * paths, a read-only root, the hostname; then pivot_root and the root's propagation. */
void child_rootfs(int report, struct rootfs_plan *r)
{
    if (r->cgroup_procs >= 0 && write(r->cgroup_procs, "0", 1) < 0)
        child_fail(report, "join the container's cgroup", errno);
    if (r->new_cgroupns && unshare(CLONE_NEWCGROUP) < 0)
        child_fail(report, "unshare the cgroup namespace", errno);
    bool join = r->join_uts >= 0;
    if (join && (setns(r->join_uts, CLONE_NEWUTS) < 0 || setns(r->join_ipc, CLONE_NEWIPC) < 0))
        child_fail(report, "join the pod's uts and ipc namespaces", errno);
    if (unshare(CLONE_NEWNS | (join ? 0 : CLONE_NEWUTS | CLONE_NEWIPC) | (r->new_net ? CLONE_NEWNET : 0)) < 0)
        child_fail(report, "unshare mount, uts, ipc and network namespaces", errno);
    if (r->new_net)
        child_loopback(report);
    child_mount(report, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, "make / private");
    child_mount(report, "overlay", r->rootfs, "overlay", 0, r->overlay_data, "mount the overlay rootfs");
    for (size_t i = 0; i < r->nmounts; i++) {
        struct mount_spec *m = &r->mounts[i];
        struct stat st;
        if (m->bind && stat(m->source, &st) == 0 && !S_ISDIR(st.st_mode)) {
            int fd = open(m->target, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd >= 0)
                close(fd);
        } else {
            mkdirs(m->target);
        }
        child_mount(report, m->source, m->target, m->bind ? NULL : m->type, m->flags & ~(m->bind ? MS_RDONLY : 0),
                    m->data[0] ? m->data : NULL, m->target);
        if (m->bind && (m->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)))
            child_mount(report, NULL, m->target, NULL,
                        MS_BIND | MS_REMOUNT | (m->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)), NULL,
                        "remount a bind mount with its flags");
        if (m->propagation)
            child_mount(report, NULL, m->target, NULL, m->propagation, NULL, "set a mount's propagation");
        if (strcmp(m->type, "tmpfs") == 0 && strcmp(m->target + strlen(r->rootfs), "/dev") == 0)
            child_dev(report, r->rootfs);
    }
    child_sysctls(report, r);
    for (size_t i = 0; i < r->nmasked; i++) {
        struct stat st;
        if (stat(r->masked[i], &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            child_mount(report, "tmpfs", r->masked[i], "tmpfs", MS_RDONLY, NULL, "mask a directory");
        else
            child_mount(report, "/dev/null", r->masked[i], NULL, MS_BIND, NULL, "mask a file");
    }
    for (size_t i = 0; i < r->nreadonly; i++) {
        if (mount(r->readonly[i], r->readonly[i], NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (errno == ENOENT)
                continue;
            child_fail(report, "bind a read-only path", errno);
        }
        child_mount(report, NULL, r->readonly[i], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL,
                    "remount a path read-only");
    }
    if (r->readonly_root)
        child_mount(report, NULL, r->rootfs, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL, "remount the rootfs read-only");
    if (!join && r->hostname[0] && sethostname(r->hostname, strlen(r->hostname)) < 0)
        child_fail(report, "sethostname", errno);
    if (chdir(r->rootfs) < 0)
        child_fail(report, "chdir to the rootfs", errno);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        child_fail(report, "pivot_root", errno);
    if (umount2(".", MNT_DETACH) < 0)
        child_fail(report, "detach the old root", errno);
    if (chdir("/") < 0)
        child_fail(report, "chdir to the new root", errno);
    if (r->propagation)
        child_mount(report, NULL, "/", NULL, r->propagation, NULL, "set the root's propagation");
}
