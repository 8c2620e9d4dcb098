/* The vhost-user back-end side of one virtio-fs device: the front-end (QEMU) hands over
 * the guest's memory table, the two rings (the high-priority queue, which carries FORGETs,
 * and one request queue) and their eventfds.
 *
 * The back-end state QEMU saves with a template (vhost-user's device-state transfer) is a
 * version line: a template's guest has not mounted the file system yet, and a clone starts
 * a FUSE session of its own. A guest that has mounted it cannot be saved.
 *
 * Dirty logging (LOG_ALL, LOG_SHMFD) is offered only because QEMU refuses to migrate
 * without it; rund migrates only stopped VMs (saving a template), for which QEMU never
 * starts logging, and a request to start it is refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helper.h"

enum {
    GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4, SET_MEM_TABLE = 5, SET_LOG_BASE = 6,
    SET_LOG_FD = 7, SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11,
    SET_VRING_KICK = 12, SET_VRING_CALL = 13, SET_VRING_ERR = 14, GET_PROTOCOL_FEATURES = 15,
    SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18, SET_DEVICE_STATE_FD = 42,
    CHECK_DEVICE_STATE = 43,
};
#define FLAG_VERSION 1u
#define FLAG_REPLY 4u
#define FLAG_NEED_REPLY 8u
#define F_LOG_ALL (1ull << 26)
#define F_PROTOCOL_FEATURES (1ull << 30)
#define F_VERSION_1 (1ull << 32)
#define PF_MQ 1ull
#define PF_LOG_SHMFD (1ull << 1)
#define PF_REPLY_ACK (1ull << 3)
#define PF_DEVICE_STATE (1ull << 19)
#define FEATURES (F_VERSION_1 | F_PROTOCOL_FEATURES | F_LOG_ALL)
#define PROTOCOL_FEATURES (PF_MQ | PF_LOG_SHMFD | PF_REPLY_ACK | PF_DEVICE_STATE)
#define MAX_PAYLOAD 4096
#define MAX_FDS 8
#define STATE "rund-virtiofs 1\n"

static int epfd = -1;
static struct memory memory;
static bool have_memory;
static struct vq queues[QUEUES];
static uint64_t acked_features, acked_protocol_features;
static int load_fd = -1;

static void reset_queue(struct vq *q)
{
    if (q->kick >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, q->kick, NULL);
        close(q->kick);
    }
    if (q->call >= 0)
        close(q->call);
    int index = q->index;
    *q = (struct vq){.index = index, .used_idx = -1, .kick = -1, .call = -1};
}

void vhost_init(int epoll_fd, pid_t front_end)
{
    epfd = epoll_fd;
    memory.pid = front_end;
    for (int i = 0; i < QUEUES; i++) {
        queues[i] = (struct vq){.index = i, .used_idx = -1, .kick = -1, .call = -1};
    }
}

void vhost_stats(char *buf, size_t len)
{
    snprintf(buf, len, "front_end=%d queue0=%s queue1=%s", (int)memory.pid,
             queues[0].broken ? "broken" : vq_ready(&queues[0]) ? "ready" : "idle",
             queues[1].broken ? "broken" : vq_ready(&queues[1]) ? "ready" : "idle");
}

static void serve(struct vq *q)
{
    if (have_memory && vq_ready(q))
        vq_process(q, &memory, fuse_handle);
}

void vhost_kicked(int qi)
{
    struct vq *q = &queues[qi];
    uint64_t v;
    if (q->kick >= 0 && read(q->kick, &v, sizeof(v)) < 0 && errno != EAGAIN)
        LOG("queue %d: read kick: %s", qi, strerror(errno));
    serve(q);
}

/* Reads (or, when `out`, sends) exactly len bytes; false when the peer went or failed. */
static bool whole(int fd, void *buf, size_t len, bool out)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = out ? send(fd, (char *)buf + off, len - off, MSG_NOSIGNAL) : read(fd, (char *)buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    return true;
}

static bool send_reply(int fd, uint32_t request, const void *body, uint32_t size)
{
    uint8_t m[12 + 16];
    uint32_t h[3] = {request, FLAG_VERSION | FLAG_REPLY, size};
    memcpy(m, h, 12);
    memcpy(m + 12, body, size);
    return whole(fd, m, 12 + size, true);
}

static bool reply_u64(int fd, uint32_t request, uint64_t v)
{
    return send_reply(fd, request, &v, 8);
}

/* The message's first descriptor, taken (the caller closes those not taken), or -1. */
static int take(int *fds, int nfds)
{
    if (nfds == 0 || fds[0] < 0)
        return -1;
    int fd = fds[0];
    fds[0] = -1;
    return fd;
}

#define NEED(bytes)                                                                                                    \
    do {                                                                                                               \
        if (size < (bytes)) {                                                                                          \
            LOG("request %u payload is %u bytes, needs %u; dropping the connection", request, size, (unsigned)(bytes)); \
            return -1;                                                                                                 \
        }                                                                                                              \
    } while (0)

