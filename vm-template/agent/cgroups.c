/* Calls answered from a container's cgroup in the guest: its pids, its numbers (Stats), freezing
 * it, updating its limits; and reading and writing cgroup files, which process.c uses too. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "spawn.h"
#include "ttrpc.h"

/* The cgroup directory of a container, copied out under the lock. */
static int cgroup_of(struct fault *f, const char *cid, char *out, size_t cap)
{
    if (check_id(f, "container_id", cid, false))
        return -1;
    pthread_mutex_lock(&g_lock);
    struct container *c = find_container(cid);
    if (c)
        snprintf(out, cap, "%s", c->cgroup);
    pthread_mutex_unlock(&g_lock);
    return c ? 0 : fail(f, CODE_NOT_FOUND, "container %s", cid);
}



int read_file(const char *dir, const char *name, char *buf, size_t cap)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return 0;
}



int write_file(const char *dir, const char *name, const char *value)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    errno = e;
    return n < 0 ? -1 : 0;
}

/* A single number ("max" is 0), or the value of `key` in a "key value" file. */
uint64_t number(const char *dir, const char *name, const char *key)
{
    char buf[4096];
    if (read_file(dir, name, buf, sizeof(buf)))
        return 0;
    const char *p = buf;
    if (key) {
        size_t kl = strlen(key);
        for (p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
            if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
                break;
        if (!p || !*p)
            return 0;
        p += kl + 1;
    }
    return strncmp(p, "max", 3) == 0 ? 0 : strtoull(p, NULL, 10);
}



int container_pids(const char *cid, uint32_t **pids, size_t *n, struct fault *f)
{
    char cg[256], buf[65536];
    if (cgroup_of(f, cid, cg, sizeof(cg)))
        return -1;
    if (read_file(cg, "cgroup.procs", buf, sizeof(buf)))
        return fail(f, CODE_INTERNAL, "read %s/cgroup.procs: %s", cg, strerror(errno));
    size_t cap = 16;
    *pids = malloc(cap * sizeof(uint32_t));
    *n = 0;
    for (char *p = buf; *p;) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p)
            break;
        if (*n == cap)
            *pids = realloc(*pids, (cap *= 2) * sizeof(uint32_t));
        (*pids)[(*n)++] = (uint32_t)v;
        p = end;
        while (*p == '\n')
            p++;
    }
    return 0;
}


int container_stats(const char *cid, Rund__Agent__V1__StatsResponse *out, struct fault *f)
{
    char cg[256];
    if (cgroup_of(f, cid, cg, sizeof(cg)))
        return -1;
    out->cpu_usage_usec = number(cg, "cpu.stat", "usage_usec");
    out->cpu_user_usec = number(cg, "cpu.stat", "user_usec");
    out->cpu_system_usec = number(cg, "cpu.stat", "system_usec");
    out->memory_usage_bytes = number(cg, "memory.current", NULL);
    out->memory_limit_bytes = number(cg, "memory.max", NULL);
    out->pids_current = number(cg, "pids.current", NULL);
    out->pids_limit = number(cg, "pids.max", NULL);
    out->oom_kills = number(cg, "memory.events", "oom_kill");
    return 0;
}


int container_freeze(const char *cid, bool freeze, struct fault *f)
{
    char cg[256];
    if (cgroup_of(f, cid, cg, sizeof(cg)))
        return -1;
    if (write_file(cg, "cgroup.freeze", freeze ? "1" : "0"))
        return fail(f, CODE_INTERNAL, "write %s/cgroup.freeze: %s", cg, strerror(errno));
    /* Freezing completes asynchronously; wait until cgroup.events says so (bounded). */
    for (int i = 0; i < 500; i++) {
        if (number(cg, "cgroup.events", "frozen") == (freeze ? 1u : 0u))
            return 0;
        usleep(10000);
    }
    return fail(f, CODE_DEADLINE_EXCEEDED, "container %s did not %s within 5 s", cid, freeze ? "freeze" : "thaw");
}


static int put(struct fault *f, const char *dir, const char *file, const char *field, const char *value)
{
    if (write_file(dir, file, value))
        return fail(f, CODE_INVALID_ARGUMENT, "%s %s (%s): %s", field, value,
                    file, strerror(errno));
    return 0;
}

/* A limit in bytes or count, or "max" for -1 (and for 0 where 0 means none). */
static void limit(char *v, size_t cap, int64_t n, bool zero_is_max)
{
    if (n < 0 || (zero_is_max && n == 0))
        snprintf(v, cap, "max");
    else
        snprintf(v, cap, "%lld", (long long)n);
}

