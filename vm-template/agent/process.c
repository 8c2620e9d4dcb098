/* Containers and processes: the tables, create (namespaces, cgroups, forking the init
 * process), start and exec, signals, waiting, stdio, reaping. What a child follows (its
 * plan, its rootfs, its side of the fork) is child.c's; calls answered from a cgroup are
 * cgroups.c's; seccomp and device programs are seccomp.c's and devices.c's. Over the
 * project's ~700 lines (1,100), on purpose for now: create, start, exec and the calls on
 * the tables share one lock discipline (g_lock held across each fork, the forking thread's
 * PID namespace switched around it), which one file keeps readable in one place. The
 * rootfs plan (rootfs_plan_make) is the part to move out first when it grows.
 *
 * Threads: every call runs on its own thread and takes g_lock to touch the tables; one
 * reaper thread waits for children (PID 1 reaps every orphan in the guest), one watcher
 * thread follows memory.events for OOM kills. Children are forked while g_lock is held,
 * so the reaper cannot see a pid before its record has it. Between fork and exec a child
 * does only system calls on data prepared before the fork. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
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

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_changed = PTHREAD_COND_INITIALIZER;
struct container *g_containers;

static unsigned g_spawn_seq;              /* guarded by g_lock; bumped at every fork */
static int g_own_pidns = -1;              /* the agent's PID namespace, which forks return to */
static int g_inotify = -1;
static char g_oom_queue[32][MAX_ID_LEN + 1]; /* guarded by g_lock */
static unsigned g_oom_head, g_oom_tail;
int g_cap_last = 40;


/* ---- tables ----------------------------------------------------------------------------- */

struct container *find_container(const char *id)
{
    for (struct container *c = g_containers; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

struct proc *find_proc(struct container *c, const char *exec_id)
{
    for (struct proc *p = c->procs; p; p = p->next)
        if (strcmp(p->exec_id, exec_id) == 0)
            return p;
    return NULL;
}

/* Looks up a process under g_lock, with NOT_FOUND naming what is missing. */
static struct proc *lookup(struct fault *f, const char *cid, const char *eid)
{
    if (check_id(f, "container_id", cid, false) || check_id(f, "exec_id", eid, true))
        return NULL;
    struct container *c = find_container(cid);
    if (!c) {
        fail(f, CODE_NOT_FOUND, "container %s", cid);
        return NULL;
    }
    struct proc *p = find_proc(c, eid);
    if (!p)
        fail(f, CODE_NOT_FOUND, "process %s in container %s", eid, cid);
    return p;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void proc_free(struct proc *p)
{
    close_fd(&p->stdin_fd);
    close_fd(&p->stdout_fd);
    close_fd(&p->stderr_fd);
    close_fd(&p->start_fd);
    close_fd(&p->error_fd);
    free(p->out[0].pend);
    free(p->out[1].pend);
    free(p->spec);
    free(p);
}

/* Frees a container out of the table: its namespace descriptors and its seccomp program. */
static void container_free(struct container *c)
{
    close_fd(&c->mnt_ns);
    close_fd(&c->uts_ns);
    close_fd(&c->ipc_ns);
    close_fd(&c->pid_ns);
    close_fd(&c->net_ns);
    close_fd(&c->cgroup_ns);
    close_fd(&c->device_prog);
    if (c->seccomp) {
        seccomp_program_free(c->seccomp);
        free(c->seccomp);
    }
    free(c);
}

static struct proc *proc_new(struct container *c, const char *exec_id)
{
    struct proc *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->c = c;
    snprintf(p->exec_id, sizeof(p->exec_id), "%s", exec_id);
    p->stdin_fd = p->stdout_fd = p->stderr_fd = p->start_fd = p->error_fd = -1;
    return p;
}

void agent_counts(uint32_t *containers, uint32_t *procs)
{
    pthread_mutex_lock(&g_lock);
    *containers = *procs = 0;
    for (struct container *c = g_containers; c; c = c->next) {
        (*containers)++;
        for (struct proc *p = c->procs; p; p = p->next)
            (*procs)++;
    }
    pthread_mutex_unlock(&g_lock);
}

/* ---- stdio set-up, shared by init and execs ------------------------------------------ */

struct stdio {
    int child_in, child_out, child_err; /* the child's ends */
    char slave[64];
};

/* Opens the process's stdio. A terminal comes from `ptmx`: for an exec, the container's
 * own devpts instance (reached through /proc/<init>/root), so that the process finds
 * its terminal under its /dev/pts; s->slave is then the path as the child sees it. */
static int stdio_open(struct fault *f, struct proc *p, bool terminal, const char *ptmx, struct stdio *s)
{
    s->child_in = s->child_out = s->child_err = -1;
    if (terminal) {
        int m = ptmx ? open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC) : posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        unsigned int n = 0;
        int unlock = 0;
        if (m < 0 || ioctl(m, TIOCSPTLCK, &unlock) || ioctl(m, TIOCGPTN, &n)) {
            if (m >= 0)
                close(m);
            return fail(f, CODE_INTERNAL, "open a pseudo-terminal%s%s: %s", ptmx ? " at " : "", ptmx ? ptmx : "",
                        strerror(errno));
        }
        snprintf(s->slave, sizeof(s->slave), "/dev/pts/%u", n);
        p->stdout_fd = m;
        p->stdin_fd = fcntl(m, F_DUPFD_CLOEXEC, 3);
        p->terminal = true;
        return 0;
    }
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC))
        return fail(f, CODE_INTERNAL, "pipe: %s", strerror(errno));
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]), close(in[1]);
        return fail(f, CODE_INTERNAL, "pipe: %s", strerror(errno));
    }
    if (pipe2(err, O_CLOEXEC)) {
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return fail(f, CODE_INTERNAL, "pipe: %s", strerror(errno));
    }
    s->child_in = in[0], p->stdin_fd = in[1];
    p->stdout_fd = out[0], s->child_out = out[1];
    p->stderr_fd = err[0], s->child_err = err[1];
    return 0;
}

static void stdio_close_child_ends(struct stdio *s)
{
    close_fd(&s->child_in);
    close_fd(&s->child_out);
    close_fd(&s->child_err);
}

/* Reads the child's report: 0 and *stage on success, -1 on a child failure or EOF. */
static int read_report(int fd, struct report *r)
{
    memset(r, 0, sizeof(*r));
    ssize_t n;
    do {
        n = read(fd, r, sizeof(*r));
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(*r) ? 0 : -1;
}

static int open_cgroup_procs(struct fault *f, struct container *c)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/cgroup.procs", c->cgroup);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(f, CODE_INTERNAL, "open %s: %s", path, strerror(errno));
    return fd;
}

