/* rund-jail: starts a VM's hypervisor unprivileged, the way Firecracker's jailer does.
 *
 *   rund-jail --uid U --gid G [--group K]...
 *             [--open N=MODE:PATH]... [--tap N=NAME]... [--listen N=PATH]... [--connect N=PATH]...
 *             [--pivot DIR] [--cap NAME]... [--ptracer PID|any]
 *             [--isolate PIDFILE [--bind PATH]... [--bind-rw PATH]...]
 *             -- PROGRAM ARGS...
 *
 * As root it prepares what the hypervisor may use and could not open itself: files
 * (the writable layer, through the daemon's /proc/<pid>/fd link; MODE r or rw, and rd or
 * rwd with O_DIRECT, which QEMU's cache.direct=on asks its descriptors to have), a tap device it creates
 * (TUNSETIFF needs CAP_NET_ADMIN), listening sockets for QMP and the agent, a connection
 * to the virtio-fs back-end, each on descriptor N, and closes every other descriptor it
 * inherited. Then it drops
 * everything: supplementary groups (but --group), every capability in the bounding set,
 * uid and gid to U and G (which clears the permitted, effective and ambient sets), sets
 * no_new_privs, checks that no capability is left, and execs the hypervisor, which, exec'd
 * as its own uid, stays dumpable for its helper's process_vm_readv (the same uid).
 *
 * It runs in the VM's directory (the daemon's choice), which recovery reads back from
 * /proc/<pid>/cwd. Any failure exits 126 with the reason on stderr, before the exec.
 *
 * The same jail starts a sandbox's helper (its virtio-fs back-end), with three more
 * options. --pivot DIR: after the descriptors are made, a mount namespace of its own whose
 * root is DIR (bound onto itself; every mount is made a slave first, so mounts the daemon
 * makes below DIR later still appear, and nothing propagates back), the old root detached;
 * the program is opened before and exec'd by descriptor. --cap NAME: that capability is
 * kept (permitted, effective, ambient, so it survives the exec), one of dac_read_search
 * (the image share's helper reads an image's files whatever their mode) and, for the
 * host-directory share's helper, which writes as the guest's root would, dac_override,
 * chown, fowner and fsetid; no other can be named. --ptracer PID: under Yama's
 * ptrace_scope 1, lets PID (the helper) reach this process's memory (process_vm_readv),
 * which Yama would otherwise allow only to an ancestor; without Yama it does nothing.
 * Yama keeps one such PID per process: a VM with two helpers says --ptracer any, which
 * lets whoever passes the kernel's other ptrace checks (the same uid, the VM's own, which
 * only its helpers share; or CAP_SYS_PTRACE) do what a named PID could.
 *
 * --pivot also gives the helper network, IPC and UTS namespaces of its own: it reaches
 * nothing by address (its sockets are the descriptors made here), no System V object, and
 * not the host's name. It stays in the host's PID namespace: it names its VM's process
 * (process_vm_readv, pinned by its seccomp filter), which it could not from a namespace
 * its VM is not below.
 *
 * --isolate PIDFILE is for the hypervisor (Firecracker's jailer is the model): after the
 * descriptors are made, the jail forks into a new PID namespace and writes the child's pid
 * (as the host sees it) to PIDFILE. The child, pid 1 of that namespace, enters new network
 * (only lo; its tap is a descriptor already), IPC, UTS and mount namespaces; its root is a
 * read-only tmpfs holding only /usr and the host's /lib, /lib64, /bin, /sbin (links or
 * read-only binds), /dev/null, zero, random and urandom, its working directory (the VM's
 * directory, bound at its own path, so recovery still finds the VM by it) and each PATH
 * named by --bind (read-only) or --bind-rw, at its own path; every bind nosuid, only /dev's
 * without nodev. No /proc, no /sys, no /etc. The parent drops every privilege too and
 * stays as the child's waiter: it exits as the hypervisor does (its code, or 128 + the
 * signal that ended it), so the daemon still sees its VM's end as its own child's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#define MAX_FDS 32
#define MAX_GROUPS 8
#define MAX_BINDS 24
#define FIRST_FREE 100 /* descriptors are opened above the targets, then moved down */

static void fail(const char *what, const char *arg)
{
    fprintf(stderr, "rund-jail: %s %s: %s\n", what, arg ? arg : "", errno ? strerror(errno) : "invalid");
    exit(126);
}

static long number(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == 0 || *end != 0 || v < min || v > max) {
        errno = 0;
        fail("bad number", s);
    }
    return v;
}

struct slot {
    int target;
    int fd;              /* -1 until made: a connection is made last, by the process that execs */
    const char *connect; /* --connect's path */
};

