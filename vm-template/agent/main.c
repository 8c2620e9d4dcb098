/* rund-agent main: sets up the guest as PID 1, finds the virtio-serial port
 * "rund.agent", and serves the Agent API on it over ttrpc, one thread per call. The
 * host may disconnect and reconnect (a template clone gets a new host socket): the agent
 * then drops any half-read frame and serves the next connection. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "ttrpc.h"
#include "methods.h"

#define PORT_NAME "rund.agent"
#define MAX_CALLS 256
#define SERVICE "rund.agent.v1.Agent"

static int g_port = -1;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_calls_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_calls;
/* Stream ids of the calls in flight (guarded by g_calls_lock). A stream id may not be
 * reused while its call runs. The agent does not insist that ids increase, as the Java
 * library's server does: it cannot always tell when the host reconnected (a quick
 * reconnect is invisible through virtio-serial), and a new host connection starts its
 * ids afresh. */
static uint32_t g_active[MAX_CALLS];
/* Bumped at every host reconnect: answers of calls from an earlier connection are dropped. */
static volatile unsigned g_generation;

void alog(const char *fmt, ...)
{
    /* Through the kernel log, at "notice": printk writes the serial console itself,
     * while user-space writes to the console's tty were seen to stall on microvm. Boot
     * with loglevel=6 to see these lines and not the kernel's informational ones. */
    char line[1024];
    int n = snprintf(line, sizeof(line), "<5>rund-agent: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 1)
        len = sizeof(line) - 1;
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, line, len);
        close(fd);
    }
}

int fail(struct fault *f, int code, const char *fmt, ...)
{
    if (f->code == CODE_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->message, sizeof(f->message), fmt, ap);
        va_end(ap);
        f->code = code;
    }
    return -1;
}

void steps_enter(struct steps *s, const char *name)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    if (s->current && s->n < MAX_STEPS) {
        s->name[s->n] = s->current;
        s->micros[s->n++] = now - s->since;
    }
    s->current = name;
    s->since = now;
}

int check_id(struct fault *f, const char *what, const char *id, bool may_be_empty)
{
    size_t n = strlen(id);
    if (n == 0)
        return may_be_empty ? 0 : fail(f, CODE_INVALID_ARGUMENT, "%s is empty", what);
    if (n > MAX_ID_LEN)
        return fail(f, CODE_INVALID_ARGUMENT, "%s of %zu characters is longer than %d", what, n, MAX_ID_LEN);
    if (id[0] == '.')
        return fail(f, CODE_INVALID_ARGUMENT, "%s %.64s starts with '.'", what, id);
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '.'))
            return fail(f, CODE_INVALID_ARGUMENT, "%s %.64s has a character outside [A-Za-z0-9_.-]", what, id);
    }
    return 0;
}

int check_path(struct fault *f, const char *what, const char *path)
{
    size_t n = strlen(path);
    if (n == 0 || path[0] != '/')
        return fail(f, CODE_INVALID_ARGUMENT, "%s %.200s is not an absolute path", what, path);
    if (n > 1024)
        return fail(f, CODE_INVALID_ARGUMENT, "%s of %zu bytes is too long", what, n);
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2) {
        bool starts = p == path || p[-1] == '/';
        bool ends = p[2] == 0 || p[2] == '/';
        if (starts && ends)
            return fail(f, CODE_INVALID_ARGUMENT, "%s %.200s contains '..'", what, path);
    }
    return 0;
}

int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- PID 1 ------------------------------------------------------------------------ */

static void mount_or_log(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) && errno != EBUSY)
        alog("mount %s on %s: %s", type, dst, strerror(errno));
}