/* A pod volume's root: made 0777 as the kubelet makes an emptyDir (any user of the pod
 * writes there); for a memory volume (`fs` "tmpfs") a tmpfs of the size the mount's
 * "size=" option gives (none: tmpfs's default). Then the subPath below the root, if the
 * source names one. `at` is where the volume's name starts in the source. */
static int make_volume(struct fault *f, const struct mount_spec *m, size_t at, const char *fs)
{
    char root[sizeof(m->source)];
    snprintf(root, sizeof(root), "%s", m->source);
    char *slash = strchr(root + at, '/');
    if (slash)
        *slash = 0;
    if (root[at] == 0)
        return fail(f, CODE_INVALID_ARGUMENT, "volume source %.200s names no volume", m->source);
    if (fs) {
        char data[96] = "mode=0777";
        const char *size = strstr(m->data, "size=");
        if (size && (size == m->data || size[-1] == ',')) {
            size_t n = strspn(size + 5, "0123456789");
            if (n == 0 || n > 19 || (size[5 + n] != 0 && size[5 + n] != ','))
                return fail(f, CODE_INVALID_ARGUMENT, "memory volume %.200s: size %.40s is not a number of bytes", root,
                            size + 5);
            snprintf(data + strlen(data), sizeof(data) - strlen(data), ",size=%.*s", (int)n, size + 5);
        }
        if (ensure_mounted(f, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, data, "a memory volume (tmpfs)"))
            return -1;
    } else {
        struct stat st;
        if (stat(root, &st) < 0) {
            mkdirs(root);
            chmod(root, 0777);
        }
    }
    if (slash) {
        char dir[sizeof(m->source)];
        snprintf(dir, sizeof(dir), "%s", m->source);
        mkdirs(dir);
    }
    return 0;
}

/* ---- create ------------------------------------------------------------------------- */

/* Where the writable disk `serial` is mounted, into dir (cap bytes). */
static void disk_dir(const char *serial, char *dir, size_t cap)
{
    snprintf(dir, cap, "/run/rund/disks/%s", serial);
}

int disk_mount(struct fault *f, const char *serial, char *dir, size_t cap)
{
    char dev[300];
    if (check_id(f, "disk serial", serial, false))
        return -1;
    disk_dir(serial, dir, cap);
    if (find_disk(f, serial, dev, sizeof(dev)))
        return -1;
    return ensure_mounted(f, dev, dir, "ext4", MS_NODEV, "discard", "the writable layer (ext4)");
}

int disk_prepare(struct fault *f, const char *serial)
{
    char dir[128], sub[160];
    if (disk_mount(f, serial, dir, sizeof(dir)))
        return -1;
    /* CreateContainer's upper_dir "" (a pod's first container) uses these. */
    snprintf(sub, sizeof(sub), "%s/upper", dir);
    mkdirs(sub);
    snprintf(sub, sizeof(sub), "%s/work", dir);
    mkdirs(sub);
    /* Written to the template's disk now, once: left dirty in the saved RAM, every clone
     * would write the same blocks back into its own layer, each a private copy. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) < 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return fail(f, CODE_INTERNAL, "sync the writable layer at %s: %s", dir, strerror(err));
    }
    close(fd);
    return 0;
}

static int rootfs_plan_make(struct fault *f, const Rund__Agent__V1__CreateContainerRequest *req, struct rootfs_plan *r,
                            struct steps *steps)
{
    const Rund__Agent__V1__Rootfs *rf = req->rootfs;
    if (!rf || !rf->lower_tag[0] || !rf->upper_disk_serial[0])
        return fail(f, CODE_INVALID_ARGUMENT, "rootfs needs lower_tag and upper_disk_serial");
    if (check_id(f, "rootfs.lower_tag", rf->lower_tag, false) ||
        check_id(f, "rootfs.upper_disk_serial", rf->upper_disk_serial, false))
        return -1;
    if (rf->upper_dir[0] && check_path(f, "rootfs.upper_dir", rf->upper_dir))
        return -1;
    if (rf->lower_dir[0] && check_path(f, "rootfs.lower_dir", rf->lower_dir))
        return -1;
    if (strlen(rf->upper_dir) > 256 || strlen(rf->lower_dir) > 256)
        return fail(f, CODE_INVALID_ARGUMENT, "rootfs.upper_dir and rootfs.lower_dir are limited to 256 bytes");
    if (strlen(req->hostname) > 64)
        return fail(f, CODE_INVALID_ARGUMENT, "hostname of %zu characters is longer than 64", strlen(req->hostname));
    if (req->n_mounts > MAX_MOUNTS || req->n_masked_paths > MAX_PATHS || req->n_readonly_paths > MAX_PATHS ||
        req->n_sysctls > MAX_SYSCTLS)
        return fail(f, CODE_INVALID_ARGUMENT, "more than %d mounts, %d masked or read-only paths or %d sysctls",
                    MAX_MOUNTS, MAX_PATHS, MAX_SYSCTLS);
    r->propagation = 0;
    if (req->rootfs_propagation[0] && propagation_of(req->rootfs_propagation, &r->propagation) < 0)
        return fail(f, CODE_INVALID_ARGUMENT, "rootfsPropagation %.32s is unknown", req->rootfs_propagation);
    r->new_net = req->new_network_namespace;
    r->new_cgroupns = req->new_cgroup_namespace;
    r->readonly_root = req->readonly_rootfs;

    snprintf(r->dir, sizeof(r->dir), "/run/rund/c/%s", req->container_id);
    snprintf(r->share, sizeof(r->share), "/run/rund/shares/%s", rf->lower_tag);
    disk_dir(rf->upper_disk_serial, r->disk, sizeof(r->disk));
    snprintf(r->lower, sizeof(r->lower), "%s%s", r->share, rf->lower_dir);
    snprintf(r->rootfs, sizeof(r->rootfs), "%s/rootfs", r->dir);
    /* kernel.shmmax is /proc/sys/kernel/shmmax, written through the container's /proc. */
    for (size_t i = 0; i < req->n_sysctls; i++) {
        const char *key = req->sysctls[i]->key, *value = req->sysctls[i]->value;
        if (!key[0] || strlen(key) > 200 || strlen(value) >= sizeof(r->sysctl_value[0]) || key[0] == '.' ||
            strstr(key, "..") || strchr(key, '/'))
            return fail(f, CODE_INVALID_ARGUMENT, "sysctl %.64s is not a sysctl name with a value", key);
        char *path = r->sysctl_path[i];
        int n = snprintf(path, sizeof(r->sysctl_path[0]), "%s/proc/sys/%s", r->rootfs, key);
        if (n < 0 || (size_t)n >= sizeof(r->sysctl_path[0]))
            return fail(f, CODE_INVALID_ARGUMENT, "sysctl %.64s: its path is too long", key);
        for (char *c = path + n - strlen(key); *c; c++)
            if (*c == '.')
                *c = '/';
        snprintf(r->sysctl_value[i], sizeof(r->sysctl_value[0]), "%s", value);
        r->nsysctls++;
    }
    snprintf(r->lower_tag, sizeof(r->lower_tag), "%s", rf->lower_tag);
    /* The disk's root is the sandbox's; only a directory of it is the container's own. */
    if (rf->upper_dir[0])
        snprintf(r->upper_root, sizeof(r->upper_root), "%s%s", r->disk, rf->upper_dir);
    snprintf(r->upper, sizeof(r->upper), "%s%s/upper", r->disk, rf->upper_dir);
    snprintf(r->work, sizeof(r->work), "%s%s/work", r->disk, rf->upper_dir);
    snprintf(r->overlay_data, sizeof(r->overlay_data), "lowerdir=%s,upperdir=%s,workdir=%s", r->lower, r->upper,
             r->work);
    snprintf(r->hostname, sizeof(r->hostname), "%s", req->hostname);
    /* virtiofs mounts always check modes and owners in the guest (default_permissions): a
     * container's non-root user is refused what the host's modes refuse it, though both
     * back-ends could read, and one write, as root. */
    steps_enter(steps, "mount the image share");
    if (ensure_mounted(f, r->lower_tag, r->share, "virtiofs", MS_RDONLY | MS_NODEV, NULL, "the read-only layer (virtio-fs)"))
        return -1;
    steps_enter(steps, "mount the writable layer");
    if (disk_mount(f, rf->upper_disk_serial, r->disk, sizeof(r->disk)))
        return -1;
    steps_enter(steps, "prepare the upper layer and mounts");
    struct stat st;
    if (stat(r->lower, &st) < 0 || !S_ISDIR(st.st_mode))
        return fail(f, CODE_NOT_FOUND, "rootfs.lower_dir %.256s is not a directory of virtio-fs share %s",
                    rf->lower_dir[0] ? rf->lower_dir : "/", rf->lower_tag);
    mkdirs(r->upper);
    mkdirs(r->work);
    char volumes[160];
    snprintf(volumes, sizeof(volumes), "%s/volumes/", r->disk);
    for (size_t i = 0; i < req->n_mounts; i++) {
        struct mount_spec *m = &r->mounts[r->nmounts++];
        if (parse_mount(f, r->rootfs, req->mounts[i], m))
            return -1;
        if (strcmp(m->type, "file") == 0 && place_file(f, r, i, req->mounts[i], m))
            return -1;
        /* A pod volume is a directory of the pod's disk, made when a container first mounts it. */
        if (m->bind && strncmp(m->source, volumes, strlen(volumes)) == 0 && make_volume(f, m, strlen(volumes), NULL))
            return -1;
        /* A memory volume is a tmpfs of the pod, mounted when a container first mounts it. */
        if (m->bind && strncmp(m->source, POD_MEMORY, strlen(POD_MEMORY)) == 0 &&
            make_volume(f, m, strlen(POD_MEMORY), "tmpfs"))
            return -1;
        /* A host directory: on the host-directory share. */
        if (m->bind && strncmp(m->source, HOST_DIRS_SHARE "/", strlen(HOST_DIRS_SHARE) + 1) == 0) {
            char dir[] = HOST_DIRS_SHARE;
            if (ensure_mounted(f, HOST_DIRS_TAG, dir, "virtiofs", MS_NODEV, NULL, "the host-directory share (virtio-fs)"))
                return -1;
        }
        /* The pod's /dev/shm: one tmpfs of the pod (CRI's is 64 MiB on the host), mounted when first bound. */
        if (m->bind && strcmp(m->source, POD_SHM) == 0) {
            char dir[] = POD_SHM;
            if (ensure_mounted(f, "shm", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k",
                               "the pod's /dev/shm (tmpfs)"))
                return -1;
        }
    }
    for (size_t i = 0; i < req->n_masked_paths; i++) {
        if (check_path(f, "masked path", req->masked_paths[i]))
            return -1;
        snprintf(r->masked[r->nmasked++], sizeof(r->masked[0]), "%s%s", r->rootfs, req->masked_paths[i]);
    }
    for (size_t i = 0; i < req->n_readonly_paths; i++) {
        if (check_path(f, "read-only path", req->readonly_paths[i]))
            return -1;
        snprintf(r->readonly[r->nreadonly++], sizeof(r->readonly[0]), "%s%s", r->rootfs, req->readonly_paths[i]);
    }
    return 0;
}