static struct vq *queue_of(uint32_t index, uint32_t request)
{
    if (index >= QUEUES) {
        LOG("request %u names queue %u; there are %d; dropping the connection", request, index, QUEUES);
        return NULL;
    }
    return &queues[index];
}

/* A struct vhost_vring_state message (index, num): its queue, or NULL (logged) when the
 * message is short or names no queue. */
static struct vq *vring_state(uint32_t request, const uint8_t *p, uint32_t size, uint32_t *num)
{
    uint32_t state[2];
    if (size < sizeof(state)) {
        LOG("request %u payload is %u bytes, needs 8; dropping the connection", request, size);
        return NULL;
    }
    memcpy(state, p, sizeof(state));
    *num = state[1];
    return queue_of(state[0], request);
}

/* Handles one message; -1 drops the connection. *replied says whether it answered. */
static int handle(int conn, uint32_t request, const uint8_t *p, uint32_t size, int *fds, int nfds, bool *replied)
{
    uint32_t u32[2], num;
    uint64_t u64;
    struct vq *q;
    *replied = false;
    switch (request) {
    case GET_FEATURES:
        *replied = true;
        return reply_u64(conn, request, FEATURES) ? 0 : -1;
    case SET_FEATURES:
        NEED(8);
        memcpy(&acked_features, p, 8);
        if (acked_features & ~FEATURES) {
            LOG("front-end acked features 0x%llx beyond the offered 0x%llx", (unsigned long long)acked_features,
                (unsigned long long)FEATURES);
            return -1;
        }
        if (acked_features & F_LOG_ALL) {
            LOG("front-end started dirty logging, which needs a running VM's live migration");
            return -1;
        }
        return 0;
    case GET_PROTOCOL_FEATURES:
        *replied = true;
        return reply_u64(conn, request, PROTOCOL_FEATURES) ? 0 : -1;
    case SET_PROTOCOL_FEATURES:
        NEED(8);
        memcpy(&u64, p, 8);
        acked_protocol_features = u64 & PROTOCOL_FEATURES;
        return 0;
    case GET_QUEUE_NUM:
        *replied = true;
        return reply_u64(conn, request, QUEUES) ? 0 : -1;
    case SET_OWNER:
        return 0;
    case RESET_OWNER:
        for (int i = 0; i < QUEUES; i++)
            reset_queue(&queues[i]);
        return 0;
    case SET_MEM_TABLE: {
        /* The region files are not mapped: memory is reached through the front-end process. */
        NEED(8);
        memcpy(u32, p, 8);
        if (u32[0] < 1 || u32[0] > MAX_REGIONS) {
            LOG("memory table has %u regions; 1..%d expected", u32[0], MAX_REGIONS);
            return -1;
        }
        NEED(8 + 32 * u32[0]);
        struct memory m = {.pid = memory.pid, .n = (int)u32[0]};
        for (int i = 0; i < m.n; i++) {
            uint64_t r[4];
            memcpy(r, p + 8 + 32 * i, 32);
            m.r[i] = (struct region){.gpa = r[0], .size = r[1], .hva = r[2]};
            if (!r[1] || r[0] + r[1] < r[0] || r[2] + r[1] < r[2] || !r[2]) {
                LOG("memory region %d (0x%llx+0x%llx at 0x%llx) wraps or is empty", i, (unsigned long long)r[0],
                    (unsigned long long)r[1], (unsigned long long)r[2]);
                return -1;
            }
        }
        memory = m;
        have_memory = true;
        return 0;
    }
    case SET_VRING_NUM:
        if (!(q = vring_state(request, p, size, &num)))
            return -1;
        if (num == 0 || num > 32768 || (num & (num - 1))) {
            LOG("queue %d size %u is not a power of two up to 32768", q->index, num);
            return -1;
        }
        q->size = num;
        return 0;
    case SET_VRING_ADDR: {
        NEED(40);
        uint64_t a[4];
        memcpy(u32, p, 8);
        memcpy(a, p + 8, 32);
        if (!(q = queue_of(u32[0], request)))
            return -1;
        q->desc = a[0];
        q->used = a[1];
        q->avail = a[2];
        q->used_idx = -1;
        return 0;
    }
    case SET_VRING_BASE:
        if (!(q = vring_state(request, p, size, &num)))
            return -1;
        q->last_avail = (uint16_t)num;
        q->used_idx = -1;
        return 0;
    case GET_VRING_BASE:
        if (!(q = vring_state(request, p, size, &num)))
            return -1;
        u32[0] = (uint32_t)q->index;
        u32[1] = q->last_avail;
        q->enabled = false;
        if (q->kick >= 0) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, q->kick, NULL);
            close(q->kick);
            q->kick = -1;
        }
        *replied = true;
        return send_reply(conn, request, u32, 8) ? 0 : -1;
    case SET_VRING_KICK:
    case SET_VRING_CALL:
    case SET_VRING_ERR: {
        NEED(8);
        memcpy(&u64, p, 8);
        if (!(q = queue_of((uint32_t)(u64 & 0xff), request)))
            return -1;
        if (request == SET_VRING_ERR)
            return 0; /* errors go to the log, not the front-end; its eventfd is closed */
        int fd = (u64 & 0x100) ? -1 : take(fds, nfds);
        if (request == SET_VRING_CALL) {
            if (q->call >= 0)
                close(q->call);
            q->call = fd;
            return 0;
        }
        if (fd < 0) {
            LOG("queue %d has no kick eventfd; polling is not supported", q->index);
            return -1;
        }
        if (q->kick >= 0) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, q->kick, NULL);
            close(q->kick);
        }
        /* Non-blocking: a kick reported before the descriptor changed must not block the loop. */
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            LOG("queue %d: kick eventfd: %s", q->index, strerror(errno));
            close(fd);
            return -1;
        }
        q->kick = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(TAG_KICK0 + q->index)};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            LOG("queue %d: watch kick eventfd: %s", q->index, strerror(errno));
            return -1;
        }
        if (!(acked_features & F_PROTOCOL_FEATURES))
            q->enabled = true;
        return 0;
    }
    case SET_VRING_ENABLE:
        if (!(q = vring_state(request, p, size, &num)))
            return -1;
        q->enabled = num != 0;
        if (q->enabled)
            q->broken = false;
        return 0;
    case SET_DEVICE_STATE_FD: {
        NEED(8);
        memcpy(u32, p, 8);
        if (nfds == 0 || u32[1] != 0 || u32[0] > 1) {
            LOG("device state transfer direction %u phase %u%s is not supported", u32[0], u32[1],
                nfds == 0 ? " without a descriptor" : "");
            return -1;
        }
        int fd = take(fds, nfds);
        uint64_t result = 0x100; /* success, no descriptor of ours */
        if (u32[0] == 0) {
            if (fuse_mounted()) {
                LOG("refusing to save state: the guest has mounted the file system, and a FUSE session cannot move to a clone");
                result = 0x100 | 1;
            } else if (write(fd, STATE, strlen(STATE)) != (ssize_t)strlen(STATE)) {
                LOG("save device state: %s", strerror(errno));
                result = 0x100 | 1;
            }
            close(fd);
        } else {
            if (load_fd >= 0)
                close(load_fd);
            load_fd = fd; /* QEMU writes after our reply; read at CHECK_DEVICE_STATE */
        }
        *replied = true;
        return reply_u64(conn, request, result) ? 0 : -1;
    }
    case CHECK_DEVICE_STATE: {
        uint64_t result = 0;
        if (load_fd >= 0) {
            char got[64];
            size_t total = 0;
            ssize_t n;
            while (total < sizeof(got) && (n = read(load_fd, got + total, sizeof(got) - total)) > 0)
                total += (size_t)n;
            if (total != strlen(STATE) || memcmp(got, STATE, total)) {
                LOG("template back-end state (%zu bytes) is not \"rund-virtiofs 1\"", total);
                result = 1;
            }
            close(load_fd);
            load_fd = -1;
        }
        *replied = true;
        return reply_u64(conn, request, result) ? 0 : -1;
    }
    case SET_LOG_BASE:
    case SET_LOG_FD:
        LOG("front-end asked for dirty logging (request %u), which only a running VM's live migration needs", request);
        return -1;
    default:
        LOG("request %u is not supported", request);
        return -1;
    }
}

