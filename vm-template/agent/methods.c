/* The Agent API's methods: each call's handler, and the table the dispatcher finds them in
 * by name (main.c reads frames and answers; this file decodes, serves and encodes). */
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
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"
#include "ttrpc.h"
#include "methods.h"

/* ---- methods ----------------------------------------------------------------------- */

/* Each handler gets its decoded request and a response message, already initialised, to
 * fill in. Memory the response points to (strings, arrays) is allocated by the handler
 * and handed over through `keep`, freed once the response is packed. Returns 0, or -1
 * with f set. */
typedef int (*handler_fn)(const void *in, void *out, void **keep, struct fault *f);

#define REQ(type) const type *req = in
#define RESP(type) type *resp = out

static int h_health(const void *in, void *out, void **keep, struct fault *f)
{
    RESP(Rund__Agent__V1__HealthResponse);
    struct utsname *u = malloc(sizeof(*u));
    if (!u)
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    uname(u);
    *keep = u;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    resp->version = AGENT_VERSION;
    resp->kernel_release = u->release;
    resp->monotonic_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    return 0;
}

static int h_set_time(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__SetTimeRequest);
    int64_t ns = req->realtime_ns;
    if (ns <= 0)
        return fail(f, CODE_INVALID_ARGUMENT, "realtime_ns %lld is not a time after the epoch", (long long)ns);
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    if (clock_settime(CLOCK_REALTIME, &ts))
        return fail(f, CODE_INTERNAL, "clock_settime: %s", strerror(errno));
    return 0;
}

static int h_reseed(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ReseedRandomRequest);
    size_t n = req->seed.len;
    if (n < 16 || n > 512)
        return fail(f, CODE_INVALID_ARGUMENT, "seed of %zu bytes is outside 16..512", n);
    struct {
        int entropy_count;
        int buf_size;
        uint8_t buf[512];
    } info;
    info.entropy_count = (int)(n * 8);
    info.buf_size = (int)n;
    memcpy(info.buf, req->seed.data, n);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(f, CODE_INTERNAL, "open /dev/urandom: %s", strerror(errno));
    int rc = ioctl(fd, RNDADDENTROPY, &info);
    int e = errno;
    close(fd);
    return rc ? fail(f, CODE_INTERNAL, "RNDADDENTROPY: %s", strerror(e)) : 0;
}

static int h_wake(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__WakeRequest);
    if (!req->time || !req->seed)
        return fail(f, CODE_INVALID_ARGUMENT, "Wake needs a time and a seed");
    if (h_set_time(req->time, NULL, keep, f) || h_reseed(req->seed, NULL, keep, f))
        return -1;
    return h_health(NULL, out, keep, f);
}

static int h_create(const void *in, void *out, void **keep, struct fault *f)
{
    RESP(Rund__Agent__V1__CreateContainerResponse);
    struct timed {
        struct steps steps;
        Rund__Agent__V1__GuestStep step[MAX_STEPS];
        Rund__Agent__V1__GuestStep *ptr[MAX_STEPS];
    } *t = calloc(1, sizeof(*t));
    if (!t)
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    *keep = t;
    if (container_create(in, &t->steps, f))
        return -1;
    for (size_t i = 0; i < t->steps.n; i++) {
        rund__agent__v1__guest_step__init(&t->step[i]);
        t->step[i].name = (char *)t->steps.name[i];
        t->step[i].micros = t->steps.micros[i];
        t->ptr[i] = &t->step[i];
    }
    resp->n_steps = t->steps.n;
    resp->steps = t->ptr;
    return 0;
}

static int h_mount_disk(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__MountDiskRequest);
    return disk_prepare(f, req->serial);
}

static int h_start(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__StartProcessRequest);
    RESP(Rund__Agent__V1__StartProcessResponse);
    pid_t pid = 0;
    if (proc_start(req->container_id, req->exec_id, &pid, f))
        return -1;
    resp->pid = (uint32_t)pid;
    return 0;
}

static int h_exec(const void *in, void *out, void **keep, struct fault *f)
{
    return proc_exec(in, f);
}

static int h_signal(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__SignalProcessRequest);
    return proc_signal(req->container_id, req->exec_id, (int)req->signal, req->all, f);
}

static int h_wait(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__WaitProcessRequest);
    RESP(Rund__Agent__V1__WaitProcessResponse);
    int status = 0;
    if (proc_wait(req->container_id, req->exec_id, &status, &resp->exited_at_ns, f))
        return -1;
    resp->exit_status = (uint32_t)status;
    return 0;
}

static int h_delete(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__DeleteProcessRequest);
    return proc_delete(req->container_id, req->exec_id, f);
}

