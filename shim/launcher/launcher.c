/* containerd-shim-rund-v2: what containerd executes for every rund task.
 *
 *   containerd-shim-rund-v2 -namespace NS -address A -publish-binary B -id ID start
 *   containerd-shim-rund-v2 -namespace NS -address A -publish-binary B -id ID -bundle DIR delete
 *   containerd-shim-rund-v2 -v | --version      the version, git commit and build date
 *
 * It holds no state and runs no sandbox: it asks the node's rund daemon (over ttrpc on
 * its control socket, starting the daemon when none answers) for the task's endpoint,
 * prints that address (start) or the DeleteResponse bytes (delete), and exits. For a new
 * endpoint, `start` first forks its relay (relay.c), which listens on the address and
 * outlives the daemon. containerd reads stdout and stderr together, so nothing else is
 * printed on success.
 *
 * What containerd writes on stdin at `start` is either the runtime options (a protobuf Any,
 * containerd 1.6 to 2.2) or a BootstrapParams (2.3 and later: bootstrap.c). The answer is
 * the bare address every version reads (task API v2), or, to a containerd that sent a
 * BootstrapParams, the JSON BootstrapResult naming task API v3. (MAX_SHIM_VERSION does not
 * tell: containerd 1.7 to 2.3 all set it to 2.)
 *
 * Environment: TTRPC_ADDRESS (from containerd); RUND_CONTROL_SOCKET, RUND_DAEMON and
 * RUND_LOG override the control socket (/run/rund/rund.sock), the daemon command
 * (/usr/local/lib/rund/rund-daemon) and its log file (/var/log/rund/daemon.log). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "daemon.h"
#include "relay.h"
#include "ttrpc.h"
#include "version.h"

#define CONTROL_SERVICE "rund.control.v1.Control"
#define MAX_OPTIONS (1 << 20)

/* containerd's BootstrapResult as JSON (read by containerd 1.7 and later): task API v3 over ttrpc at `address`. */
static void print_bootstrap_result(const char *address)
{
    fputs("{\"version\":3,\"address\":\"", stdout);
    for (const char *c = address; *c; c++) {
        if (*c == '"' || *c == '\\')
            fputc('\\', stdout);
        if ((unsigned char)*c < 0x20)
            printf("\\u%04x", *c);
        else
            fputc(*c, stdout);
    }
    fputs("\",\"protocol\":\"ttrpc\"}", stdout);
}

static void die(const char *fmt, const char *a)
{
    fprintf(stderr, "containerd-shim-rund-v2: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    exit(1);
}

/* containerd's ids: letters, digits and . _ - , starting with a letter or digit. */
static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return 0;
    }
    return 1;
}

/* Connects to the daemon, starting it if nobody answers (again each second while a
 * daemon that held the node's lock is still leaving); gives up after 60 s. */
