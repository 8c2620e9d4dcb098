/* rund-helper: a sandbox's helper process; see helper.h.
 *
 *   rund-jail --uid U --gid G --pivot SHARE --cap dac_read_search \
 *             --listen 3=VIRTIOFS_SOCKET --listen 4=CONTROL_SOCKET -- \
 *   rund-helper --name NAME [--writable] [--nodes N] [--handles N] [--path-bytes N]
 *
 * rund-jail starts it as the uid its VM will run as, in a mount namespace whose root is the
 * sandbox's share, with the two listening sockets on descriptors 3 and 4 and one
 * capability, CAP_DAC_READ_SEARCH (an image's files are readable by the guest's root
 * whatever their mode; a back-end that could not read them would break images).
 * With --writable it serves the sandbox's other share, the host directories its containers
 * bind read-write, and writes as a container's root does under runc: it creates files
 * owned by the guest caller's uid and gid, among the owners the daemon allowed, never
 * with a set-ID bit, and may also hold CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER
 * (rund-jail --cap each; not CAP_FSETID), over a namespace that holds those directories
 * and nothing else. Here it checks that it is so confined, makes itself undumpable (its VM, the same uid, cannot
 * ptrace it), caps its descriptors, core dumps and log by rlimits, installs its seccomp
 * allow-list and serves:
 *   - descriptor 3: vhost-user, one front-end in its life (the VM's QEMU); its memory is
 *     reached with process_vm_readv/writev, pinned by a second seccomp filter to that
 *     process; when it goes, the helper exits (status 0). A helper no front-end reached
 *     within --connect-timeout seconds (default 300: its daemon died between starting it
 *     and launching the VM) exits too, so none outlives its sandbox;
 *   - descriptor 4: the daemon's control connection, one line per request:
 *     "stats" -> "ok mounted=.. nodes=.. handles=.. ... front_end=PID ...";
 *     "owners any" or "owners UID GID [GID]..." -> "ok": whom a writable share's guest may
 *     give files to, added to those allowed before (the pod's specs, as they come).
 * Any failure before serving exits 126 with the reason on stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

#define VHOST_FD 3
#define CONTROL_FD 4
/* Bytes of log: counted here, and for a read-only share's helper, which writes no other
 * file, also by RLIMIT_FSIZE (a writable share's writes files of any size). */
#define LOG_LIMIT (1 << 20)

static size_t logged;

static const char *name = "?";

void logf_(const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ rund-helper %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, name);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (logged + (size_t)n > LOG_LIMIT)
        return; /* the log stops */
    logged += (size_t)n;
    ssize_t ignored = write(2, line, (size_t)n);
    (void)ignored;
}

bool log_every(uint64_t count)
{
    return count == 1 || count % 1000 == 0;
}

static void die(const char *what)
{
    LOG("%s: %s", what, errno ? strerror(errno) : "invalid");
    exit(126);
}

static uint64_t number(const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !*s || *end || *s == '-' || v < min || v > max) {
        errno = 0;
        LOG("bad number %s: %llu..%llu expected", s, (unsigned long long)min, (unsigned long long)max);
        exit(126);
    }
    return v;
}

/* Keeps `allowed` at most (CAP_DAC_READ_SEARCH; for a writable share also those a write as
 * the guest's root needs): effective and permitted nothing else, inheritable and ambient
 * nothing; fails if the process is root or may gain privileges. */
static void check_confined(uint32_t allowed)
{
    if (getuid() == 0 || geteuid() == 0) {
        errno = 0;
        die("runs as root; it is started by rund-jail as its sandbox's uid");
    }
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
        errno = 0;
        die("no_new_privs is not set");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        die("clear ambient capabilities");
    struct __user_cap_header_struct head = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &head, data) < 0)
        die("capget");
    uint32_t keep = data[0].permitted & allowed;
    data[0].effective = data[0].permitted = keep;
    data[0].inheritable = 0;
    data[1].effective = data[1].permitted = data[1].inheritable = 0;
    if (syscall(SYS_capset, &head, data) < 0)
        die("capset");
    if (syscall(SYS_capget, &head, data) < 0)
        die("capget");
    if ((data[0].effective | data[0].permitted) & ~allowed || data[1].effective || data[1].permitted
        || data[0].inheritable || data[1].inheritable) {
        errno = 0;
        die("capabilities beyond those it may hold remain");
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        die("undumpable");
}

static void limit(int resource, rlim_t value, const char *what)
{
    struct rlimit r = {value, value};
    if (setrlimit(resource, &r) < 0)
        die(what);
}

static void watch(int epfd, int fd, int tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl");
}

/* One control request line; the answer is one line. */
static bool control(int fd)
{
    char req[1024];
    ssize_t n = read(fd, req, sizeof(req) - 1);
    if (n <= 0)
        return false;
    req[n] = 0;
    char *nl = strchr(req, '\n');
    if (!nl)
        return false; /* a line in one read, or none */
    *nl = 0;
    char out[512];
    if (!strcmp(req, "stats")) {
        char f[256], v[128];
        fuse_stats(f, sizeof(f));
        vhost_stats(v, sizeof(v));
        snprintf(out, sizeof(out), "ok %s %s\n", f, v);
    } else if (!strncmp(req, "owners ", 7)) {
        if (fuse_allow_owners(req + 7))
            snprintf(out, sizeof(out), "error owners: a writable share's, \"any\" or \"UID GID [GID]...\"\n");
        else
            snprintf(out, sizeof(out), "ok\n");
    } else {
        snprintf(out, sizeof(out), "error unknown request\n");
    }
    return send(fd, out, strlen(out), MSG_NOSIGNAL) == (ssize_t)strlen(out);
}