/* "N=REST": the target descriptor (3..1023) and REST. */
static const char *target(const char *spec, int *n)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || eq - spec > 4) {
        errno = 0;
        fail("expected N=..., got", spec);
    }
    char num[8];
    memcpy(num, spec, (size_t)(eq - spec));
    num[eq - spec] = 0;
    *n = (int)number(num, 3, 1023);
    return eq + 1;
}

static int above(int fd, const char *what)
{
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, FIRST_FREE);
    if (moved < 0)
        fail("dup", what);
    close(fd);
    return moved;
}

static int open_file(const char *spec)
{
    int flags;
    if (!strncmp(spec, "rw:", 3))
        flags = O_RDWR;
    else if (!strncmp(spec, "r:", 2))
        flags = O_RDONLY;
    else if (!strncmp(spec, "rwd:", 4))
        flags = O_RDWR | O_DIRECT;
    else if (!strncmp(spec, "rd:", 3))
        flags = O_RDONLY | O_DIRECT;
    else {
        errno = 0;
        fail("open mode must be r:, rw:, rd: or rwd:, got", spec);
    }
    const char *path = strchr(spec, ':') + 1;
    int fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        fail("open", path);
    return above(fd, path);
}

static int make_tap(const char *name)
{
    if (strlen(name) == 0 || strlen(name) >= IFNAMSIZ) {
        errno = 0;
        fail("tap name", name);
    }
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fail("open", "/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strcpy(ifr.ifr_name, name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        fail("create tap", name);
    return above(fd, name);
}

static struct sockaddr_un address(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = 0;
        fail("socket path too long", path);
    }
    strcpy(sa.sun_path, path);
    return sa;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = address(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket", path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 || listen(fd, 4) < 0)
        fail("listen on", path);
    return above(fd, path);
}

static int connect_to(const char *path)
{
    struct sockaddr_un sa = address(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        fail("connect to", path);
    return above(fd, path);
}

/* New mount, network, IPC and UTS namespaces named hostname, every mount a slave of the
 * host's (its later unmounts reach in, nothing here reaches out). */
static void own_namespaces(const char *hostname)
{
    if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        fail("unshare mount, network, IPC and UTS namespaces for", hostname);
    if (sethostname(hostname, strlen(hostname)) < 0)
        fail("sethostname", hostname);
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        fail("make every mount a slave for", hostname);
}

/* root, a mount point, becomes / with the old root detached; then cwd becomes dir. */
static void pivot_into(const char *root, const char *dir)
{
    if (chdir(root) < 0)
        fail("chdir", root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail("pivot_root into", root);
    if (umount2(".", MNT_DETACH) < 0)
        fail("detach the old root under", root);
    if (chdir(dir) < 0)
        fail("chdir in the new root to", dir);
}

/* A mount namespace whose root is dir: the caller's mounts below dir, and nothing else. */
static void pivot(const char *dir)
{
    own_namespaces("rund-helper");
    if (mount(dir, dir, NULL, MS_BIND | MS_REC, NULL) < 0)
        fail("bind onto itself", dir);
    pivot_into(dir, "/");
}

/* What --isolate binds into the hypervisor's root: a path, opened (O_PATH) while the host's
 * tree is still in view. */
struct bind {
    const char *path;
    int fd;
    int writable;
    int device; /* /dev's nodes: the one kind of bind without nodev */
};

static struct bind binds[MAX_BINDS];
static int nbinds;

static void add_bind(const char *path, int writable, int device)
{
    if (path[0] != '/' || strlen(path) >= PATH_MAX / 2 || strstr(path, "/../") || strstr(path, "//")) {
        errno = 0;
        fail("--bind needs a plain absolute path, got", path);
    }
    if (nbinds == MAX_BINDS) {
        errno = 0;
        fail("too many binds at", path);
    }
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        fail("open to bind", path);
    binds[nbinds++] = (struct bind){.path = path, .fd = above(fd, path), .writable = writable, .device = device};
}

/* mkdir -p of every directory above root+path (modes 0755, in the new root's tmpfs). */
static void make_parents(const char *root, const char *path)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof(p), "%s%s", root, path) >= (int)sizeof(p)) {
        errno = ENAMETOOLONG;
        fail("bind target", path);
    }
    for (char *c = p + strlen(root) + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = 0;
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            fail("mkdir", p);
        *c = '/';
    }
}