static void setup_guest(void)
{
    mount_or_log("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_or_log("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_log("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_log("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    mount_or_log("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    /* favordynmods: moving a process between cgroups (each container's init and exec joins
     * its cgroup) then takes no RCU grace period, ~10 ms each under TCG; forks and exits pay
     * a little instead. A mount of cgroup2 from the guest's own cgroup namespace without it
     * would turn it off again: a container's is made in a namespace of its own, or none. */
    mount_or_log("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "favordynmods");
    /* Containers get cpu, memory, pids and io limits; the agent stays in the root group. */
    int fd = open("/sys/fs/cgroup/cgroup.subtree_control", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        const char *ctl[] = {"+cpu", "+memory", "+pids", "+io", "+cpuset"};
        for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++)
            if (write(fd, ctl[i], strlen(ctl[i])) < 0)
                alog("enable controller %s: %s", ctl[i], strerror(errno));
        close(fd);
    }
    mkdir("/run/rund", 0700);
    net_loopback_up();
}

/* pivot_root(2) refuses to move the initial ramfs, and containers are entered with
 * pivot_root; so PID 1 first moves itself onto a tmpfs (switch_root, as an initramfs'
 * /init usually does before starting the real system) and executes itself again there.
 * The agent's file in the ramfs is removed so its memory is not held twice. */
static void leave_initramfs(char **argv)
{
    struct statfs fs;
    if (statfs("/", &fs) || (fs.f_type != RAMFS_MAGIC && fs.f_type != TMPFS_MAGIC))
        return;
    if (access("/.rund-root", F_OK) == 0)
        return; /* already on our tmpfs */
    if (mkdir("/newroot", 0755) && errno != EEXIST)
        return;
    if (mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")) {
        alog("mount the agent's tmpfs root: %s", strerror(errno));
        return;
    }
    static const char *dirs[] = {"/newroot/dev", "/newroot/proc", "/newroot/sys", "/newroot/run", "/newroot/tmp"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        mkdir(dirs[i], 0755);
    chmod("/newroot/tmp", 01777);
    int in = open("/init", O_RDONLY | O_CLOEXEC);
    int out = open("/newroot/init", O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    char buf[65536];
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            break;
    close(in);
    close(out);
    int marker = open("/newroot/.rund-root", O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
    close(marker);
    unlink("/init");
    if (chdir("/newroot") || mount(".", "/", NULL, MS_MOVE, NULL) || chroot(".") || chdir("/")) {
        alog("switch to the agent's tmpfs root: %s", strerror(errno));
        return;
    }
    execv("/init", argv);
    alog("re-exec /init: %s", strerror(errno));
}

/* The /dev node of the virtio-serial port whose name is PORT_NAME, or -1. */
static int open_port(void)
{
    for (int tries = 0; tries < 500; tries++) {
        DIR *d = opendir("/sys/class/virtio-ports");
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (e->d_name[0] == '.')
                    continue;
                char path[300], name[64] = {0};
                snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                    continue;
                ssize_t n = read(fd, name, sizeof(name) - 1);
                close(fd);
                while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == 0))
                    name[--n] = 0;
                if (strcmp(name, PORT_NAME) == 0) {
                    snprintf(path, sizeof(path), "/dev/%s", e->d_name);
                    closedir(d);
                    int port = open(path, O_RDWR | O_CLOEXEC);
                    if (port < 0)
                        alog("open %s: %s", path, strerror(errno));
                    return port;
                }
            }
            closedir(d);
        }
        usleep(10000); /* the device may still be probing */
    }
    return -1;
}

/* ---- answering ---------------------------------------------------------------------- */

static void send_response(unsigned generation, uint32_t stream_id, int code, const char *message,
                          const uint8_t *payload, size_t payload_len)
{
    uint8_t *buf;
    size_t len = ttrpc_encode_response(&buf, code, message, payload, payload_len);
    if (len == 0)
        return;
    if (len > TTRPC_MAX_PAYLOAD) {
        free(buf);
        len = ttrpc_encode_response(&buf, CODE_RESOURCE_EXHAUSTED, "response exceeds the maximum message size", NULL, 0);
        if (len == 0)
            return;
    }
    ttrpc_put_header(buf, (uint32_t)len, stream_id, TTRPC_TYPE_RESPONSE, 0);
    pthread_mutex_lock(&g_write_lock);
    if (generation == g_generation) {
        size_t off = 0, total = TTRPC_HEADER_LEN + len;
        while (off < total) {
            ssize_t w = write(g_port, buf + off, total - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break; /* the host went away; the next connection starts afresh */
            off += (size_t)w;
        }
    }
    pthread_mutex_unlock(&g_write_lock);
    free(buf);
}

/* ---- calls ---------------------------------------------------------------------------- */

struct call {
    unsigned generation;
    uint32_t stream_id;
    const struct method *method;
    uint8_t *payload;
    size_t payload_len;
};

/* The connection whose call this thread runs. */
static __thread unsigned t_generation;

bool call_abandoned(void)
{
    return t_generation != g_generation;
}

static void *run_call(void *arg)
{
    struct call *c = arg;
    t_generation = c->generation;
    struct fault f = {0};
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (method_invoke(c->method, c->payload, c->payload_len, &out, &out_len, &f) == 0)
        send_response(c->generation, c->stream_id, CODE_OK, NULL, out, out_len);
    else
        send_response(c->generation, c->stream_id, f.code ? f.code : CODE_UNKNOWN, f.message, NULL, 0);
    free(out);
    free(c->payload);
    pthread_mutex_lock(&g_calls_lock);
    for (int i = 0; i < MAX_CALLS; i++)
        if (g_active[i] == c->stream_id) {
            g_active[i] = 0;
            break;
        }
    g_calls--;
    pthread_mutex_unlock(&g_calls_lock);
    free(c);
    return NULL;
}

static void dispatch(unsigned generation, uint32_t stream_id, const uint8_t *frame, size_t len)
{
    char err[256];
    struct ttrpc_request req;
    if (ttrpc_decode_request(frame, len, &req, err, sizeof(err))) {
        send_response(generation, stream_id, CODE_INVALID_ARGUMENT, err, NULL, 0);
        return;
    }
    if (strcmp(req.service, SERVICE) != 0) {
        snprintf(err, sizeof(err), "service %.100s", req.service);
        send_response(generation, stream_id, CODE_UNIMPLEMENTED, err, NULL, 0);
        return;
    }
    const struct method *m = method_find(req.method);
    if (!m) {
        snprintf(err, sizeof(err), "method %s/%.60s", SERVICE, req.method);
        send_response(generation, stream_id, CODE_UNIMPLEMENTED, err, NULL, 0);
        return;
    }
    pthread_mutex_lock(&g_calls_lock);
    bool busy = false;
    for (int i = 0; i < MAX_CALLS; i++)
        busy |= g_active[i] == stream_id;
    bool room = !busy && g_calls < MAX_CALLS;
    if (room) {
        g_calls++;
        for (int i = 0; i < MAX_CALLS; i++)
            if (g_active[i] == 0) {
                g_active[i] = stream_id;
                break;
            }
    }
    pthread_mutex_unlock(&g_calls_lock);
    if (busy) {
        snprintf(err, sizeof(err), "stream id %u is in use by a call in flight", stream_id);
        send_response(generation, stream_id, CODE_INVALID_ARGUMENT, err, NULL, 0);
        return;
    }
    if (!room) {
        send_response(generation, stream_id, CODE_RESOURCE_EXHAUSTED, "the agent is serving its maximum of calls", NULL,
                      0);
        return;
    }
    struct call *c = calloc(1, sizeof(*c));
    uint8_t *payload = malloc(req.payload_len ? req.payload_len : 1);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (c && payload) {
        memcpy(payload, req.payload, req.payload_len);
        *c = (struct call){generation, stream_id, m, payload, req.payload_len};
        if (pthread_create(&t, &attr, run_call, c) == 0) {
            pthread_attr_destroy(&attr);
            return;
        }
    }
    pthread_attr_destroy(&attr);
    free(c);
    free(payload);
    pthread_mutex_lock(&g_calls_lock);
    for (int i = 0; i < MAX_CALLS; i++)
        if (g_active[i] == stream_id) {
            g_active[i] = 0;
            break;
        }
    g_calls--;
    pthread_mutex_unlock(&g_calls_lock);
    send_response(generation, stream_id, CODE_RESOURCE_EXHAUSTED, "cannot start a thread for the call", NULL, 0);
}

/* ---- the connection --------------------------------------------------------------- */

/* Reads exactly n bytes; 0 on success, -1 when the host went away (or the port failed). */
static int read_full(uint8_t *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t r = read(g_port, buf + off, n - off);
        if (r > 0) {
            off += (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Waits until the host is connected again: a read of a disconnected port returns 0 at
 * once, and poll reports it readable, so the only way to wait is to look again later. */
static void wait_for_host(void)
{
    for (;;) {
        struct pollfd p = {.fd = g_port, .events = POLLIN};
        if (poll(&p, 1, -1) > 0 && !(p.revents & POLLHUP))
            return;
        usleep(10000);
    }
}

static void serve(void)
{
    static uint8_t discard[64 * 1024];
    for (;;) {
        unsigned generation = g_generation;
        alog("serving the host (connection %u)", generation);
        for (;;) {
            uint8_t h[TTRPC_HEADER_LEN];
            if (read_full(h, sizeof(h)))
                break;
            uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
            uint32_t sid = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
            uint8_t type = h[8];
            if (len > TTRPC_MAX_PAYLOAD) {
                /* Skip it in step, answer, and keep the connection. */
                uint32_t left = len;
                int broken = 0;
                while (left && !broken) {
                    uint32_t n = left < sizeof(discard) ? left : sizeof(discard);
                    broken = read_full(discard, n);
                    left -= n;
                }
                if (broken)
                    break;
                if (type == TTRPC_TYPE_REQUEST) {
                    char msg[128];
                    snprintf(msg, sizeof(msg), "message length %u exceeds the maximum message size of %u", len,
                             TTRPC_MAX_PAYLOAD);
                    send_response(generation, sid, CODE_RESOURCE_EXHAUSTED, msg, NULL, 0);
                }
                continue;
            }
            uint8_t *frame = malloc(len ? len : 1);
            if (!frame || read_full(frame, len)) {
                free(frame);
                break;
            }
            if (type != TTRPC_TYPE_REQUEST) {
                free(frame);
                continue;
            }
            if ((sid & 1) == 0) {
                char msg[96];
                snprintf(msg, sizeof(msg), "stream id %u is even: client-initiated streams must be odd", sid);
                send_response(generation, sid, CODE_INVALID_ARGUMENT, msg, NULL, 0);
            } else {
                dispatch(generation, sid, frame, len);
            }
            free(frame);
        }
        /* The host left, or sent a frame that ended early: answers still in flight
         * belong to that connection and are dropped. */
        pthread_mutex_lock(&g_write_lock);
        g_generation++;
        pthread_mutex_unlock(&g_write_lock);
        procs_host_left();
        alog("host disconnected; waiting for it to come back");
        wait_for_host();
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    if (getpid() == 1) {
        leave_initramfs(argv);
        setup_guest();
    }
    /* Not dumpable, so neither is any child it forks, from its first instruction until its
     * execve (which makes a process dumpable again as its own): between fork and exec a child
     * holds the agent's descriptors, and once it has dropped to a container's capabilities
     * a root process of the same pod could otherwise PTRACE_SEIZE it there (the class of
     * runc's CVE-2016-9962). Only CAP_SYS_PTRACE attaches to a process that is not dumpable. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        alog("make the agent not dumpable: %s", strerror(errno));
    /* Calls run on threads; children are reaped by one thread (process.c). SIGPIPE would
     * kill PID 1 when a process closes its stdin early. */
    signal(SIGPIPE, SIG_IGN);
    procs_init();
    disks_learn();
    g_port = open_port();
    if (g_port < 0) {
        alog("no virtio-serial port named %s; nothing to serve", PORT_NAME);
        for (;;)
            pause();
    }
    serve();
    return 0;
}
