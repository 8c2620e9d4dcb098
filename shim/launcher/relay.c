/* The relay: what containerd sees as a rund task's shim. One per task endpoint (a
 * sandbox, with the containers of its pod), forked by the launcher's `start`; it outlives
 * the daemon, so a daemon that is killed or upgraded costs containerd nothing.
 *
 * It listens on the endpoint's socket and holds containerd's connections. Each has a
 * link to the daemon (relay.sock beside the control socket, hello "conn NAME"), and
 * ttrpc frames are copied both ways whole. The relay reads only frame headers, each
 * request's method and deadline, and each answer's status code: it keeps every request
 * until its answer has passed, and when the daemon goes it
 *   - sends the requests that are safe to repeat (may_repeat says which and why) again to
 *     the next daemon, marked with the metadata "rund-replay" so that it answers from what
 *     it knows of the first (a Delete already done answers as that Delete did); answers
 *     the others UNAVAILABLE (their effect is unknown);
 *   - holds new requests until a daemon is back, or answers DEADLINE_EXCEEDED when the
 *     request's own deadline passes first: the mere absence of a daemon is never an error;
 *   - starts a daemon (as the launcher does) at once, unless one holds the node's lock or
 *     is being started (daemon.c), and again after 1, 2, 4 .. 10 s while none answers.
 * A daemon that is stopping answers a request it will not run ABORTED: the relay keeps it
 * for the next daemon and sends that link nothing more (ABORTED from a daemon means
 * exactly that; the daemon never answers ABORTED otherwise).
 * A control link (hello "ctl NAME PID", answered "ok" or "unknown") carries the daemon's
 * orders, one line each:
 *   hold KEY r|w PATH  keep a fifo open (read end of a stdin fifo, both ends of an output
 *                      fifo) so that containerd's side sees no end of stream and no EPIPE
 *                      while no daemon holds it
 *   drop KEY           close it (the process's output is done)
 *   quit               the endpoint is closed: finish passing answers on, then exit
 * "unknown" (the daemon has no such endpoint any more) answers every request NOT_FOUND
 * (a Shutdown OK: what it asked for is so) and exits. The relay says one thing on the
 * control link after its hello: "idle" once every
 * containerd connection it had has closed (containerd gave the task up: after a failed
 * create, containerd 1.6 only closes its connection), again to each new daemon while that
 * holds; the daemon closes an endpoint that serves no container then. The relay runs as root, as the launcher does, and parses nothing a guest wrote. */
#define _GNU_SOURCE
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "ttrpc.h"

#define MAX_CONNS 64
#define MAX_REQS 256          /* requests in flight per connection; past it, reading waits */
#define MAX_QUEUED (8u << 20) /* bytes queued towards one side; past it, reading the other waits */
#define MAX_HOLDS 4096
#define MAX_LINE 4200
#define RETRY_MS 100
#define DOWN_RETRY_MS 20      /* how often a relay without a daemon tries its socket */
#define START_FIRST_GAP_MS 1000
#define START_MAX_GAP_MS 10000
#define QUIT_GRACE_MS 5000
#define HELLO_MS 5000         /* a daemon that takes a control link answers its hello at once */

static const char *g_name;
static char g_relay_socket[108];