/* Binds b at root+b->path: a directory onto a directory, anything else onto an empty file. */
static void bind_into(const char *root, const struct bind *b)
{
    char target[PATH_MAX], source[64];
    struct stat st;
    make_parents(root, b->path);
    snprintf(target, sizeof(target), "%s%s", root, b->path);
    snprintf(source, sizeof(source), "/proc/self/fd/%d", b->fd);
    if (fstat(b->fd, &st) < 0)
        fail("stat", b->path);
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(target, 0755) < 0 && errno != EEXIST)
            fail("mkdir", target);
    } else {
        int f = open(target, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (f < 0)
            fail("create", target);
        close(f);
    }
    /* Not recursive: the VM's directory now has the new root mounted on it. */
    if (mount(source, target, NULL, MS_BIND, NULL) < 0)
        fail("bind", b->path);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | (b->writable ? 0 : MOUNT_ATTR_RDONLY) |
                                          (b->device ? MOUNT_ATTR_NOEXEC : MOUNT_ATTR_NODEV)};
    if (mount_setattr(AT_FDCWD, target, 0, &attr, sizeof(attr)) < 0)
        fail("set nosuid, nodev, ro on", b->path);
}

static const char *const system_dirs[] = {"/lib", "/lib64", "/bin", "/sbin", "/lib32", "/libx32"};

/* The host's /lib, /lib64, /bin, /sbin where they are directories: bound read-only. */
static void add_system_dirs(void)
{
    for (size_t k = 0; k < sizeof(system_dirs) / sizeof(system_dirs[0]); k++) {
        struct stat st;
        if (lstat(system_dirs[k], &st) == 0 && S_ISDIR(st.st_mode))
            add_bind(system_dirs[k], 0, 0);
    }
}

/* ... and where they are links (merged /usr), the same links. */
static void link_system_dirs(const char *root)
{
    for (size_t k = 0; k < sizeof(system_dirs) / sizeof(system_dirs[0]); k++) {
        char to[PATH_MAX], at[PATH_MAX];
        ssize_t n = readlink(system_dirs[k], to, sizeof(to) - 1);
        if (n < 0)
            continue; /* absent, or a directory bound already */
        to[n] = 0;
        snprintf(at, sizeof(at), "%s%s", root, system_dirs[k]);
        if (symlink(to, at) < 0)
            fail("link", at);
    }
}

/* The hypervisor's namespaces: network, IPC, UTS and mount, with the root the usage
 * describes; its working directory the VM's, bound at its own path. */
