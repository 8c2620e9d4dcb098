/* Split virtqueues as vhost-user hands them over, and the guest memory they live in.
 *
 * Guest memory is reached through the front-end (QEMU) process with process_vm_readv and
 * process_vm_writev, never through the memory files QEMU offers: a template's clone maps
 * its RAM file privately, and only QEMU's page tables know which pages the clone made its
 * own. The kernel lets this process reach only processes of its own uid: its own VM's.
 *
 * Every address the guest gives is checked against the memory table before use; a buffer
 * not wholly inside one region, a chain that loops or runs past the table, an indirect
 * descriptor (not offered), an available index more than a ring ahead: the queue stops,
 * and the log names the bad value. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "helper.h"

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4
#define AVAIL_F_NO_INTERRUPT 1
#define MAX_SEGS 1024 /* iovecs per process_vm_*v call (IOV_MAX) */

uint64_t gpa_to_hva(const struct memory *m, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < m->n; i++) {
        const struct region *r = &m->r[i];
        if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len)
            return r->hva + (gpa - r->gpa);
    }
    return 0;
}

bool hva_ok(const struct memory *m, uint64_t hva, uint64_t len)
{
    for (int i = 0; i < m->n; i++) {
        const struct region *r = &m->r[i];
        if (hva >= r->hva && len <= r->size && hva - r->hva <= r->size - len)
            return true;
    }
    return false;
}

static int transfer(const struct memory *m, const struct iovec *local, int nlocal, const struct iovec *remote,
                    int nremote, size_t want, bool write)
{
    ssize_t n = write ? process_vm_writev(m->pid, local, (unsigned long)nlocal, remote, (unsigned long)nremote, 0)
                      : process_vm_readv(m->pid, local, (unsigned long)nlocal, remote, (unsigned long)nremote, 0);
    if (n < 0)
        return -errno;
    if ((size_t)n != want)
        return -EFAULT; /* a page the front-end does not map */
    return 0;
}

int mem_read(const struct memory *m, uint64_t hva, void *buf, size_t len)
{
    struct iovec l = {buf, len}, r = {(void *)(uintptr_t)hva, len};
    return transfer(m, &l, 1, &r, 1, len, false);
}

int mem_write(const struct memory *m, uint64_t hva, const void *buf, size_t len)
{
    struct iovec l = {(void *)buf, len}, r = {(void *)(uintptr_t)hva, len};
    return transfer(m, &l, 1, &r, 1, len, true);
}

bool vq_ready(const struct vq *q)
{
    return q->enabled && !q->broken && q->size > 0 && q->desc && q->avail && q->used && q->kick >= 0;
}

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static uint8_t request[MAX_REQUEST];
static uint8_t reply[MAX_REPLY] __attribute__((aligned(8)));
static struct iovec segs[MAX_SEGS];

static bool bad(struct vq *q, const char *what, unsigned long long value)
{
    LOG("queue %d: %s %llu; the queue stops", q->index, what, value);
    q->broken = true;
    return false;
}

static bool io_failed(struct vq *q, const char *what, int err)
{
    LOG("queue %d: %s: %s; the queue stops", q->index, what, strerror(-err));
    q->broken = true;
    return false;
}