static void rlog(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rund-relay %s: ", g_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- bytes queued towards one side ------------------------------------------------------ */

struct queue {
    uint8_t *data;
    size_t off, len, cap;
};

static int queue_put(struct queue *q, const uint8_t *p, size_t n)
{
    if (q->off && q->off == q->len)
        q->off = q->len = 0;
    if (q->len + n > q->cap) {
        if (q->off) {
            memmove(q->data, q->data + q->off, q->len - q->off);
            q->len -= q->off;
            q->off = 0;
        }
        if (q->len + n > q->cap) {
            size_t cap = q->cap ? q->cap : 4096;
            while (cap < q->len + n)
                cap *= 2;
            uint8_t *d = realloc(q->data, cap);
            if (!d)
                return -1;
            q->data = d;
            q->cap = cap;
        }
    }
    memcpy(q->data + q->len, p, n);
    q->len += n;
    return 0;
}

static size_t queued(const struct queue *q)
{
    return q->len - q->off;
}

/* One non-blocking send or recv: bytes moved, 0 for "not now", -1 when the peer is gone. */
static ssize_t io_some(int fd, void *buf, size_t n, int out)
{
    for (;;) {
        ssize_t r = out ? send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, buf, n, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return r <= 0 ? -1 : r;
    }
}

/* Writes what it can; -1 when the peer is gone. */
static int queue_flush(struct queue *q, int fd)
{
    while (queued(q)) {
        ssize_t w = io_some(fd, q->data + q->off, queued(q), 1);
        if (w == 0)
            return 0;
        if (w < 0)
            return -1;
        q->off += (size_t)w;
    }
    q->off = q->len = 0;
    return 0;
}

static void queue_free(struct queue *q)
{
    free(q->data);
    *q = (struct queue){0};
}

/* ---- frames read from one side ---------------------------------------------------------- */

struct reader {
    uint8_t head[TTRPC_HEADER_LEN];
    size_t head_got;
    uint8_t *frame; /* header and payload */
    size_t len, got;
};

/* Reads what is there; returns 1 with a whole frame in *out (the caller owns it), 0 for
 * "not yet", -1 when the peer is gone or sent a frame over the limit. */
static int reader_step(struct reader *r, int fd, uint8_t **out, size_t *out_len)
{
    for (;;) {
        if (r->head_got < TTRPC_HEADER_LEN) {
            ssize_t n = io_some(fd, r->head + r->head_got, TTRPC_HEADER_LEN - r->head_got, 0);
            if (n <= 0)
                return (int)n;
            r->head_got += (size_t)n;
            if (r->head_got < TTRPC_HEADER_LEN)
                continue;
            uint32_t plen = ttrpc_header_length(r->head);
            if (plen > TTRPC_MAX_PAYLOAD)
                return -1;
            r->len = TTRPC_HEADER_LEN + plen;
            r->frame = malloc(r->len);
            if (!r->frame)
                return -1;
            memcpy(r->frame, r->head, TTRPC_HEADER_LEN);
            r->got = TTRPC_HEADER_LEN;
        }
        if (r->got < r->len) {
            ssize_t n = io_some(fd, r->frame + r->got, r->len - r->got, 0);
            if (n <= 0)
                return (int)n;
            r->got += (size_t)n;
            if (r->got < r->len)
                continue;
        }
        *out = r->frame;
        *out_len = r->len;
        r->frame = NULL;
        r->head_got = r->len = r->got = 0;
        return 1;
    }
}

static void reader_reset(struct reader *r)
{
    free(r->frame);
    *r = (struct reader){0};
}

/* ---- containerd's connections ----------------------------------------------------------- */

struct request {
    uint32_t sid;
    uint8_t *frame;
    size_t len;
    int64_t deadline; /* monotonic ms; 0 for none */
    int again;        /* may be sent to the next daemon if this one went without answering */
    int sent;         /* the current daemon link has it */
    int replay;       /* a daemon had it and went without answering: marked when sent again */
    char method[64];
};

struct conn {
    int cfd, dfd; /* containerd's; the daemon link (-1: none) */
    struct reader from_c, from_d;
    struct queue to_c, to_d;
    struct request reqs[MAX_REQS];
    int nreqs;
    int64_t reopen_at; /* a daemon link that closed alone is opened again from then */
    int stopping;      /* the linked daemon is stopping (it answered ABORTED): send it nothing more */
};

static struct conn *g_conns[MAX_CONNS];
static int g_listen = -1;
static int g_ctl = -1;       /* the control link; up once answered "ok" */
static int g_up;             /* a daemon answered the control link's hello */
static int64_t g_hello_by;   /* a control link not answered by then is dropped and tried again */
static char g_ctl_in[MAX_LINE];
static size_t g_ctl_got;
static int g_quitting;
static int64_t g_quit_at;
static int64_t g_next_start; /* a daemon may be started from then (0: at once) */
static int64_t g_start_gap;  /* the wait after the next start, doubling while none answers */
static int g_last_start = -2; /* what daemon_start said last, for the log */
static int64_t g_retry_at;
static int g_nconns;    /* containerd's connections open */
static int g_had_conns; /* containerd connected at least once */
static int g_idle_told; /* the current daemon has been told "idle" */

struct hold {
    char key[80];
    int fd;
};
static struct hold g_holds[MAX_HOLDS];
static int g_nholds;

/* Requests that are safe to send again to the next daemon when the one that had them went
 * without answering. Each gives the same outcome whether it ran once or twice, and the
 * next daemon answers a repeat from what it adopted (it sees "rund-replay"):
 *   State, Wait, Pids, Stats, Connect   reads;
 *   Delete      a task or exec already deleted is answered as that delete was (the daemon
 *               keeps its answer); one not yet deleted is deleted;
 *   Kill        a signal is a request that a process be signalled, and standard signals do
 *               not count (two sent before one is handled arrive once); a process that has
 *               ended meanwhile makes it a success;
 *   Shutdown    asks the endpoint to go once it serves nothing: it depends on the endpoint's
 *               state, not on how often it is asked; an endpoint gone already is its answer;
 *   CloseIO, ResizePty   set a state (stdin closed, a size), however often;
 *   the Sandbox API's reads (SandboxStatus, WaitSandbox, PingSandbox, Platform,
 *   SandboxMetrics), StopSandbox (a stopped VM stays stopped) and ShutdownSandbox (as
 *   Shutdown).
 * Not safe, and answered UNAVAILABLE ("whether it took effect is unknown"): Create, Start,
 * Exec (each makes a process; twice would make or start it twice, or fail the second time
 * on what the first made), Update, Pause, Resume (the state they set may have been changed
 * by a later call the daemon ran), and the Sandbox API's CreateSandbox and StartSandbox. */
static int may_repeat(const char *method)
{
    static const char *const safe[] = {"State",       "Wait",          "Pids",           "Stats",
                                       "Connect",     "Delete",        "Kill",           "Shutdown",
                                       "CloseIO",     "ResizePty",     "SandboxStatus",  "WaitSandbox",
                                       "PingSandbox", "Platform",      "SandboxMetrics", "StopSandbox",
                                       "ShutdownSandbox"};
    for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
        if (!strcmp(method, safe[i]))
            return 1;
    return 0;
}

/* Requests whose purpose an endpoint that no longer exists has met. */
static int ends_endpoint(const char *method)
{
    return !strcmp(method, "Shutdown") || !strcmp(method, "ShutdownSandbox");
}

static void answer(struct conn *c, uint32_t sid, int code, const char *message)
{
    uint8_t *buf;
    size_t len = ttrpc_encode_response(&buf, code, message, NULL, 0);
    if (!len)
        return;
    ttrpc_put_header(buf, (uint32_t)len, sid, TTRPC_TYPE_RESPONSE, 0);
    queue_put(&c->to_c, buf, TTRPC_HEADER_LEN + len);
    free(buf);
}

static void drop_request(struct conn *c, int i)
{
    free(c->reqs[i].frame);
    c->reqs[i] = c->reqs[--c->nreqs];
}

static void close_daemon_link(struct conn *c)
{
    if (c->dfd >= 0)
        close(c->dfd);
    c->dfd = -1;
    c->reopen_at = now_ms() + RETRY_MS;
    reader_reset(&c->from_d);
    queue_free(&c->to_d);
    /* What the daemon had and did not answer: sent again if it may run twice, else its
     * outcome is unknown and containerd hears so. */
    for (int i = 0; i < c->nreqs;) {
        struct request *r = &c->reqs[i];
        if (r->sent && !r->again) {
            char msg[160];
            snprintf(msg, sizeof(msg), "the rund daemon went away during %s; whether it took effect is unknown",
                     r->method);
            answer(c, r->sid, CODE_UNAVAILABLE, msg);
            drop_request(c, i);
            continue;
        }
        if (r->sent)
            r->replay = 1;
        r->sent = 0;
        i++;
    }
    c->stopping = 0;
}

static void close_conn(int slot)
{
    struct conn *c = g_conns[slot];
    g_nconns--;
    close(c->cfd);
    if (c->dfd >= 0)
        close(c->dfd);
    reader_reset(&c->from_c);
    reader_reset(&c->from_d);
    queue_free(&c->to_c);
    queue_free(&c->to_d);
    for (int i = 0; i < c->nreqs; i++)
        free(c->reqs[i].frame);
    free(c);
    g_conns[slot] = NULL;
}

static int cmp_sid(const void *a, const void *b)
{
    uint32_t x = ((const struct request *)a)->sid, y = ((const struct request *)b)->sid;
    return x < y ? -1 : x > y;
}

/* Queues a request towards the daemon; one sent before to a daemon that went is marked, once. */
static void send_request(struct conn *c, struct request *r)
{
    if (r->replay) {
        r->replay = 0;
        if (ttrpc_frame_add_metadata(&r->frame, &r->len, "rund-replay", "1"))
            rlog("%s on stream %u: could not mark it as a repeat; sending it as it was", r->method, r->sid);
    }
    queue_put(&c->to_d, r->frame, r->len);
    r->sent = 1;
}

/* Opens a daemon link for c and sends what it holds, in the order containerd sent it
 * (the daemon refuses stream ids that do not increase). */
static void open_daemon_link(struct conn *c)
{
    int fd = unix_connect(g_relay_socket);
    if (fd < 0)
        return;
    c->dfd = fd;
    char hello[128];
    int n = snprintf(hello, sizeof(hello), "conn %s\n", g_name);
    queue_put(&c->to_d, (const uint8_t *)hello, (size_t)n);
    qsort(c->reqs, (size_t)c->nreqs, sizeof(c->reqs[0]), cmp_sid);
    for (int i = 0; i < c->nreqs; i++)
        send_request(c, &c->reqs[i]);
}

/* A frame from containerd: a request is kept until answered, and goes on if a daemon is there. */
static int from_containerd(struct conn *c, uint8_t *frame, size_t len)
{
    uint32_t sid = ttrpc_header_stream(frame);
    if (frame[8] != TTRPC_TYPE_REQUEST) {
        if (c->dfd >= 0 && !c->stopping)
            queue_put(&c->to_d, frame, len);
        free(frame);
        return 0;
    }
    struct ttrpc_request req;
    char err[160];
    if (ttrpc_decode_request(frame + TTRPC_HEADER_LEN, len - TTRPC_HEADER_LEN, &req, err, sizeof(err))) {
        answer(c, sid, CODE_INVALID_ARGUMENT, err);
        free(frame);
        return 0;
    }
    if (c->nreqs == MAX_REQS) { /* not read while full; cannot happen */
        free(frame);
        return -1;
    }
    struct request *r = &c->reqs[c->nreqs++];
    *r = (struct request){.sid = sid, .frame = frame, .len = len, .again = may_repeat(req.method)};
    snprintf(r->method, sizeof(r->method), "%s", req.method);
    if (req.timeout_nano > 0)
        r->deadline = now_ms() + req.timeout_nano / 1000000;
    if (c->dfd >= 0 && !c->stopping)
        send_request(c, r);
    return 0;
}

/* A frame from the daemon: an answer ends its request's keeping and goes to containerd,
 * except ABORTED, with which a stopping daemon gives back a request it did not run. */
static void from_daemon(struct conn *c, uint8_t *frame, size_t len)
{
    uint32_t sid = ttrpc_header_stream(frame);
    if (frame[8] == TTRPC_TYPE_RESPONSE)
        for (int i = 0; i < c->nreqs; i++)
            if (c->reqs[i].sid == sid) {
                struct ttrpc_response resp;
                if (!ttrpc_decode_response(frame + TTRPC_HEADER_LEN, len - TTRPC_HEADER_LEN, &resp) &&
                    resp.code == CODE_ABORTED) {
                    c->reqs[i].sent = 0; /* kept for the next daemon, unmarked: it never ran */
                    c->stopping = 1;
                    free(frame);
                    return;
                }
                drop_request(c, i);
                break;
            }
    queue_put(&c->to_c, frame, len);
    free(frame);
}

/* ---- the control link -------------------------------------------------------------------- */

static void hold(const char *key, char mode, const char *path)
{
    if (g_nholds == MAX_HOLDS) {
        rlog("hold %s: already holding %d fifos", key, MAX_HOLDS);
        return;
    }
    /* An output fifo is held read-write, as containerd's runc shim holds it: opening never
     * waits for a reader, and the daemon's writes never meet EPIPE when containerd's reader
     * is briefly gone. A stdin fifo is held read-only, so that its writer's close still
     * ends the daemon's read. */
    /* Only a fifo is opened: looked at first through an O_PATH descriptor (opening a device
     * can act), then opened through that very descriptor. */
    int at = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (at < 0 || fstat(at, &st) || !S_ISFIFO(st.st_mode)) {
        if (at < 0)
            rlog("hold %s: %s: %s", key, path, strerror(errno));
        else
            close(at); /* a file:// destination needs nothing held */
        return;
    }
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", at);
    int fd = open(self, (mode == 'r' ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    close(at);
    if (fd < 0) {
        rlog("hold %s: open %s: %s", key, path, strerror(errno));
        return;
    }
    snprintf(g_holds[g_nholds].key, sizeof(g_holds[0].key), "%s", key);
    g_holds[g_nholds++].fd = fd;
}

static void drop(const char *key)
{
    for (int i = 0; i < g_nholds;) {
        if (!strcmp(g_holds[i].key, key)) {
            close(g_holds[i].fd);
            g_holds[i] = g_holds[--g_nholds];
            continue;
        }
        i++;
    }
}

static void begin_quit(void)
{
    if (g_quitting)
        return;
    g_quitting = 1;
    g_quit_at = now_ms();
    if (g_listen >= 0)
        close(g_listen);
    g_listen = -1;
}

/* The daemon says it has no such endpoint: nothing will ever answer here. */
static void unknown_endpoint(void)
{
    rlog("the daemon has no endpoint %s any more; answering NOT_FOUND and leaving", g_name);
    for (int s = 0; s < MAX_CONNS; s++) {
        struct conn *c = g_conns[s];
        if (!c)
            continue;
        for (int i = c->nreqs - 1; i >= 0; i--) {
            if (ends_endpoint(c->reqs[i].method))
                answer(c, c->reqs[i].sid, CODE_OK, NULL);
            else
                answer(c, c->reqs[i].sid, CODE_NOT_FOUND, "the rund daemon has no such task endpoint");
            drop_request(c, i);
        }
    }
    begin_quit();
}

static void ctl_down(void)
{
    if (g_ctl >= 0)
        close(g_ctl);
    g_ctl = -1;
    g_ctl_got = 0;
    if (g_up) {
        g_up = 0;
        g_next_start = 0; /* the next daemon may be started at once */
        g_last_start = -2;
        g_start_gap = START_FIRST_GAP_MS;
        if (!g_quitting)
            rlog("the daemon went away; holding requests until one is back");
    }
    for (int s = 0; s < MAX_CONNS; s++)
        if (g_conns[s])
            close_daemon_link(g_conns[s]);
}

static void ctl_line(char *line)
{
    if (!g_up) {
        if (!strcmp(line, "ok")) {
            g_up = 1;
            g_idle_told = 0;
            for (int s = 0; s < MAX_CONNS; s++)
                if (g_conns[s] && g_conns[s]->dfd < 0)
                    open_daemon_link(g_conns[s]);
        } else if (!strcmp(line, "unknown")) {
            unknown_endpoint();
        } else {
            rlog("the daemon answered the hello with '%.80s'", line);
        }
        return;
    }
    if (!strncmp(line, "hold ", 5)) {
        char *key = line + 5, *sp = strchr(key, ' ');
        if (sp && (sp[1] == 'r' || sp[1] == 'w') && sp[2] == ' ' && sp[3] == '/') {
            *sp = 0;
            hold(key, sp[1], sp + 3);
            return;
        }
    } else if (!strncmp(line, "drop ", 5)) {
        drop(line + 5);
        return;
    } else if (!strcmp(line, "quit")) {
        begin_quit();
        return;
    }
    rlog("unknown order from the daemon: '%.80s'", line);
}

static void ctl_read(void)
{
    for (;;) {
        ssize_t n = io_some(g_ctl, g_ctl_in + g_ctl_got, sizeof(g_ctl_in) - 1 - g_ctl_got, 0);
        if (n == 0)
            return;
        if (n < 0) {
            ctl_down();
            return;
        }
        g_ctl_got += (size_t)n;
        char *start = g_ctl_in, *nl;
        while ((nl = memchr(start, '\n', g_ctl_got - (size_t)(start - g_ctl_in)))) {
            *nl = 0;
            ctl_line(start);
            start = nl + 1;
            if (g_ctl < 0)
                return;
        }
        g_ctl_got -= (size_t)(start - g_ctl_in);
        memmove(g_ctl_in, start, g_ctl_got);
        if (g_ctl_got == sizeof(g_ctl_in) - 1) {
            rlog("a line from the daemon is over %d bytes", MAX_LINE);
            ctl_down();
            return;
        }
    }
}

/* Tries the daemon's relay socket; starts a daemon when none answers and none is starting. */
static void ctl_connect(void)
{
    int64_t now = now_ms();
    if (now < g_retry_at)
        return;
    g_retry_at = now + DOWN_RETRY_MS;
    int fd = unix_connect(g_relay_socket);
    if (fd < 0) {
        if (!g_quitting && now >= g_next_start) {
            int started = daemon_start();
            if (started >= 0 && started != g_last_start) /* once per change, not 50 times a second */
                rlog("no daemon on %s: %s", g_relay_socket,
                     started == DAEMON_LOCKED ? "a daemon or its standby holds the node's lock; waiting for it"
                     : started == DAEMON_STARTING ? "another is starting one; waiting for it" : "started one");
            g_last_start = started;
            if (started == DAEMON_STARTED) {
                g_next_start = now + g_start_gap;
                g_start_gap = g_start_gap * 2 > START_MAX_GAP_MS ? START_MAX_GAP_MS : g_start_gap * 2;
            } else if (started < 0) {
                rlog("no daemon on %s, and starting one failed: %s", g_relay_socket, strerror(errno));
                g_next_start = now + START_MAX_GAP_MS;
            }
        }
        return;
    }
    char hello[128];
    int n = snprintf(hello, sizeof(hello), "ctl %s %ld\n", g_name, (long)getpid());
    if (send(fd, hello, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return;
    }
    g_ctl = fd;
    g_hello_by = now + HELLO_MS;
}

/* Tells the daemon, once per daemon and per time it happens, that containerd has left. */
static void tell_idle(void)
{
    if (!g_up || g_ctl < 0 || g_idle_told || !g_had_conns || g_nconns || g_quitting)
        return;
    if (send(g_ctl, "idle\n", 5, MSG_NOSIGNAL | MSG_DONTWAIT) == 5)
        g_idle_told = 1;
}

/* ---- the loop ------------------------------------------------------------------------- */

static void accept_conn(void)
{
    int fd = accept4(g_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    for (int s = 0; s < MAX_CONNS; s++)
        if (!g_conns[s]) {
            struct conn *c = calloc(1, sizeof(*c));
            if (!c)
                break;
            c->cfd = fd;
            c->dfd = -1;
            g_conns[s] = c;
            g_nconns++;
            g_had_conns = 1;
            g_idle_told = 0;
            if (g_up)
                open_daemon_link(c);
            return;
        }
    rlog("refused a connection: %d are open", MAX_CONNS);
    close(fd);
}

/* Answers held requests whose own deadline passed before any daemon could. */
static void expire(void)
{
    int64_t now = now_ms();
    for (int s = 0; s < MAX_CONNS; s++) {
        struct conn *c = g_conns[s];
        if (!c)
            continue;
        for (int i = 0; i < c->nreqs;) {
            struct request *r = &c->reqs[i];
            if (!r->sent && r->deadline && now >= r->deadline) {
                answer(c, r->sid, CODE_DEADLINE_EXCEEDED, "no rund daemon answered within the call's deadline");
                drop_request(c, i);
                continue;
            }
            i++;
        }
    }
}

static int done_quitting(void)
{
    if (now_ms() - g_quit_at >= QUIT_GRACE_MS)
        return 1;
    for (int s = 0; s < MAX_CONNS; s++)
        if (g_conns[s] && (g_conns[s]->dfd >= 0 || queued(&g_conns[s]->to_c)))
            return 0;
    return 1;
}

static void serve(void)
{
    struct pollfd fds[2 + 2 * MAX_CONNS];
    int slot_of[2 + 2 * MAX_CONNS];
    for (;;) {
        if (g_quitting && done_quitting())
            return;
        if (g_ctl >= 0 && !g_up && now_ms() >= g_hello_by) {
            rlog("the daemon on %s did not answer the hello in %d ms; trying again", g_relay_socket, HELLO_MS);
            ctl_down();
        }
        if (g_ctl < 0)
            ctl_connect();
        expire();
        tell_idle();
        int n = 0;
        if (g_listen >= 0)
            fds[n++] = (struct pollfd){.fd = g_listen, .events = POLLIN};
        int ctl_at = -1;
        if (g_ctl >= 0) {
            ctl_at = n;
            fds[n++] = (struct pollfd){.fd = g_ctl, .events = POLLIN};
        }
        int first_conn = n;
        for (int s = 0; s < MAX_CONNS; s++) {
            struct conn *c = g_conns[s];
            if (!c)
                continue;
            short ev = 0;
            if (c->nreqs < MAX_REQS && queued(&c->to_d) < MAX_QUEUED)
                ev |= POLLIN;
            if (queued(&c->to_c))
                ev |= POLLOUT;
            slot_of[n] = s;
            fds[n++] = (struct pollfd){.fd = c->cfd, .events = ev};
            if (c->dfd >= 0) {
                short dev = queued(&c->to_c) < MAX_QUEUED ? POLLIN : 0;
                if (queued(&c->to_d))
                    dev |= POLLOUT;
                slot_of[n] = -1 - s;
                fds[n++] = (struct pollfd){.fd = c->dfd, .events = dev};
            }
        }
        int timeout = g_ctl < 0 ? DOWN_RETRY_MS : g_quitting ? RETRY_MS : 1000;
        for (int s = 0; s < MAX_CONNS; s++)
            if (g_conns[s] && (g_conns[s]->dfd < 0 || g_conns[s]->nreqs) && timeout > RETRY_MS)
                timeout = RETRY_MS; /* a link to open again, or deadlines to keep */
        if (poll(fds, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            rlog("poll: %s", strerror(errno));
            return;
        }
        if (g_listen >= 0 && fds[0].revents)
            accept_conn();
        if (ctl_at >= 0 && fds[ctl_at].revents)
            ctl_read();
        for (int i = first_conn; i < n; i++) {
            if (!fds[i].revents)
                continue;
            int s = slot_of[i] >= 0 ? slot_of[i] : -1 - slot_of[i];
            struct conn *c = g_conns[s];
            if (!c)
                continue;
            uint8_t *frame;
            size_t len;
            int r = 0;
            if (slot_of[i] >= 0) { /* containerd's side */
                if (fds[i].revents & POLLOUT && queue_flush(&c->to_c, c->cfd)) {
                    close_conn(s);
                    continue;
                }
                if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                    while (c->nreqs < MAX_REQS && (r = reader_step(&c->from_c, c->cfd, &frame, &len)) == 1)
                        if (from_containerd(c, frame, len))
                            break;
                    if (r < 0) {
                        close_conn(s);
                        continue;
                    }
                }
            } else if (c->dfd == fds[i].fd) { /* the daemon's side */
                if (fds[i].revents & POLLOUT && queue_flush(&c->to_d, c->dfd)) {
                    close_daemon_link(c);
                    continue;
                }
                if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                    while ((r = reader_step(&c->from_d, c->dfd, &frame, &len)) == 1)
                        from_daemon(c, frame, len);
                    if (r < 0)
                        close_daemon_link(c);
                }
            }
        }
        /* Answers made here (UNAVAILABLE, DEADLINE_EXCEEDED) and frames queued above go now. */
        for (int s = 0; s < MAX_CONNS; s++) {
            struct conn *c = g_conns[s];
            if (!c)
                continue;
            if (queued(&c->to_c) && queue_flush(&c->to_c, c->cfd)) {
                close_conn(s);
                continue;
            }
            if (c->dfd >= 0 && queued(&c->to_d) && queue_flush(&c->to_d, c->dfd))
                close_daemon_link(c);
            if (c->dfd < 0 && g_up && !g_quitting && now_ms() >= c->reopen_at)
                open_daemon_link(c); /* the daemon closed this link alone: open another */
        }
    }
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    unlink(path);
    mode_t old = umask(0077); /* 0600 from the start: only root (containerd) connects */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc || listen(fd, 128)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int relay_spawn(const char *name, const char *socket_path, char *err, size_t errlen)
{
    const char *control = daemon_control_socket();
    const char *slash = strrchr(control, '/');
    size_t dir = slash ? (size_t)(slash - control) : 0;
    if (dir + sizeof("/relay.sock") > sizeof(g_relay_socket)) {
        snprintf(err, errlen, "control socket path %s is too long", control);
        return -1;
    }
    snprintf(g_relay_socket, sizeof(g_relay_socket), "%.*s/relay.sock", (int)dir, control);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(ready[0]);
        setsid();
        signal(SIGPIPE, SIG_IGN);
        g_name = name;
        /* containerd reads the launcher's output until every copy of it is closed. */
        const char *log = env_or("RUND_LOG", "/var/log/rund/daemon.log");
        int null = open("/dev/null", O_RDWR);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        dup2(null, 0);
        dup2(null, 1);
        dup2(out >= 0 ? out : null, 2);
        if (chdir("/") < 0)
            _exit(1);
        g_listen = listen_on(socket_path);
        char msg[256] = "";
        if (g_listen < 0)
            snprintf(msg, sizeof(msg), "listen on %s: %s", socket_path, strerror(errno));
        (void)!write(ready[1], msg, strlen(msg) + 1);
        close(ready[1]);
        if (g_listen < 0)
            _exit(1);
        g_start_gap = START_FIRST_GAP_MS;
        serve();
        if (g_listen >= 0)
            close(g_listen);
        _exit(0);
    }
    close(ready[1]);
    char msg[256] = "";
    ssize_t n = read(ready[0], msg, sizeof(msg) - 1);
    close(ready[0]);
    if (n <= 0) {
        snprintf(err, errlen, "the relay exited before it listened");
        return -1;
    }
    msg[n] = 0;
    if (msg[0]) {
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    return 0;
}