static void enter_own_root(int vmdir)
{
    char dir[PATH_MAX];
    if (!getcwd(dir, sizeof(dir)) || strlen(dir) >= PATH_MAX / 2)
        fail("getcwd", NULL);
    own_namespaces("rund-vm");
    /* Each source again, now in this namespace (a bind takes its source from the caller's
     * own mount namespace), before the new root covers the VM's directory. */
    for (int k = 0; k < nbinds; k++) {
        close(binds[k].fd);
        if ((binds[k].fd = open(binds[k].path, O_PATH | O_CLOEXEC)) < 0)
            fail("open to bind", binds[k].path);
    }
    close(vmdir);
    if ((vmdir = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        fail("open the working directory", dir);
    /* The new root: a tmpfs of this namespace's alone, mounted over the VM's directory,
     * which the descriptors just opened still reach. */
    const char *root = dir;
    if (mount("rund-vm", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=256") < 0)
        fail("mount the root tmpfs on", root);
    for (int k = 0; k < nbinds; k++)
        bind_into(root, &binds[k]);
    link_system_dirs(root);
    struct bind own = {.path = dir, .fd = vmdir, .writable = 1};
    bind_into(root, &own);
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    if (mount_setattr(AT_FDCWD, root, 0, &ro, sizeof(ro)) < 0)
        fail("make the new root read-only:", root);
    pivot_into(root, dir);
    for (int k = 0; k < nbinds; k++)
        close(binds[k].fd);
    close(vmdir);
}

/* Gives up every privilege: capabilities but those in kept, groups but groups, uid and
 * gid; in the order that leaves no window. */
static void drop_privileges(long uid, long gid, const gid_t *groups, int ngroups, uint32_t kept)
{
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
        if (!(cap < 32 && (kept & 1u << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            fail("drop capability from the bounding set", NULL);
    }
    if (setgroups((size_t)ngroups, groups) < 0)
        fail("setgroups", NULL);
    if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0)
        fail("setresgid", NULL);
    if (kept && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        fail("keep capabilities", NULL);
    if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
        fail("setresuid", NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail("no_new_privs", NULL);
    struct __user_cap_header_struct head = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (kept) {
        memset(data, 0, sizeof(data));
        data[0].effective = data[0].permitted = data[0].inheritable = kept;
        if (syscall(SYS_capset, &head, data) < 0)
            fail("keep the capabilities named by --cap", NULL);
        for (int cap = 0; cap < 32; cap++) {
            if ((kept & 1u << cap) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
                fail("keep the capabilities named by --cap across the exec", NULL);
        }
    }
    if (syscall(SYS_capget, &head, data) < 0)
        fail("capget", NULL);
    for (int k = 0; k < 2; k++) {
        uint32_t allowed = k == 0 ? kept : 0;
        if ((data[k].effective | data[k].permitted | data[k].inheritable) & ~allowed) {
            errno = 0;
            fail("capabilities remain after the uid change", NULL);
        }
    }
    if (getuid() == 0 || geteuid() == 0) {
        errno = 0;
        fail("still root", NULL);
    }
}

/* Forks into a new PID namespace. The child returns (pid 1 there) once the parent has
 * written its pid to pid_file; the parent, unprivileged, waits for it and exits as it did. */
static void fork_into_own_pid_namespace(const char *pid_file, long uid, long gid)
{
    int go[2];
    if (unshare(CLONE_NEWPID) < 0)
        fail("unshare the PID namespace", NULL);
    if (pipe2(go, O_CLOEXEC) < 0)
        fail("pipe", NULL);
    pid_t child = fork();
    if (child < 0)
        fail("fork", NULL);
    if (child == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1) {
            errno = 0;
            fail("the jail's parent ended before the hypervisor started", NULL);
        }
        close(go[0]);
        return;
    }
    close(go[0]);
    /* The parent keeps stderr and the go pipe: the VM's descriptors are the child's. */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0)
        fail("open /dev/null", NULL);
    if (devnull > 2)
        close(devnull);
    for (int fd = 3; fd < FIRST_FREE + MAX_FDS + MAX_BINDS + 64; fd++) {
        if (fd != go[1])
            close(fd);
    }
    char line[32];
    int n = snprintf(line, sizeof(line), "%d\n", (int)child);
    int f = open(pid_file, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (f < 0 || write(f, line, (size_t)n) != n || close(f) < 0) {
        kill(child, SIGKILL);
        fail("write the hypervisor's pid to", pid_file);
    }
    if (write(go[1], "g", 1) != 1) {
        kill(child, SIGKILL);
        fail("start the hypervisor", NULL);
    }
    close(go[1]);
    drop_privileges(uid, gid, NULL, 0, 0);
    int status;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR)
            fail("wait for the hypervisor", NULL);
    }
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

int main(int argc, char **argv)
{
    long uid = -1, gid = -1, ptracer = 0;
    const char *pivot_dir = NULL, *pid_file = NULL;
    uint32_t kept = 0; /* capabilities to keep: all of those nameable are below 32 */
    gid_t groups[MAX_GROUPS];
    int ngroups = 0;
    struct slot slots[MAX_FDS];
    int nslots = 0;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc) {
            errno = 0;
            fail("missing value for", opt);
        }
        const char *val = argv[++i];
        if (!strcmp(opt, "--uid")) {
            uid = number(val, 1, 0x7fffffff);
        } else if (!strcmp(opt, "--gid")) {
            gid = number(val, 1, 0x7fffffff);
        } else if (!strcmp(opt, "--pivot")) {
            if (val[0] != '/') {
                errno = 0;
                fail("--pivot needs an absolute directory, got", val);
            }
            pivot_dir = val;
        } else if (!strcmp(opt, "--isolate")) {
            if (val[0] != '/') {
                errno = 0;
                fail("--isolate needs an absolute pid file, got", val);
            }
            pid_file = val;
        } else if (!strcmp(opt, "--bind") || !strcmp(opt, "--bind-rw")) {
            add_bind(val, !strcmp(opt, "--bind-rw"), 0);
        } else if (!strcmp(opt, "--cap")) {
            static const struct {
                const char *name;
                int cap;
            } keepable[] = {{"dac_read_search", CAP_DAC_READ_SEARCH}, {"dac_override", CAP_DAC_OVERRIDE},
                            {"chown", CAP_CHOWN}, {"fowner", CAP_FOWNER}, {"fsetid", CAP_FSETID}};
            size_t k = 0;
            while (k < sizeof(keepable) / sizeof(keepable[0]) && strcmp(val, keepable[k].name))
                k++;
            if (k == sizeof(keepable) / sizeof(keepable[0])) {
                errno = 0;
                fail("--cap keeps dac_read_search, dac_override, chown, fowner or fsetid, got", val);
            }
            kept |= 1u << keepable[k].cap;
        } else if (!strcmp(opt, "--ptracer")) {
            ptracer = strcmp(val, "any") ? number(val, 1, 0x7fffffff) : -1;
        } else if (!strcmp(opt, "--group")) {
            if (ngroups == MAX_GROUPS) {
                errno = 0;
                fail("too many --group", val);
            }
            groups[ngroups++] = (gid_t)number(val, 0, 0x7fffffff);
        } else {
            if (nslots == MAX_FDS) {
                errno = 0;
                fail("too many descriptors at", val);
            }
            int n;
            const char *rest = target(val, &n);
            for (int k = 0; k < nslots; k++) {
                if (slots[k].target == n) {
                    errno = 0;
                    fail("descriptor given twice:", val);
                }
            }
            int fd;
            if (!strcmp(opt, "--open"))
                fd = open_file(rest);
            else if (!strcmp(opt, "--tap"))
                fd = make_tap(rest);
            else if (!strcmp(opt, "--listen"))
                fd = listen_on(rest);
            else if (!strcmp(opt, "--connect"))
                fd = -1; /* the peer learns its pid from the connection (SO_PEERCRED): made after the fork */
            else {
                errno = 0;
                fail("unknown option", opt);
            }
            slots[nslots].target = n;
            slots[nslots].fd = fd;
            slots[nslots].connect = fd < 0 ? rest : NULL;
            nslots++;
        }
    }
    if (uid < 0 || gid < 0 || i + 1 >= argc) {
        errno = 0;
        fail("usage: rund-jail --uid U --gid G [options] -- HYPERVISOR ARGS...", NULL);
    }
    if (nbinds && !pid_file) {
        errno = 0;
        fail("--bind needs --isolate", NULL);
    }
    if (pid_file && pivot_dir) {
        errno = 0;
        fail("--isolate and --pivot exclude each other", NULL);
    }
    if (pid_file && ptracer > 0) {
        errno = 0;
        fail("--isolate: a PID cannot be named from the hypervisor's own PID namespace; say --ptracer any", NULL);
    }
    int vmdir = -1;
    if (pid_file) {
        add_bind("/usr", 0, 0);
        add_system_dirs();
        static const char *devices[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"};
        for (size_t k = 0; k < sizeof(devices) / sizeof(devices[0]); k++)
            add_bind(devices[k], 1, 1);
        int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (cwd < 0)
            fail("open the working directory", NULL);
        vmdir = above(cwd, "the working directory");
    }
    /* Each prepared descriptor onto its number, without close-on-exec; nothing else passes. */
    for (int k = 0; k < nslots; k++) {
        if (slots[k].fd >= 0 && dup2(slots[k].fd, slots[k].target) < 0)
            fail("dup2", NULL);
    }
    for (int fd = 3; fd < FIRST_FREE + MAX_FDS + 64; fd++) {
        int keep = 0;
        for (int k = 0; k < nslots; k++)
            keep |= slots[k].target == fd;
        for (int k = 0; k < nbinds; k++)
            keep |= binds[k].fd == fd;
        keep |= fd == vmdir;
        if (!keep)
            close(fd);
    }
    if (syscall(SYS_close_range, FIRST_FREE + MAX_FDS + 64, ~0U, 0) < 0 && errno != ENOSYS)
        fail("close_range", NULL);
    int program = -1;
    if (pivot_dir) {
        program = open(argv[i + 1], O_PATH | O_CLOEXEC);
        if (program < 0)
            fail("open", argv[i + 1]);
    }
    if (pid_file)
        fork_into_own_pid_namespace(pid_file, uid, gid);
    /* Connections last before the new root, from the process that execs: the back-end
     * reads its peer's pid. */
    for (int k = 0; k < nslots; k++) {
        if (slots[k].connect) {
            int fd = connect_to(slots[k].connect);
            if (dup2(fd, slots[k].target) < 0)
                fail("dup2", slots[k].connect);
            close(fd);
        }
    }
    if (pivot_dir)
        pivot(pivot_dir);
    if (pid_file)
        enter_own_root(vmdir);
    if (ptracer && prctl(PR_SET_PTRACER, ptracer < 0 ? PR_SET_PTRACER_ANY : (unsigned long)ptracer, 0, 0, 0) < 0 &&
        errno != EINVAL)
        fail("declare the ptracer", NULL);

    /* Drop every privilege, in the order that leaves no window. */
    drop_privileges(uid, gid, groups, ngroups, kept);
    if (program >= 0) {
        extern char **environ;
        syscall(SYS_execveat, program, "", argv + i + 1, environ, AT_EMPTY_PATH);
    } else {
        execv(argv[i + 1], argv + i + 1);
    }
    fail("exec", argv[i + 1]);
    return 126;
}