static int open_ns(struct fault *f, pid_t pid, const char *ns)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(f, CODE_INTERNAL, "open %s: %s", path, strerror(errno));
    return fd;
}

/* Opens the namespace `ns` of `pid` into *fd, unless *fd is open already or `wanted` is false. */
static int keep_ns(struct fault *f, pid_t pid, const char *ns, bool wanted, int *fd)
{
    if (!wanted || *fd >= 0)
        return 0;
    return (*fd = open_ns(f, pid, ns)) < 0 ? -1 : 0;
}

int container_create(const Rund__Agent__V1__CreateContainerRequest *req, struct steps *steps, struct fault *f)
{
    steps_enter(steps, "check the request");
    if (check_id(f, "container_id", req->container_id, false) || check_id(f, "pod_namespaces_of", req->pod_namespaces_of, true) ||
        check_id(f, "pid_namespace_of", req->pid_namespace_of, true))
        return -1;
    struct seccomp_program *seccomp = NULL;
    if (req->seccomp) {
        seccomp = calloc(1, sizeof(*seccomp));
        if (!seccomp)
            return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
        if (seccomp_compile(f, req->seccomp, seccomp)) {
            free(seccomp);
            return -1;
        }
    }
    struct plan plan;
    if (plan_make(f, req->process, seccomp, &plan)) {
        if (seccomp)
            seccomp_program_free(seccomp);
        free(seccomp);
        return -1;
    }
    struct rootfs_plan *r = calloc(1, sizeof(*r));
    if (!r) {
        plan_free(&plan);
        if (seccomp)
            seccomp_program_free(seccomp);
        free(seccomp);
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    struct container *c = NULL;
    struct proc *init = NULL;
    struct stdio s = {-1, -1, -1, {0}};
    int report[2] = {-1, -1}, start[2] = {-1, -1}, ptysock[2] = {-1, -1}, procs_fd = -1;
    bool cgroup_made = false;

    pthread_mutex_lock(&g_lock);
    c = find_container(req->container_id) ? NULL : calloc(1, sizeof(*c));
    if (!c) {
        bool exists = find_container(req->container_id) != NULL;
        pthread_mutex_unlock(&g_lock);
        free(r);
        plan_free(&plan);
        if (seccomp)
            seccomp_program_free(seccomp);
        free(seccomp);
        return exists ? fail(f, CODE_ALREADY_EXISTS, "container %s", req->container_id)
                      : fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* The id is reserved while the rootfs is prepared without the lock; the container owns
     * the seccomp program from here (its removal frees it). */
    snprintf(c->id, sizeof(c->id), "%s", req->container_id);
    snprintf(c->cgroup, sizeof(c->cgroup), "/sys/fs/cgroup/%s", req->container_id);
    c->mnt_ns = c->uts_ns = c->ipc_ns = c->pid_ns = c->net_ns = c->cgroup_ns = c->device_prog = c->oom_watch = -1;
    c->seccomp = seccomp;
    c->next = g_containers;
    g_containers = c;
    pthread_mutex_unlock(&g_lock);

    if (rootfs_plan_make(f, req, r, steps))
        goto fail;
    snprintf(c->upper_root, sizeof(c->upper_root), "%s", r->upper_root);
    mkdirs(r->rootfs);
    steps_enter(steps, "make its cgroup");
    if (mkdir(c->cgroup, 0755) < 0) {
        fail(f, CODE_INTERNAL, "create cgroup %s: %s", c->cgroup, strerror(errno));
        goto fail;
    }
    cgroup_made = true;
    if (req->resources && cgroup_apply(f, c->cgroup, req->resources, &c->device_prog))
        goto fail;
    if ((procs_fd = open_cgroup_procs(f, c)) < 0)
        goto fail;
    r->cgroup_procs = procs_fd;
    steps_enter(steps, "open its stdio");
    if (!(init = proc_new(c, "")))
        goto fail;
    if (plan.terminal) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ptysock)) {
            fail(f, CODE_INTERNAL, "socketpair: %s", strerror(errno));
            goto fail;
        }
    } else if (stdio_open(f, init, false, NULL, &s)) {
        goto fail;
    }
    if (pipe2(report, O_CLOEXEC) || pipe2(start, O_CLOEXEC)) {
        fail(f, CODE_INTERNAL, "pipe: %s", strerror(errno));
        goto fail;
    }

    steps_enter(steps, "fork its init and set up its rootfs");
    pthread_mutex_lock(&g_lock);
    r->join_uts = r->join_ipc = -1;
    if (req->pod_namespaces_of[0]) {
        struct container *pod = find_container(req->pod_namespaces_of);
        if (!pod || pod == c || pod->uts_ns < 0 || pod->ipc_ns < 0) {
            pthread_mutex_unlock(&g_lock);
            fail(f, CODE_NOT_FOUND, "pod_namespaces_of: no created container %.64s", req->pod_namespaces_of);
            goto fail;
        }
        r->join_uts = pod->uts_ns;
        r->join_ipc = pod->ipc_ns;
    }
    /* The init's PID namespace: a new one (it is PID 1 there) or the pod's; this thread's
     * children only, and back to the agent's own right after the fork. */
    int pid_join = -1;
    if (req->pid_namespace_of[0]) {
        struct container *owner = find_container(req->pid_namespace_of);
        if (!owner || owner == c || owner->pid_ns < 0) {
            pthread_mutex_unlock(&g_lock);
            fail(f, CODE_NOT_FOUND, "pid_namespace_of: no created container %.64s", req->pid_namespace_of);
            goto fail;
        }
        pid_join = owner->pid_ns;
    }
    if (pid_join >= 0 ? setns(pid_join, CLONE_NEWPID) < 0 : unshare(CLONE_NEWPID) < 0) {
        pthread_mutex_unlock(&g_lock);
        fail(f, CODE_INTERNAL, "%s a PID namespace: %s", pid_join >= 0 ? "join" : "make", strerror(errno));
        goto fail;
    }
    pid_t pid = fork();
    int fork_errno = errno;
    if (pid != 0 && setns(g_own_pidns, CLONE_NEWPID) < 0)
        alog("return to the agent's PID namespace: %s", strerror(errno)); /* later forks would land in the container's */
    if (pid == 0) {
        child_reset_signals();
        int own[] = {report[1], start[0], ptysock[1], s.child_in, s.child_out, s.child_err, r->join_uts, r->join_ipc,
                     r->cgroup_procs};
        child_close_others(report[1], own, sizeof(own) / sizeof(own[0]));
        if (plan.terminal) {
            /* The terminal must come from the container's own devpts, which exists only
             * once the rootfs is set up: allocate it there, hand the master to the agent. */
            child_rootfs(report[1], r);
            child_terminal(report[1], ptysock[1]);
        } else {
            child_stdio(report[1], &plan, s.child_in, s.child_out, s.child_err, s.slave);
            child_rootfs(report[1], r);
        }
        struct report ready = {.stage = 1};
        (void)!write(report[1], &ready, sizeof(ready));
        char go;
        if (read(start[0], &go, 1) != 1)
            _exit(127); /* removed before it was started */
        child_exec(report[1], &plan, -1); /* joined its cgroup before its rootfs */
    }
    if (pid < 0) {
        pthread_mutex_unlock(&g_lock);
        fail(f, CODE_INTERNAL, "fork: %s", strerror(fork_errno));
        goto fail;
    }
    g_spawn_seq++;
    init->pid = pid;
    init->state = PROC_CREATED;
    init->next = c->procs;
    c->procs = init;
    pthread_cond_broadcast(&g_changed);
    pthread_mutex_unlock(&g_lock);

    stdio_close_child_ends(&s);
    close_fd(&report[1]);
    close_fd(&start[0]);
    close_fd(&ptysock[1]);
    struct report rep;
    if (read_report(report[0], &rep) || rep.stage != 1) {
        fail(f, CODE_FAILED_PRECONDITION, "set up container %s: %s: %s", c->id, rep.stage ? rep.what : "the child died",
             rep.stage ? strerror(rep.err) : "no report");
        kill(pid, SIGKILL);
        init = NULL; /* now in the table: removal below frees it */
        goto fail;
    }
    steps_enter(steps, "keep its namespaces");
    if ((c->mnt_ns = open_ns(f, pid, "mnt")) < 0 || (c->uts_ns = open_ns(f, pid, "uts")) < 0 ||
        (c->ipc_ns = open_ns(f, pid, "ipc")) < 0 || (c->pid_ns = open_ns(f, pid, "pid")) < 0 ||
        keep_ns(f, pid, "net", r->new_net, &c->net_ns) || keep_ns(f, pid, "cgroup", r->new_cgroupns, &c->cgroup_ns)) {
        kill(pid, SIGKILL);
        init = NULL;
        goto fail;
    }
    if (plan.terminal) {
        int master = receive_terminal(ptysock[0]);
        if (master < 0) {
            fail(f, CODE_INTERNAL, "set up container %s: no terminal came back from its init", c->id);
            kill(pid, SIGKILL);
            init = NULL;
            goto fail;
        }
        pthread_mutex_lock(&g_lock);
        init->stdout_fd = master;
        init->stdin_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
        init->terminal = true;
        pthread_mutex_unlock(&g_lock);
    }
    close_fd(&ptysock[0]);
    char events[300];
    snprintf(events, sizeof(events), "%s/memory.events", c->cgroup);
    pthread_mutex_lock(&g_lock);
    init->start_fd = start[1];
    init->error_fd = report[0];
    c->oom_watch = inotify_add_watch(g_inotify, events, IN_MODIFY);
    pthread_mutex_unlock(&g_lock);
    close(procs_fd);
    free(r);
    plan_free(&plan);
    steps_enter(steps, NULL);
    alog("container %s created, init pid %d", c->id, pid);
    return 0;