int main(int argc, char **argv)
{
    struct fuse_limits limits = {.nodes = 1u << 16, .handles = 512, .path_bytes = 32u << 20};
    uint64_t connect_timeout = 300;
    bool writable = false;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--writable")) {
            writable = true;
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            errno = 0;
            LOG("missing value for %s", argv[i]);
            return 126;
        }
        const char *v = argv[i + 1];
        if (!strcmp(argv[i], "--name"))
            name = v;
        else if (!strcmp(argv[i], "--nodes"))
            limits.nodes = (uint32_t)number(v, 1, 1u << 22);
        else if (!strcmp(argv[i], "--handles"))
            limits.handles = (uint32_t)number(v, 1, 1u << 16);
        else if (!strcmp(argv[i], "--path-bytes"))
            limits.path_bytes = number(v, 4096, 1ull << 32);
        else if (!strcmp(argv[i], "--connect-timeout"))
            connect_timeout = number(v, 1, 86400);
        else {
            LOG("unknown option %s; usage: rund-helper --name NAME [--writable] [--nodes N] [--handles N] [--path-bytes N] [--connect-timeout S]",
                argv[i]);
            return 126;
        }
    }
    uint32_t allowed = 1u << CAP_DAC_READ_SEARCH;
    if (writable) {
        allowed |= 1u << CAP_DAC_OVERRIDE | 1u << CAP_CHOWN | 1u << CAP_FOWNER;
        umask(0); /* the guest's kernel applied its caller's umask to every mode it sends */
    }
    check_confined(allowed);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    limit(RLIMIT_CORE, 0, "no core dumps");
    if (!writable)
        limit(RLIMIT_FSIZE, LOG_LIMIT, "cap the log");
    /* Every descriptor the guest can make us hold is a handle; the rest are a few of ours. */
    limit(RLIMIT_NOFILE, limits.handles + 32, "cap descriptors");
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        die("open the share (the root)");
    int e = fuse_init_root(root, limits, writable);
    if (e) {
        errno = -e;
        die("set up the file system");
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    watch(epfd, VHOST_FD, TAG_LISTEN);
    watch(epfd, CONTROL_FD, TAG_CTL_LISTEN);
    vhost_init(epfd, 0);
    /* Logged before the allow-list: glibc's first gmtime_r looks for time zone files. */
    LOG("serving its root %s, nodes<=%u handles<=%u", writable ? "read-write" : "read-only", limits.nodes,
        limits.handles);
    if ((e = seccomp_allow_list(writable))) {
        errno = -e;
        die("install the seccomp allow-list");
    }
    int conn = -1, ctl = -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t deadline_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + (int64_t)connect_timeout * 1000;
    for (;;) {
        struct epoll_event evs[8];
        int wait_ms = -1;
        if (conn < 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t left = deadline_ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
            wait_ms = left > 0 ? (int)left : 0;
        }
        int n = epoll_wait(epfd, evs, 8, wait_ms);
        if (n == 0 && conn < 0) {
            LOG("no front-end connected in %llu s; exiting", (unsigned long long)connect_timeout);
            return 0;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int tag = (int)evs[i].data.u64;
            if (tag == TAG_LISTEN) {
                int c = accept4(VHOST_FD, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                struct ucred cred;
                socklen_t len = sizeof(cred);
                if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0) {
                    LOG("front-end's process unknown: %s", strerror(errno));
                    close(c);
                    continue;
                }
                /* One front-end in this process's life: no other may connect, and only its
                 * memory may be reached. */
                epoll_ctl(epfd, EPOLL_CTL_DEL, VHOST_FD, NULL);
                close(VHOST_FD);
                if ((e = seccomp_pin_peer(cred.pid))) {
                    errno = -e;
                    die("pin the front-end's process");
                }
                vhost_init(epfd, cred.pid);
                conn = c;
                watch(epfd, conn, TAG_CONN);
                LOG("front-end pid %d connected", (int)cred.pid);
            } else if (tag == TAG_CONN) {
                int r = vhost_message(conn);
                if (r <= 0) {
                    LOG(r == 0 ? "front-end closed the connection; exiting" : "dropped the front-end; exiting");
                    return r == 0 ? 0 : 1;
                }
            } else if (tag >= TAG_KICK0 && tag < TAG_KICK0 + QUEUES) {
                vhost_kicked(tag - TAG_KICK0);
            } else if (tag == TAG_CTL_LISTEN) {
                int c = accept4(CONTROL_FD, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                if (ctl >= 0) {
                    epoll_ctl(epfd, EPOLL_CTL_DEL, ctl, NULL);
                    close(ctl); /* the newest daemon's connection wins */
                }
                ctl = c;
                watch(epfd, ctl, TAG_CTL);
            } else if (tag == TAG_CTL) {
                if (!control(ctl)) {
                    epoll_ctl(epfd, EPOLL_CTL_DEL, ctl, NULL);
                    close(ctl);
                    ctl = -1;
                }
            }
        }
    }
}