static int h_write_stdin(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__WriteStreamRequest);
    RESP(Rund__Agent__V1__WriteStreamResponse);
    if (req->data.len > MAX_STREAM_CHUNK)
        return fail(f, CODE_INVALID_ARGUMENT, "stdin chunk of %zu bytes is over 1 MiB", req->data.len);
    size_t written = 0;
    if (proc_write_stdin(req->container_id, req->exec_id, req->data.data, req->data.len, &written, f))
        return -1;
    resp->written = (uint32_t)written;
    return 0;
}

static int h_close_stdin(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__CloseStdinRequest);
    return proc_close_stdin(req->container_id, req->exec_id, f);
}

static int read_stream(const void *in, void *out, void **keep, struct fault *f, bool err)
{
    REQ(Rund__Agent__V1__ReadStreamRequest);
    RESP(Rund__Agent__V1__ReadStreamResponse);
    size_t max = req->max_bytes ? req->max_bytes : 64 * 1024;
    if (max > MAX_STREAM_CHUNK)
        return fail(f, CODE_INVALID_ARGUMENT, "max_bytes %zu is over 1 MiB", max);
    uint8_t *buf = malloc(max);
    if (!buf)
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    *keep = buf;
    resp->data.data = buf;
    bool eof = false;
    uint64_t at = 0;
    if (proc_read(req->container_id, req->exec_id, err, req->acked, req->offset, max, buf, &resp->data.len, &eof, &at, f))
        return -1;
    resp->eof = eof;
    resp->offset = at;
    return 0;
}

static int h_read_stdout(const void *in, void *out, void **keep, struct fault *f)
{
    return read_stream(in, out, keep, f, false);
}

static int h_read_stderr(const void *in, void *out, void **keep, struct fault *f)
{
    return read_stream(in, out, keep, f, true);
}

static int h_resize(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ResizePtyRequest);
    return proc_resize(req->container_id, req->exec_id, req->rows, req->cols, f);
}

static int h_pids(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ContainerRequest);
    RESP(Rund__Agent__V1__ListPidsResponse);
    if (container_pids(req->container_id, &resp->pids, &resp->n_pids, f))
        return -1;
    *keep = resp->pids;
    return 0;
}

static int h_stats(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ContainerRequest);
    return container_stats(req->container_id, out, f);
}

static int h_pause(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ContainerRequest);
    return container_freeze(req->container_id, true, f);
}

static int h_resume(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ContainerRequest);
    return container_freeze(req->container_id, false, f);
}

static int h_update(const void *in, void *out, void **keep, struct fault *f)
{
    return container_update(in, f);
}

static int h_wait_oom(const void *in, void *out, void **keep, struct fault *f)
{
    RESP(Rund__Agent__V1__OOMEvent);
    char *cid = malloc(MAX_ID_LEN + 1);
    if (!cid)
        return fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    *keep = cid;
    resp->container_id = cid;
    return container_wait_oom(cid, MAX_ID_LEN + 1, f);
}

static int h_remove(const void *in, void *out, void **keep, struct fault *f)
{
    REQ(Rund__Agent__V1__ContainerRequest);
    return container_remove(req->container_id, f);
}

static uint32_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    uint32_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n ? n - 1 : 0; /* opendir itself holds one while counting */
}

/* User-space processes: kernel threads (kthreadd, pid 2, and its children) come and go
 * on their own and say nothing about what the agent leaks. */
static uint32_t count_processes(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    uint32_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || strcmp(e->d_name, "2") == 0)
            continue;
        char path[300], stat[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, stat, sizeof(stat) - 1);
        close(fd);
        if (len <= 0)
            continue;
        stat[len] = 0;
        /* "pid (comm) state ppid ...": comm may hold spaces, so start after its ')'. */
        char *close_paren = strrchr(stat, ')');
        int ppid = -1;
        if (close_paren && sscanf(close_paren + 1, " %*c %d", &ppid) == 1 && ppid != 2)
            n++;
    }
    closedir(d);
    return n;
}

static int h_agent_info(const void *in, void *out, void **keep, struct fault *f)
{
    RESP(Rund__Agent__V1__AgentInfoResponse);
    resp->guest_processes = count_processes();
    resp->agent_open_fds = count_fds();
    agent_counts(&resp->containers, &resp->processes);
    return 0;
}

static int h_configure_network(const void *in, void *out, void **keep, struct fault *f)
{
    return net_configure(in, f);
}

#define EMPTY_MSG rund__agent__v1__empty__descriptor
struct method {
    const char *name;
    const ProtobufCMessageDescriptor *in, *out;
    handler_fn fn;
};