/* Reads the chain at `head`, serves it, writes the reply; *written gets its length. */
static bool serve_chain(struct vq *q, const struct memory *m, uint16_t head, handler_fn handler, uint32_t *written)
{
    static struct desc chain[32768];
    static uint64_t hva[32768];
    if (head >= q->size)
        return bad(q, "head descriptor outside the table: index", head);
    uint32_t n = 0;
    uint64_t readable = 0, capacity = 0;
    uint16_t i = head;
    for (;;) {
        if (n == q->size)
            return bad(q, "descriptor chain loops: from head", head);
        struct desc *d = &chain[n];
        int err = mem_read(m, q->desc + 16ull * i, d, sizeof(*d));
        if (err)
            return io_failed(q, "read descriptor", err);
        if (d->flags & F_INDIRECT)
            return bad(q, "indirect descriptor (not offered) at index", i);
        if (d->len && !(hva[n] = gpa_to_hva(m, d->addr, d->len))) {
            LOG("queue %d: descriptor %u buffer 0x%llx+%u is outside the guest's memory; the queue stops", q->index, i,
                (unsigned long long)d->addr, d->len);
            q->broken = true;
            return false;
        }
        if (d->flags & F_WRITE)
            capacity += d->len;
        else if (capacity > 0)
            return bad(q, "readable descriptor after a writable one at index", i);
        else
            readable += d->len;
        n++;
        if (!(d->flags & F_NEXT))
            break;
        i = d->next;
        if (i >= q->size)
            return bad(q, "next descriptor outside the table: index", i);
    }
    if (readable > MAX_CHAIN_BYTES || capacity > MAX_CHAIN_BYTES)
        return bad(q, "chain spans more than 4 MiB from head", head);
    /* What of the request we read: at most MAX_REQUEST bytes; FUSE's header says the rest. */
    size_t want = readable < MAX_REQUEST ? (size_t)readable : MAX_REQUEST, got = 0;
    int nseg = 0;
    for (uint32_t k = 0; k < n && got < want && !(chain[k].flags & F_WRITE); k++) {
        if (!chain[k].len)
            continue;
        size_t take = chain[k].len < want - got ? chain[k].len : want - got;
        if (nseg == MAX_SEGS)
            return bad(q, "chain has too many buffers from head", head);
        segs[nseg++] = (struct iovec){(void *)(uintptr_t)hva[k], take};
        got += take;
    }
    if (got) {
        struct iovec local = {request, got};
        int err = transfer(m, &local, 1, segs, nseg, got, false);
        if (err)
            return io_failed(q, "read request", err);
    }
    size_t cap = capacity < MAX_REPLY ? (size_t)capacity : MAX_REPLY;
    size_t len = handler(request, got, (size_t)readable, reply, cap);
    *written = (uint32_t)len;
    if (!len)
        return true;
    nseg = 0;
    size_t off = 0;
    for (uint32_t k = 0; k < n && off < len; k++) {
        if (!(chain[k].flags & F_WRITE) || !chain[k].len)
            continue;
        size_t take = chain[k].len < len - off ? chain[k].len : len - off;
        if (nseg == MAX_SEGS)
            return bad(q, "chain has too many buffers from head", head);
        segs[nseg++] = (struct iovec){(void *)(uintptr_t)hva[k], take};
        off += take;
    }
    struct iovec local = {reply, len};
    int err = transfer(m, &local, 1, segs, nseg, len, true);
    if (err)
        return io_failed(q, "write reply", err);
    return true;
}

bool vq_process(struct vq *q, const struct memory *m, handler_fn handler)
{
    if (!hva_ok(m, q->avail, 4 + 2ull * q->size) || !hva_ok(m, q->used, 4 + 8ull * q->size)
        || !hva_ok(m, q->desc, 16ull * q->size)) {
        LOG("queue %d: ring addresses desc 0x%llx avail 0x%llx used 0x%llx are outside the guest's memory; the queue stops",
            q->index, (unsigned long long)q->desc, (unsigned long long)q->avail, (unsigned long long)q->used);
        q->broken = true;
        return false;
    }
    uint16_t avail_idx;
    int err = mem_read(m, q->avail + 2, &avail_idx, 2);
    if (err)
        return io_failed(q, "read available index", err);
    if ((uint16_t)(avail_idx - q->last_avail) > q->size) {
        LOG("queue %d: available index %u is more than %u ahead of %u; the queue stops", q->index, avail_idx, q->size,
            q->last_avail);
        q->broken = true;
        return false;
    }
    if (q->used_idx < 0) {
        uint16_t u;
        if ((err = mem_read(m, q->used + 2, &u, 2)))
            return io_failed(q, "read used index", err);
        q->used_idx = u;
    }
    int served = 0;
    while (q->last_avail != avail_idx) {
        uint16_t head;
        if ((err = mem_read(m, q->avail + 4 + 2ull * (q->last_avail % q->size), &head, 2)))
            return io_failed(q, "read available ring", err);
        uint32_t written = 0;
        if (!serve_chain(q, m, head, handler, &written))
            return false;
        uint32_t elem[2] = {head, written};
        if ((err = mem_write(m, q->used + 4 + 8ull * ((uint16_t)q->used_idx % q->size), elem, sizeof(elem))))
            return io_failed(q, "write used ring", err);
        q->used_idx = (uint16_t)(q->used_idx + 1);
        uint16_t u = (uint16_t)q->used_idx;
        /* After the element: the guest reads the index, then the element. */
        if ((err = mem_write(m, q->used + 2, &u, 2)))
            return io_failed(q, "write used index", err);
        q->last_avail++;
        served++;
    }
    if (served && q->call >= 0) {
        uint16_t flags;
        if ((err = mem_read(m, q->avail, &flags, 2)))
            return io_failed(q, "read available flags", err);
        if (!(flags & AVAIL_F_NO_INTERRUPT)) {
            uint64_t one = 1;
            if (write(q->call, &one, 8) < 0)
                LOG("queue %d: signal the guest: %s", q->index, strerror(errno));
        }
    }
    return true;
}