static int connect_daemon(void)
{
    const char *path = daemon_control_socket();
    for (int i = 0; i < 6000; i++) {
        int fd = unix_connect(path);
        if (fd >= 0)
            return fd;
        if (errno == ENAMETOOLONG)
            die("control socket path %s is too long", path);
        if (i % 100 == 0 && daemon_start() < 0)
            die("start the rund daemon: %s", strerror(errno));
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    die("the rund daemon did not answer on %s within 60 s", path);
    return -1;
}

/* Sends all of p on a socket; a peer that left is -1, not SIGPIPE. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One ttrpc call on stream 1 over fd; returns the response payload (malloc'd), NULL when
 * the daemon went away before it answered or was stopping and did not run it (ABORTED),
 * or dies with the daemon's message. */
static uint8_t *call_once(int fd, const char *method, const uint8_t *payload, size_t len, size_t *out_len)
{
    uint8_t *req;
    size_t n = ttrpc_encode_request(&req, CONTROL_SERVICE, method, payload, len);
    if (!n || n > TTRPC_MAX_PAYLOAD)
        die("request %s is too large", method);
    ttrpc_put_header(req, (uint32_t)n, 1, TTRPC_TYPE_REQUEST, 0);
    int sent = write_all(fd, req, TTRPC_HEADER_LEN + n);
    free(req);
    uint8_t h[TTRPC_HEADER_LEN];
    if (sent || read_all(fd, h, sizeof(h)))
        return NULL;
    uint32_t rl = ttrpc_header_length(h);
    if (rl > TTRPC_MAX_PAYLOAD)
        die("the rund daemon's answer to %s is too large", method);
    uint8_t *body = malloc(rl ? rl : 1);
    if (!body || read_all(fd, body, rl))
        die("short answer from the rund daemon to %s", method);
    struct ttrpc_response resp;
    if (ttrpc_decode_response(body, rl, &resp))
        die("malformed answer from the rund daemon to %s", method);
    if (resp.code == CODE_ABORTED) { /* a stopping daemon did not run it: the next one will */
        free(body);
        return NULL;
    }
    if (resp.code != 0) {
        fprintf(stderr, "containerd-shim-rund-v2: %s: %.*s\n", method, (int)resp.message_len, (const char *)resp.message);
        exit(1);
    }
    uint8_t *out = malloc(resp.payload_len ? resp.payload_len : 1);
    memcpy(out, resp.payload, resp.payload_len);
    *out_len = resp.payload_len;
    free(body);
    return out;
}

/* A Control call, sent again to the next daemon (started if need be) when the one that had
 * it went without answering: both of the launcher's calls may run twice. Start finds the
 * endpoint a first Start made, or makes it again (a daemon that died before the relay
 * existed left a record the next one removes); Delete of a task already deleted answers
 * as for one that is gone. */
static uint8_t *call(const char *method, const uint8_t *payload, size_t len, size_t *out_len)
{
    for (int attempt = 1;; attempt++) {
        int fd = connect_daemon();
        uint8_t *out = call_once(fd, method, payload, len, out_len);
        close(fd);
        if (out)
            return out;
        if (attempt == 5)
            die("the rund daemon went away during %s, five times", method);
        struct timespec ts = {0, 100 * 1000 * 1000}; /* a stopping daemon may still take connections */
        nanosleep(&ts, NULL);
    }
}

/* Appends a length-delimited protobuf field. */
static size_t put_field(uint8_t *buf, size_t at, size_t cap, int field, const void *data, size_t len)
{
    uint8_t tmp[16];
    size_t k = 0;
    tmp[k++] = (uint8_t)(field << 3 | 2);
    size_t v = len;
    while (v >= 0x80) {
        tmp[k++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[k++] = (uint8_t)v;
    if (at + k + len > cap)
        die("%s", "request too large");
    memcpy(buf + at, tmp, k);
    memcpy(buf + at + k, data, len);
    return at + k + len;
}

static const char USAGE[] =
    "usage: containerd-shim-rund-v2 -namespace NS -address A -publish-binary B -id ID [-bundle DIR] start|delete\n"
    "       containerd-shim-rund-v2 -v | --version\n"
    "containerd executes this for every task of runtime io.containerd.rund.v2; the node's rund daemon runs it.\n";

/* A command line containerd would never give: exit 2, as Go's flag package does. */
static void usage(const char *what, const char *arg)
{
    fprintf(stderr, "containerd-shim-rund-v2: %s: %s\n%s", what, arg, USAGE);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *ns = "", *address = "", *publish = "", *id = "", *bundle = NULL, *verb = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && a[1] == '-')
            a++;
        if (!strcmp(a, "-namespace") && i + 1 < argc)
            ns = argv[++i];
        else if (!strcmp(a, "-address") && i + 1 < argc)
            address = argv[++i];
        else if (!strcmp(a, "-publish-binary") && i + 1 < argc)
            publish = argv[++i];
        else if (!strcmp(a, "-id") && i + 1 < argc)
            id = argv[++i];
        else if (!strcmp(a, "-bundle") && i + 1 < argc)
            bundle = argv[++i];
        else if (!strcmp(a, "-v") || !strcmp(a, "-version")) {
            /* The shape of containerd's own shims' -v. */
            printf("containerd-shim-rund-v2:\n  Version:    %s\n  Revision:   %s\n  Build date: %s\n",
                   RUND_VERSION, RUND_COMMIT, RUND_BUILD_DATE);
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "-help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "-debug"))
            continue;
        else if (a[0] != '-')
            verb = a;
        else
            usage("unknown flag", argv[i]);
    }
    if (!verb || (strcmp(verb, "start") && strcmp(verb, "delete")))
        usage("unknown verb", verb ? verb : "(none)");
    if (!valid_id(id))
        die("task id '%s' is not 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit", id);
    char cwd[4096];
    if (!bundle) {
        if (!getcwd(cwd, sizeof(cwd)))
            die("getcwd: %s", strerror(errno));
        bundle = cwd;
    }
    static uint8_t req[2 * MAX_OPTIONS];
    size_t n = 0;
    n = put_field(req, n, sizeof(req), 1, id, strlen(id));
    n = put_field(req, n, sizeof(req), 2, ns, strlen(ns));
    n = put_field(req, n, sizeof(req), 3, bundle, strlen(bundle));
    size_t out_len = 0;
    uint8_t *out;
    if (!strcmp(verb, "start")) {
        static uint8_t in[MAX_OPTIONS];
        size_t il = 0;
        if (!isatty(0)) {
            ssize_t r;
            while (il < sizeof(in) && (r = read(0, in + il, sizeof(in) - il)) > 0)
                il += (size_t)r;
        }
        struct bootstrap boot;
        int bootstrapped = bootstrap_parse(in, il, id, ns, &boot);
        const char *ttrpc = env_or("TTRPC_ADDRESS", "");
        n = put_field(req, n, sizeof(req), 4, address, strlen(address));
        if (bootstrapped && boot.ttrpc_address_len)
            n = put_field(req, n, sizeof(req), 5, boot.ttrpc_address, boot.ttrpc_address_len);
        else
            n = put_field(req, n, sizeof(req), 5, ttrpc, strlen(ttrpc));
        n = put_field(req, n, sizeof(req), 6, publish, strlen(publish));
        /* The runtime options (a protobuf Any), passed on as is: all of stdin, or a BootstrapParams' extension. */
        const uint8_t *opts = bootstrapped ? boot.options : in;
        size_t ol = bootstrapped ? boot.options_len : il;
        if (ol)
            n = put_field(req, n, sizeof(req), 7, opts, ol);
        out = call("Start", req, n, &out_len);
        /* StartResponse { string address = 1; string relay = 2; } */
        char address_out[512] = "", relay[128] = "";
        const uint8_t *p = out, *end = out + out_len;
        while (p < end) {
            uint64_t key, fl;
            if (ttrpc_read_varint(&p, end, &key) || (key & 7) != 2 || ttrpc_read_varint(&p, end, &fl) ||
                fl > (uint64_t)(end - p))
                die("%s", "malformed Start answer");
            char *dst = key >> 3 == 1 ? address_out : key >> 3 == 2 ? relay : NULL;
            size_t cap = key >> 3 == 1 ? sizeof(address_out) : sizeof(relay);
            if (dst) {
                if (fl >= cap)
                    die("%s", "the rund daemon's Start answer has a field too long");
                memcpy(dst, p, (size_t)fl);
                dst[fl] = 0;
            }
            p += fl;
        }
        if (!address_out[0])
            die("%s", "the rund daemon answered Start without an address");
        if (relay[0]) {
            char err[300];
            if (strncmp(address_out, "unix://", 7))
                die("the rund daemon answered Start with address %s, not unix://", address_out);
            if (relay_spawn(relay, address_out + 7, err, sizeof(err)))
                die("relay: %s", err);
        }
        if (bootstrapped)
            print_bootstrap_result(address_out);
        else
            fputs(address_out, stdout);
    } else {
        out = call("Delete", req, n, &out_len);
        fwrite(out, 1, out_len, stdout);
    }
    fflush(stdout);
    return 0;
}