fail:
    stdio_close_child_ends(&s);
    close_fd(&ptysock[0]);
    close_fd(&ptysock[1]);
    close_fd(&report[0]);
    close_fd(&report[1]);
    close_fd(&start[0]);
    close_fd(&start[1]);
    close_fd(&procs_fd);
    if (init)
        proc_free(init);
    free(r);
    plan_free(&plan);
    {
        struct fault ignored = {0};
        if (cgroup_made || c->procs)
            container_remove(c->id, &ignored);
        else {
            pthread_mutex_lock(&g_lock);
            for (struct container **pp = &g_containers; *pp; pp = &(*pp)->next)
                if (*pp == c) {
                    *pp = c->next;
                    break;
                }
            pthread_mutex_unlock(&g_lock);
            remove_container_dir(c->id);
            container_free(c);
        }
    }
    return -1;
}

/* ---- start, exec ------------------------------------------------------------------------ */

static int start_exec(struct fault *f, struct container *c, struct proc *p, pid_t *out_pid);

int proc_start(const char *cid, const char *eid, pid_t *out_pid, struct fault *f)
{
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    if (!p) {
        pthread_mutex_unlock(&g_lock);
        return -1;
    }
    if (p->state != PROC_CREATED) {
        pthread_mutex_unlock(&g_lock);
        return fail(f, CODE_FAILED_PRECONDITION, "process %s in container %s is not in the created state", eid, cid);
    }
    if (eid[0]) {
        int rc = start_exec(f, p->c, p, out_pid);
        pthread_mutex_unlock(&g_lock);
        return rc;
    }
    /* The init process: let it exec, then learn from the report pipe whether it did. */
    int start_fd = p->start_fd, error_fd = p->error_fd;
    p->start_fd = p->error_fd = -1;
    p->state = PROC_RUNNING;
    pid_t pid = p->pid;
    pthread_mutex_unlock(&g_lock);
    if (write(start_fd, "s", 1) != 1) {
        close(start_fd);
        close(error_fd);
        return fail(f, CODE_FAILED_PRECONDITION, "start container %s: its init process is gone", cid);
    }
    close(start_fd);
    struct report rep;
    int failed = read_report(error_fd, &rep) == 0;
    close(error_fd);
    if (failed)
        return fail(f, CODE_FAILED_PRECONDITION, "start container %s: %s: %s", cid, rep.what, strerror(rep.err));
    *out_pid = pid;
    alog("container %s started, pid %d", cid, pid);
    return 0;
}