int vhost_message(int conn)
{
    uint32_t hdr[3];
    int fds[MAX_FDS], nfds = 0;
    char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct iovec iov = {hdr, sizeof(hdr)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
    ssize_t n;
    do
        n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return 0;
    if (n < 0) {
        LOG("receive from the front-end: %s", strerror(errno));
        return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k && nfds < MAX_FDS; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    int result = -1;
    static uint8_t payload[MAX_PAYLOAD] __attribute__((aligned(8)));
    if (msg.msg_flags & MSG_CTRUNC) {
        LOG("front-end sent more than %d descriptors with one message", MAX_FDS);
        goto out;
    }
    if ((size_t)n < sizeof(hdr) && !whole(conn, (char *)hdr + n, sizeof(hdr) - (size_t)n, false)) {
        LOG("front-end closed the connection in the middle of a message header");
        goto out;
    }
    uint32_t request = hdr[0], flags = hdr[1], size = hdr[2];
    if (size > MAX_PAYLOAD) {
        LOG("request %u has a payload of %u bytes, more than %d", request, size, MAX_PAYLOAD);
        goto out;
    }
    if (!whole(conn, payload, size, false)) {
        LOG("front-end closed the connection in the middle of request %u", request);
        goto out;
    }
    bool replied;
    result = handle(conn, request, payload, size, fds, nfds, &replied);
    if (result == 0 && !replied && (flags & FLAG_NEED_REPLY) && (acked_protocol_features & PF_REPLY_ACK))
        result = reply_u64(conn, request, 0) ? 0 : -1;
    /* A message may have made a queue ready with requests the guest queued before. */
    for (int i = 0; result == 0 && i < QUEUES; i++)
        serve(&queues[i]);
out:
    for (int i = 0; i < nfds; i++) {
        if (fds[i] >= 0)
            close(fds[i]); /* those the handler did not take */
    }
    return result < 0 ? -1 : 1;
}