int cgroup_apply(struct fault *f, const char *cg, const Rund__Agent__V1__Resources *r, int *device_prog)
{
    if (device_prog && devices_apply(f, cg, r->devices, r->n_devices, device_prog))
        return -1;
    char v[96];
    if (r->memory_limit) {
        limit(v, sizeof(v), r->memory_limit->value, false);
        if (put(f, cg, "memory.max", "memory.limit", v))
            return -1;
    }
    if (r->memory_swap) {
        /* The spec's swap is memory + swap; cgroup v2 limits swap alone (runc's conversion). */
        int64_t want = r->memory_swap->value;
        if (!r->memory_limit && want != -1)
            return fail(f, CODE_INVALID_ARGUMENT, "memory.swap %lld needs memory.limit", (long long)want);
        int64_t lim = r->memory_limit ? r->memory_limit->value : -1;
        if (want >= 0 && lim >= 0 && want < lim)
            return fail(f, CODE_INVALID_ARGUMENT, "memory.swap %lld is below memory.limit %lld", (long long)want,
                        (long long)lim);
        int64_t swap = want < 0 || lim < 0 ? -1 : want - lim;
        limit(v, sizeof(v), swap, false);
        /* The guest has no swap (no memory.swap.max): none is what any limit allows there. */
        char probe[8];
        if (read_file(cg, "memory.swap.max", probe, sizeof(probe)) == 0 && put(f, cg, "memory.swap.max", "memory.swap", v))
            return -1;
    }
    if (r->memory_reservation) {
        limit(v, sizeof(v), r->memory_reservation->value, false);
        if (put(f, cg, "memory.low", "memory.reservation", v))
            return -1;
    }
    if (r->cpu_shares && r->cpu_shares->value != 0) {
        if (r->cpu_shares->value < 2 || r->cpu_shares->value > 262144)
            return fail(f, CODE_INVALID_ARGUMENT, "cpu.shares %llu is outside 2..262144", (unsigned long long)r->cpu_shares->value);
        /* runc's mapping of v1 shares onto v2 weight: 2..262144 -> 1..10000. */
        snprintf(v, sizeof(v), "%llu", (unsigned long long)(1 + ((r->cpu_shares->value - 2) * 9999) / 262142));
        if (put(f, cg, "cpu.weight", "cpu.shares", v))
            return -1;
    }
    if (r->cpu_quota || r->cpu_period) {
        char now[96] = "max 100000";
        read_file(cg, "cpu.max", now, sizeof(now));
        char quota[32] = "max";
        unsigned long long period = 100000;
        sscanf(now, "%31s %llu", quota, &period);
        if (r->cpu_period && r->cpu_period->value) {
            if (r->cpu_period->value < 1000 || r->cpu_period->value > 1000000)
                return fail(f, CODE_INVALID_ARGUMENT, "cpu.period %llu is outside 1000..1000000",
                            (unsigned long long)r->cpu_period->value);
            period = r->cpu_period->value;
        }
        if (r->cpu_quota)
            limit(quota, sizeof(quota), r->cpu_quota->value, true);
        snprintf(v, sizeof(v), "%s %llu", quota, period);
        if (put(f, cg, "cpu.max", "cpu.quota and cpu.period", v))
            return -1;
    }
    if (r->cpuset_cpus[0] && put(f, cg, "cpuset.cpus", "cpu.cpus", r->cpuset_cpus))
        return -1;
    if (r->cpuset_mems[0] && put(f, cg, "cpuset.mems", "cpu.mems", r->cpuset_mems))
        return -1;
    if (r->pids_limit) {
        limit(v, sizeof(v), r->pids_limit->value, true);
        if (put(f, cg, "pids.max", "pids.limit", v))
            return -1;
    }
    return 0;
}

int container_update(const Rund__Agent__V1__UpdateResourcesRequest *req, struct fault *f)
{
    if (check_id(f, "container_id", req->container_id, false))
        return -1;
    char cg[256];
    if (cgroup_of(f, req->container_id, cg, sizeof(cg)))
        return -1;
    if (!req->resources)
        return 0;
    /* Limits without the lock (shrinking memory.max reclaims, which takes its time); the
     * device program, swapped in the container's record, under it. */
    if (cgroup_apply(f, cg, req->resources, NULL))
        return -1;
    if (req->resources->n_devices == 0)
        return 0;
    pthread_mutex_lock(&g_lock);
    struct container *c = find_container(req->container_id);
    int rc = c ? devices_apply(f, c->cgroup, req->resources->devices, req->resources->n_devices, &c->device_prog)
               : fail(f, CODE_NOT_FOUND, "container %s", req->container_id);
    pthread_mutex_unlock(&g_lock);
    return rc;
}