static const struct method METHODS[] = {
    {"Health", &rund__agent__v1__health_request__descriptor, &rund__agent__v1__health_response__descriptor, h_health},
    {"SetTime", &rund__agent__v1__set_time_request__descriptor, &EMPTY_MSG, h_set_time},
    {"ReseedRandom", &rund__agent__v1__reseed_random_request__descriptor, &EMPTY_MSG, h_reseed},
    {"Wake", &rund__agent__v1__wake_request__descriptor, &rund__agent__v1__health_response__descriptor, h_wake},
    {"CreateContainer", &rund__agent__v1__create_container_request__descriptor,
     &rund__agent__v1__create_container_response__descriptor, h_create},
    {"MountDisk", &rund__agent__v1__mount_disk_request__descriptor, &EMPTY_MSG, h_mount_disk},
    {"StartProcess", &rund__agent__v1__start_process_request__descriptor,
     &rund__agent__v1__start_process_response__descriptor, h_start},
    {"ExecProcess", &rund__agent__v1__exec_process_request__descriptor, &EMPTY_MSG, h_exec},
    {"SignalProcess", &rund__agent__v1__signal_process_request__descriptor, &EMPTY_MSG, h_signal},
    {"WaitProcess", &rund__agent__v1__wait_process_request__descriptor,
     &rund__agent__v1__wait_process_response__descriptor, h_wait},
    {"DeleteProcess", &rund__agent__v1__delete_process_request__descriptor, &EMPTY_MSG, h_delete},
    {"WriteStdin", &rund__agent__v1__write_stream_request__descriptor,
     &rund__agent__v1__write_stream_response__descriptor, h_write_stdin},
    {"CloseStdin", &rund__agent__v1__close_stdin_request__descriptor, &EMPTY_MSG, h_close_stdin},
    {"ReadStdout", &rund__agent__v1__read_stream_request__descriptor,
     &rund__agent__v1__read_stream_response__descriptor, h_read_stdout},
    {"ReadStderr", &rund__agent__v1__read_stream_request__descriptor,
     &rund__agent__v1__read_stream_response__descriptor, h_read_stderr},
    {"ResizePty", &rund__agent__v1__resize_pty_request__descriptor, &EMPTY_MSG, h_resize},
    {"ListPids", &rund__agent__v1__container_request__descriptor, &rund__agent__v1__list_pids_response__descriptor,
     h_pids},
    {"Stats", &rund__agent__v1__container_request__descriptor, &rund__agent__v1__stats_response__descriptor, h_stats},
    {"PauseContainer", &rund__agent__v1__container_request__descriptor, &EMPTY_MSG, h_pause},
    {"ResumeContainer", &rund__agent__v1__container_request__descriptor, &EMPTY_MSG, h_resume},
    {"UpdateResources", &rund__agent__v1__update_resources_request__descriptor, &EMPTY_MSG, h_update},
    {"WaitOOM", &EMPTY_MSG, &rund__agent__v1__oomevent__descriptor, h_wait_oom},
    {"RemoveContainer", &rund__agent__v1__container_request__descriptor, &EMPTY_MSG, h_remove},
    {"AgentInfo", &EMPTY_MSG, &rund__agent__v1__agent_info_response__descriptor, h_agent_info},
    {"ConfigureNetwork", &rund__agent__v1__configure_network_request__descriptor, &EMPTY_MSG, h_configure_network},
};

/* Decodes, serves and encodes one call; returns 0 with the packed response in *out. */
int method_invoke(const struct method *m, const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len,
                  struct fault *f)
{
    ProtobufCMessage *req = protobuf_c_message_unpack(m->in, NULL, len, payload);
    if (!req)
        return fail(f, CODE_INVALID_ARGUMENT, "malformed %s", m->in->name);
    ProtobufCMessage *resp = calloc(1, m->out->sizeof_message);
    void *keep = NULL;
    int rc = resp ? 0 : fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    if (rc == 0) {
        protobuf_c_message_init(m->out, resp);
        rc = m->fn(req, resp, &keep, f);
    }
    if (rc == 0) {
        *out_len = protobuf_c_message_get_packed_size(resp);
        *out = malloc(*out_len ? *out_len : 1);
        if (*out)
            protobuf_c_message_pack(resp, *out);
        else
            rc = fail(f, CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    free(keep);
    free(resp);
    protobuf_c_message_free_unpacked(req, NULL);
    return rc;
}

const struct method *method_find(const char *name)
{
    for (size_t i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++)
        if (strcmp(METHODS[i].name, name) == 0)
            return &METHODS[i];
    return NULL;
}