int proc_exec(const Rund__Agent__V1__ExecProcessRequest *req, struct fault *f)
{
    if (check_id(f, "container_id", req->container_id, false) || check_id(f, "exec_id", req->exec_id, false))
        return -1;
    struct plan plan;
    if (plan_make(f, req->process, NULL, &plan))
        return -1;
    plan_free(&plan); /* checked now; made again at start from the packed copy */
    size_t len = rund__agent__v1__process__get_packed_size(req->process);
    uint8_t *spec = malloc(len ? len : 1);
    if (!spec)
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    rund__agent__v1__process__pack(req->process, spec);
    pthread_mutex_lock(&g_lock);
    struct container *c = find_container(req->container_id);
    struct proc *p = NULL;
    if (!c)
        fail(f, CODE_NOT_FOUND, "container %s", req->container_id);
    else if (c->mnt_ns < 0)
        fail(f, CODE_FAILED_PRECONDITION, "container %s is still being created", req->container_id);
    else if (find_proc(c, req->exec_id))
        fail(f, CODE_ALREADY_EXISTS, "process %s in container %s", req->exec_id, req->container_id);
    else if (!(p = proc_new(c, req->exec_id)))
        fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    if (!p) {
        pthread_mutex_unlock(&g_lock);
        free(spec);
        return -1;
    }
    p->spec = spec;
    p->spec_len = len;
    p->state = PROC_CREATED;
    /* After init, so that init stays first. */
    p->next = c->procs ? c->procs->next : NULL;
    if (c->procs)
        c->procs->next = p;
    else
        c->procs = p;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* Forks an exec into the container's namespaces. Called with g_lock held. */
static int start_exec(struct fault *f, struct container *c, struct proc *p, pid_t *out_pid)
{
    Rund__Agent__V1__Process *spec = rund__agent__v1__process__unpack(NULL, p->spec_len, p->spec);
    struct plan plan;
    int rc = spec ? plan_make(f, spec, c->seccomp, &plan) : fail(f, CODE_INTERNAL, "stored process spec is unreadable");
    if (spec)
        rund__agent__v1__process__free_unpacked(spec, NULL);
    if (rc)
        return -1;
    struct stdio s = {-1, -1, -1, {0}};
    int report[2] = {-1, -1};
    char ptmx[64];
    snprintf(ptmx, sizeof(ptmx), "/proc/%d/root/dev/pts/ptmx", c->procs ? c->procs->pid : 0);
    bool own_pts = plan.terminal && access(ptmx, F_OK) == 0;
    int procs_fd = open_cgroup_procs(f, c);
    if (procs_fd < 0 || stdio_open(f, p, plan.terminal, own_pts ? ptmx : NULL, &s) || pipe2(report, O_CLOEXEC)) {
        fail(f, CODE_INTERNAL, "prepare exec %s: %s", p->exec_id, strerror(errno));
        close_fd(&procs_fd);
        stdio_close_child_ends(&s);
        plan_free(&plan);
        return -1;
    }
    int mnt = c->mnt_ns, uts = c->uts_ns, ipc = c->ipc_ns, net = c->net_ns, cgns = c->cgroup_ns;
    /* Into the container's PID namespace: this thread's children only, back right after. */
    if (setns(c->pid_ns, CLONE_NEWPID) < 0) {
        int e = errno;
        close_fd(&procs_fd);
        stdio_close_child_ends(&s);
        close_fd(&report[0]);
        close_fd(&report[1]);
        plan_free(&plan);
        return fail(f, CODE_FAILED_PRECONDITION, "enter container %s's PID namespace: %s", c->id, strerror(e));
    }
    pid_t pid = fork();
    if (pid == 0) {
        child_reset_signals();
        int own[] = {report[1], procs_fd, s.child_in, s.child_out, s.child_err, cgns, net, ipc, uts, mnt};
        child_close_others(report[1], own, sizeof(own) / sizeof(own[0]));
        if (write(procs_fd, "0", 1) < 0)
            child_fail(report[1], "join the container's cgroup", errno);
        if ((cgns >= 0 && setns(cgns, CLONE_NEWCGROUP) < 0) || (net >= 0 && setns(net, CLONE_NEWNET) < 0) ||
            setns(ipc, CLONE_NEWIPC) < 0 || setns(uts, CLONE_NEWUTS) < 0 || setns(mnt, CLONE_NEWNS) < 0)
            child_fail(report[1], "enter the container's namespaces", errno);
        int stdio[] = {report[1], s.child_in, s.child_out, s.child_err};
        child_close_others(report[1], stdio, sizeof(stdio) / sizeof(stdio[0]));
        /* After setns, so that a terminal's /dev/pts/N is the container's. */
        child_stdio(report[1], &plan, s.child_in, s.child_out, s.child_err, s.slave);
        child_exec(report[1], &plan, -1);
    }
    int fork_errno = errno;
    if (pid != 0 && setns(g_own_pidns, CLONE_NEWPID) < 0)
        alog("return to the agent's PID namespace: %s", strerror(errno));
    stdio_close_child_ends(&s);
    close(report[1]);
    close(procs_fd);
    plan_free(&plan);
    if (pid < 0) {
        close(report[0]);
        return fail(f, CODE_INTERNAL, "fork: %s", strerror(fork_errno));
    }
    g_spawn_seq++;
    p->pid = pid;
    p->state = PROC_RUNNING;
    pthread_cond_broadcast(&g_changed);
    /* Wait for exec (EOF) or a failure report, without the lock: the child may block on
     * nothing but its own set-up, which is bounded. */
    pthread_mutex_unlock(&g_lock);
    struct report rep;
    int failed = read_report(report[0], &rep) == 0;
    close(report[0]);
    pthread_mutex_lock(&g_lock);
    if (failed)
        return fail(f, CODE_FAILED_PRECONDITION, "start process %s in container %s: %s: %s", p->exec_id, c->id,
                    rep.what, strerror(rep.err));
    *out_pid = pid;
    return 0;
}

/* ---- signals, waiting, deleting ----------------------------------------------------- */

int proc_signal(const char *cid, const char *eid, int sig, bool all, struct fault *f)
{
    if (sig < 1 || sig > 64)
        return fail(f, CODE_INVALID_ARGUMENT, "signal %d is outside 1..64", sig);
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    int rc = 0;
    if (!p) {
        rc = -1;
    } else if (all) {
        char path[300];
        snprintf(path, sizeof(path), "%s/cgroup.procs", p->c->cgroup);
        FILE *in = fopen(path, "re");
        if (!in)
            rc = fail(f, CODE_INTERNAL, "read %s: %s", path, strerror(errno));
        else {
            int pid;
            while (fscanf(in, "%d", &pid) == 1)
                kill(pid, sig);
            fclose(in);
        }
    } else if (p->state != PROC_RUNNING) {
        rc = fail(f, CODE_NOT_FOUND, "process %s in container %s is not running", eid, cid);
    } else if (kill(p->pid, sig) < 0) {
        rc = fail(f, CODE_INTERNAL, "kill %d: %s", p->pid, strerror(errno));
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int proc_wait(const char *cid, const char *eid, int *status, int64_t *at, struct fault *f)
{
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    if (!p) {
        pthread_mutex_unlock(&g_lock);
        return -1;
    }
    p->users++;
    while (p->state != PROC_EXITED && !call_abandoned())
        pthread_cond_wait(&g_changed, &g_lock);
    if (p->state != PROC_EXITED) {
        /* Its host left (procs_host_left woke us): nobody waits for this answer, and the
         * thread would otherwise count against the calls the next host may make. */
        p->users--;
        pthread_cond_broadcast(&g_changed);
        pthread_mutex_unlock(&g_lock);
        return fail(f, CODE_UNAVAILABLE, "the host that waited for %s/%s left", cid, eid);
    }
    *status = p->exit_status;
    *at = p->exited_at_ns;
    p->users--;
    pthread_cond_broadcast(&g_changed);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* Readers of a process's output sleep in ppoll until their descriptor has something or
 * WAKE_SIGNAL says that what they wait on changed (their host left, their process was
 * unlinked). Nothing wakes them on a timer: an idle guest must not run, and under TCG each
 * wake-up costs the host the emulation of a timer interrupt. The signal is blocked in a
 * reader except inside ppoll, so one sent between its last look and its sleep stays pending
 * and ends the sleep at once. The list is guarded by g_lock. */
#define WAKE_SIGNAL SIGURG

struct reader {
    pthread_t thread;
    sigset_t sleep_mask; /* its mask inside ppoll: as it was, with WAKE_SIGNAL open */
    struct reader *next;
};

static struct reader *g_readers;

static void on_wake(int sig)
{
    (void)sig;
}

/* Called with g_lock held. */
static void wake_readers(void)
{
    for (struct reader *r = g_readers; r; r = r->next)
        pthread_kill(r->thread, WAKE_SIGNAL);
}

static void reader_enter(struct reader *me)
{
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, WAKE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &wake, &me->sleep_mask);
    sigdelset(&me->sleep_mask, WAKE_SIGNAL);
    me->thread = pthread_self();
    pthread_mutex_lock(&g_lock);
    me->next = g_readers;
    g_readers = me;
    pthread_mutex_unlock(&g_lock);
}

static void reader_leave(struct reader *me)
{
    pthread_mutex_lock(&g_lock);
    for (struct reader **rr = &g_readers; *rr; rr = &(*rr)->next)
        if (*rr == me) {
            *rr = me->next;
            break;
        }
    pthread_mutex_unlock(&g_lock);
}

/* Unlinks and frees a process once no call uses it. Called with g_lock held. */
static void proc_unlink(struct proc *p)
{
    p->state = PROC_EXITED;
    wake_readers();
    while (p->users)
        pthread_cond_wait(&g_changed, &g_lock);
    for (struct proc **pp = &p->c->procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    proc_free(p);
}

void procs_host_left(void)
{
    pthread_mutex_lock(&g_lock);
    pthread_cond_broadcast(&g_changed);
    wake_readers();
    pthread_mutex_unlock(&g_lock);
}

int proc_delete(const char *cid, const char *eid, struct fault *f)
{
    if (!eid[0])
        return fail(f, CODE_FAILED_PRECONDITION, "the init process of %s goes with RemoveContainer", cid);
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    int rc = 0;
    if (!p)
        rc = -1;
    else if (p->state == PROC_RUNNING)
        rc = fail(f, CODE_FAILED_PRECONDITION, "process %s in container %s is still running", eid, cid);
    else
        proc_unlink(p);
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* ---- stdio ----------------------------------------------------------------------------- */

/* Takes a use of one of a process's fds; -1 with f set when there is none. */
static int use_fd(struct fault *f, const char *cid, const char *eid, int which, struct proc **out)
{
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    int fd = -1;
    if (p) {
        fd = which == 0 ? p->stdin_fd : which == 1 ? p->stdout_fd : p->stderr_fd;
        if (fd < 0)
            fail(f, CODE_FAILED_PRECONDITION, "process %s in container %s has no %s", eid, cid,
                 which == 0 ? "open stdin" : which == 1 ? "stdout" : "separate stderr");
        else {
            p->users++;
            if (which == 0)
                p->stdin_users++;
        }
    }
    pthread_mutex_unlock(&g_lock);
    *out = p;
    return fd;
}

static void release_fd(struct proc *p, int which)
{
    pthread_mutex_lock(&g_lock);
    p->users--;
    if (which == 0)
        p->stdin_users--;
    pthread_cond_broadcast(&g_changed);
    pthread_mutex_unlock(&g_lock);
}

int proc_write_stdin(const char *cid, const char *eid, const uint8_t *data, size_t len, size_t *written,
                     struct fault *f)
{
    struct proc *p;
    int fd = use_fd(f, cid, eid, 0, &p);
    if (fd < 0)
        return -1;
    ssize_t n;
    do {
        n = write(fd, data, len);
    } while (n < 0 && errno == EINTR);
    int e = errno;
    release_fd(p, 0);
    if (n < 0)
        return fail(f, e == EPIPE ? CODE_FAILED_PRECONDITION : CODE_INTERNAL, "write stdin of %s/%s: %s", cid, eid,
                    strerror(e));
    *written = (size_t)n;
    return 0;
}

int proc_close_stdin(const char *cid, const char *eid, struct fault *f)
{
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    int rc = p ? 0 : -1;
    if (p && p->terminal && p->stdin_fd >= 0) {
        /* A terminal has no end of input of its own: send its EOF character. */
        struct termios t;
        char eof = tcgetattr(p->stdin_fd, &t) == 0 ? (char)t.c_cc[VEOF] : 4;
        (void)!write(p->stdin_fd, &eof, 1);
    }
    if (p) {
        /* A write may be in progress: close once it is done. Readers of stdout and stderr
         * do not count: they may be waiting for exactly this end of input. */
        while (p->stdin_users)
            pthread_cond_wait(&g_changed, &g_lock);
        close_fd(&p->stdin_fd);
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* Most an output stream keeps unacknowledged: more than a few reads' worth is a host that
 * does not acknowledge. */
#define MAX_PENDING (4u << 20)

/* Answers an acked read at `offset` from what is kept, if it lies there. Called with g_lock. */
static int answer_kept(struct proc *p, int s, uint64_t offset, size_t max, uint8_t *buf, size_t *n, uint64_t *at,
                       struct fault *f)
{
    uint64_t base = p->out[s].off - p->out[s].len;
    if (offset < base || offset > p->out[s].off)
        return fail(f, CODE_OUT_OF_RANGE, "offset %llu of the output is outside %llu..%llu (what is kept)",
                    (unsigned long long)offset, (unsigned long long)base, (unsigned long long)p->out[s].off);
    size_t k = (size_t)(p->out[s].off - offset);
    if (k > max)
        k = max;
    memcpy(buf, p->out[s].pend + (offset - base), k);
    *n = k;
    *at = offset;
    return 0;
}

/* Waits, as a reader (see struct reader), for output on fd, a use of p's, and reads it:
 * 1 with *n bytes in buf, 0 at its end (or p gone with its container), -1 with f set. */
static int await_output(struct proc *p, int fd, const char *cid, const char *eid, uint8_t *buf, size_t max,
                        size_t *n, struct fault *f)
{
    struct reader me;
    reader_enter(&me);
    int rc;
    for (;;) {
        if (call_abandoned()) {
            /* The host that asked is gone (a daemon restart): what the process wrote stays in
             * the pipe for the next host's read, not in an answer nobody receives. */
            rc = fail(f, CODE_UNAVAILABLE, "the host that asked for the output of %s/%s left", cid, eid);
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = ppoll(&pfd, 1, NULL, &me.sleep_mask);
        if (r > 0 && call_abandoned())
            continue;
        if (r > 0) {
            ssize_t got = read(fd, buf, max);
            if (got > 0) {
                *n = (size_t)got;
                rc = 1;
                break;
            }
            if (got == 0 || errno == EIO) {
                /* EIO: a terminal whose last user is gone. */
                rc = 0;
                break;
            }
            if (errno != EINTR && errno != EAGAIN) {
                rc = fail(f, CODE_INTERNAL, "read output of %s/%s: %s", cid, eid, strerror(errno));
                break;
            }
        }
        pthread_mutex_lock(&g_lock);
        /* Deleted, or its container removed, while we waited. */
        bool gone = p->state == PROC_EXITED && !find_container(cid);
        pthread_mutex_unlock(&g_lock);
        if (gone) {
            rc = 0;
            break;
        }
    }
    reader_leave(&me);
    return rc;
}

int proc_read(const char *cid, const char *eid, bool err_stream, bool acked, uint64_t offset, size_t max, uint8_t *buf,
              size_t *n, bool *eof, uint64_t *at, struct fault *f)
{
    struct proc *p;
    int which = err_stream ? 2 : 1, s = err_stream ? 1 : 0;
    int fd = use_fd(f, cid, eid, which, &p);
    if (fd < 0)
        return -1;
    *n = 0;
    *eof = false;
    *at = offset;
    if (acked) {
        pthread_mutex_lock(&g_lock);
        int rc = 0;
        if (offset < p->out[s].off)
            rc = answer_kept(p, s, offset, max, buf, n, at, f) ? -1 : 1;
        else if (offset > p->out[s].off)
            rc = answer_kept(p, s, offset, max, buf, n, at, f); /* refused: past what was read */
        else if (p->out[s].len) {
            /* Everything kept has been passed on. */
            free(p->out[s].pend);
            p->out[s].pend = NULL;
            p->out[s].len = 0;
        }
        pthread_mutex_unlock(&g_lock);
        if (rc) {
            release_fd(p, which);
            return rc < 0 ? -1 : 0;
        }
    }
    int got = await_output(p, fd, cid, eid, buf, max, n, f);
    if (got < 0) {
        release_fd(p, which);
        return -1;
    }
    *eof = got == 0;
    int rc = 0;
    if (acked && *n) {
        /* Kept until acknowledged. Another read may have taken output meanwhile (a host that
         * left, whose answer went nowhere): what it took is kept too, before this. */
        pthread_mutex_lock(&g_lock);
        size_t len = p->out[s].len;
        uint8_t *grown = len + *n <= MAX_PENDING ? realloc(p->out[s].pend, len + *n) : NULL;
        if (!grown) {
            rc = fail(f, CODE_RESOURCE_EXHAUSTED, "output of %s/%s: %zu bytes unacknowledged", cid, eid, len + *n);
        } else {
            memcpy(grown + len, buf, *n);
            p->out[s].pend = grown;
            p->out[s].len = len + *n;
            p->out[s].off += *n;
            rc = answer_kept(p, s, offset, max, buf, n, at, f);
        }
        pthread_mutex_unlock(&g_lock);
    }
    release_fd(p, which);
    return rc;
}

int proc_resize(const char *cid, const char *eid, unsigned rows, unsigned cols, struct fault *f)
{
    /* 0 is a legal size: "unknown" (a terminal that was never sized, as script(1) makes). */
    if (rows > 65535 || cols > 65535)
        return fail(f, CODE_INVALID_ARGUMENT, "window size %ux%u is outside 0..65535", rows, cols);
    pthread_mutex_lock(&g_lock);
    struct proc *p = lookup(f, cid, eid);
    int rc = p ? 0 : -1;
    if (p && !p->terminal)
        rc = fail(f, CODE_FAILED_PRECONDITION, "process %s in container %s has no terminal", eid, cid);
    else if (p) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        if (ioctl(p->stdout_fd, TIOCSWINSZ, &ws) < 0)
            rc = fail(f, CODE_INTERNAL, "TIOCSWINSZ: %s", strerror(errno));
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int container_wait_oom(char *cid_out, size_t cap, struct fault *f)
{
    pthread_mutex_lock(&g_lock);
    while (g_oom_head == g_oom_tail && !call_abandoned())
        pthread_cond_wait(&g_changed, &g_lock);
    if (g_oom_head == g_oom_tail) {
        /* Its host left (procs_host_left woke us): an event taken now would be answered to
         * nobody and lost; it stays queued for the next host's wait. */
        pthread_mutex_unlock(&g_lock);
        return fail(f, CODE_UNAVAILABLE, "the host that waited for OOM events left");
    }
    snprintf(cid_out, cap, "%s", g_oom_queue[g_oom_tail++ % 32]);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

int container_remove(const char *cid, struct fault *f)
{
    if (check_id(f, "container_id", cid, false))
        return -1;
    pthread_mutex_lock(&g_lock);
    struct container *c = find_container(cid);
    if (!c) {
        pthread_mutex_unlock(&g_lock);
        return fail(f, CODE_NOT_FOUND, "container %s", cid);
    }
    /* Everything in the cgroup dies; so does an init that has not joined it yet. */
    write_file(c->cgroup, "cgroup.kill", "1");
    for (struct proc *p = c->procs; p; p = p->next)
        if (p->state != PROC_EXITED && p->pid > 0)
            kill(p->pid, SIGKILL);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    for (;;) {
        bool running = false;
        for (struct proc *p = c->procs; p; p = p->next)
            running |= p->state != PROC_EXITED && p->pid > 0;
        if (!running || pthread_cond_timedwait(&g_changed, &g_lock, &deadline) == ETIMEDOUT)
            break;
    }
    while (c->procs)
        proc_unlink(c->procs);
    if (c->oom_watch >= 0)
        inotify_rm_watch(g_inotify, c->oom_watch);
    for (struct container **pp = &g_containers; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    /* The cgroup empties asynchronously after the last process is reaped. */
    int rc = -1;
    for (int i = 0; i < 500 && (rc = rmdir(c->cgroup)) < 0 && errno == EBUSY; i++)
        usleep(10000);
    if (rc < 0 && errno != ENOENT)
        alog("remove cgroup %s: %s", c->cgroup, strerror(errno));
    remove_container_dir(c->id);
    /* Its processes are gone and its namespace with them: its writes go too. */
    if (c->upper_root[0])
        nftw(c->upper_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    alog("container %s removed", c->id);
    container_free(c);
    return 0;
}

/* ---- background threads ------------------------------------------------------------- */

static void *reaper(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        unsigned seen = g_spawn_seq;
        pthread_mutex_unlock(&g_lock);
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == ECHILD) {
                pthread_mutex_lock(&g_lock);
                while (g_spawn_seq == seen)
                    pthread_cond_wait(&g_changed, &g_lock);
                pthread_mutex_unlock(&g_lock);
            }
            continue;
        }
        int64_t now = realtime_ns();
        pthread_mutex_lock(&g_lock);
        for (struct container *c = g_containers; c; c = c->next)
            for (struct proc *p = c->procs; p; p = p->next)
                if (p->pid == pid && p->state != PROC_EXITED) {
                    p->state = PROC_EXITED;
                    p->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                    p->exited_at_ns = now;
                }
        pthread_cond_broadcast(&g_changed);
        pthread_mutex_unlock(&g_lock);
    }
    return NULL;
}

static void *oom_watcher(void *arg)
{
    (void)arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(g_inotify, buf, sizeof(buf));
        if (n <= 0) {
            if (n < 0 && errno != EINTR)
                usleep(100000);
            continue;
        }
        pthread_mutex_lock(&g_lock);
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            for (struct container *c = g_containers; c; c = c->next)
                if (c->oom_watch == e->wd) {
                    uint64_t kills = number(c->cgroup, "memory.events", "oom_kill");
                    if (kills > c->oom_kills) {
                        c->oom_kills = kills;
                        if (g_oom_head - g_oom_tail < 32)
                            snprintf(g_oom_queue[g_oom_head++ % 32], MAX_ID_LEN + 1, "%s", c->id);
                        pthread_cond_broadcast(&g_changed);
                    }
                }
            p += sizeof(struct inotify_event) + e->len;
        }
        pthread_mutex_unlock(&g_lock);
    }
    return NULL;
}

void procs_init(void)
{
    char buf[16];
    if (read_file("/proc/sys/kernel", "cap_last_cap", buf, sizeof(buf)) == 0)
        g_cap_last = atoi(buf);
    if (g_cap_last > 63)
        g_cap_last = 63;
    devices_preload();
    g_own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (g_own_pidns < 0)
        alog("open the agent's PID namespace: %s", strerror(errno));
    g_inotify = inotify_init1(IN_CLOEXEC);
    struct sigaction wake = {.sa_handler = on_wake}; /* no SA_RESTART: ppoll ends with EINTR */
    sigemptyset(&wake.sa_mask);
    sigaction(WAKE_SIGNAL, &wake, NULL);
    pthread_t t;
    pthread_create(&t, NULL, reaper, NULL);
    pthread_detach(t);
    if (g_inotify >= 0) {
        pthread_create(&t, NULL, oom_watcher, NULL);
        pthread_detach(t);
    }
}
