/* A container's device rules (the OCI spec's linux.resources.devices, then runc's own
 * allowed devices after them, as runc appends them) as a BPF program on its cgroup, as runc
 * applies them on cgroup v2: the rules are read from the last to the first and the first
 * that matches decides (cgroup v1's "the later rule wins"); none matching denies. An allow
 * rule matches an access it covers whole (reading /dev/null under "rwm"); a deny rule
 * matches an access that asks for anything it names. The program is attached with
 * BPF_F_ALLOW_MULTI; an update attaches the new one, then detaches the old.
 *
 * Loading a program is the verifier's work, ~20-40 ms under TCG: programs are kept by their
 * rules and reused (a pod's containers have the same), and the one for the rules
 * containerd's default spec gives nearly every container is loaded when the agent starts,
 * which is before a template is saved, so every clone has it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"
#include "spawn.h"
#include "ttrpc.h"

#define MAX_DEVICE_RULES 256
/* Per rule at most: type check, access (3), major, minor, result (2). */
#define MAX_INSNS (8 + (MAX_DEVICE_RULES + 16) * 8 + 2)

/* One rule: allow or deny `access` (BPF_DEVCG_ACC_* bits) to devices of `type` (0: any;
 * BPF_DEVCG_DEV_*), `major`:`minor` (-1: any). */
struct rule {
    bool allow;
    int32_t type;
    int64_t major, minor;
    int32_t access;
};

#define ACC_ALL (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD)
#define ACC_M BPF_DEVCG_ACC_MKNOD
#define CHR BPF_DEVCG_DEV_CHAR

/* runc's allowed devices (its specconv's), which it appends to every container's rules:
 * mknod of any device, null, random, full, tty, zero, urandom, the pty slaves, ptmx, tun. */
static const struct rule RUNC_ALLOWED[] = {
    {true, CHR, -1, -1, ACC_M}, {true, BPF_DEVCG_DEV_BLOCK, -1, -1, ACC_M}, {true, CHR, 1, 3, ACC_ALL},
    {true, CHR, 1, 8, ACC_ALL}, {true, CHR, 1, 7, ACC_ALL},    {true, CHR, 5, 0, ACC_ALL},
    {true, CHR, 1, 5, ACC_ALL}, {true, CHR, 1, 9, ACC_ALL},    {true, CHR, 136, -1, ACC_ALL},
    {true, CHR, 5, 2, ACC_ALL}, {true, CHR, 10, 200, ACC_ALL},
};
#define NALLOWED (sizeof(RUNC_ALLOWED) / sizeof(RUNC_ALLOWED[0]))

/* containerd's default spec's rules (ctr's and CRI's containers): deny all, then null,
 * random, full, tty, zero, urandom, console, the pty slaves, ptmx. */
static const struct rule CONTAINERD_DEFAULT[] = {
    {false, 0, -1, -1, ACC_ALL},  {true, CHR, 1, 3, ACC_ALL}, {true, CHR, 1, 8, ACC_ALL}, {true, CHR, 1, 7, ACC_ALL},
    {true, CHR, 5, 0, ACC_ALL},   {true, CHR, 1, 5, ACC_ALL}, {true, CHR, 1, 9, ACC_ALL}, {true, CHR, 5, 1, ACC_ALL},
    {true, CHR, 136, -1, ACC_ALL}, {true, CHR, 5, 2, ACC_ALL},
};

/* Loaded programs by their rules (guarded by `building` in load); a handful are ever needed. */
#define MAX_KEPT 8
static struct {
    struct rule rules[MAX_DEVICE_RULES];
    size_t n;
    int fd;
} g_kept[MAX_KEPT];
static size_t g_nkept;

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
    return (struct bpf_insn){.code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

static int access_bits(struct fault *f, const char *access, int32_t *out)
{
    *out = 0;
    for (const char *c = access; *c; c++) {
        if (*c == 'r')
            *out |= BPF_DEVCG_ACC_READ;
        else if (*c == 'w')
            *out |= BPF_DEVCG_ACC_WRITE;
        else if (*c == 'm')
            *out |= BPF_DEVCG_ACC_MKNOD;
        else
            return fail(f, CODE_INVALID_ARGUMENT, "device rule access %.8s is not some of rwm", access);
    }
    if (*out == 0)
        *out = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD; /* "" is all, as runc reads it */
    return 0;
}

/* The spec's rule as one of ours; -1 with f set when it is not one. */
static int rule_of(struct fault *f, const Rund__Agent__V1__DeviceRule *r, struct rule *out)
{
    out->allow = r->allow;
    if (access_bits(f, r->access, &out->access))
        return -1;
    if (strcmp(r->type, "c") == 0)
        out->type = BPF_DEVCG_DEV_CHAR;
    else if (strcmp(r->type, "b") == 0)
        out->type = BPF_DEVCG_DEV_BLOCK;
    else if (strcmp(r->type, "a") == 0 || !r->type[0])
        out->type = 0;
    else
        return fail(f, CODE_INVALID_ARGUMENT, "device rule type %.8s is not a, b or c", r->type);
    out->major = r->major ? r->major->value : -1;
    out->minor = r->minor ? r->minor->value : -1;
    if (out->major < -1 || out->major > 0xFFFFFFFFLL || out->minor < -1 || out->minor > 0xFFFFFFFFLL)
        return fail(f, CODE_INVALID_ARGUMENT, "device rule number out of range");
    return 0;
}

/* Builds the program: r2 = device type, r3 = requested access, r4 = major, r5 = minor. */
static size_t build(const struct rule *rules, size_t n, struct bpf_insn *p)
{
    size_t k = 0;
    p[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_1, 0, 0);
    p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_2, 0, 0);
    p[k++] = insn(BPF_ALU | BPF_RSH | BPF_K, BPF_REG_3, 0, 0, 16);
    p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xFFFF);
    p[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_4, BPF_REG_1, 4, 0);
    p[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_5, BPF_REG_1, 8, 0);
    for (size_t i = n; i-- > 0;) {
        const struct rule *r = &rules[i];
        /* The jumps below skip to the next rule; their offsets are set once its length is known. */
        size_t jumps[4], nj = 0;
        if (r->type) {
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, 0, r->type);
        }
        p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_3, 0, 0);
        if (r->allow) {
            /* Matches when every requested access is allowed: requested & ~access == 0. */
            p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_6, 0, 0, ~r->access & 7);
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_6, 0, 0, 0);
        } else {
            /* Matches when any requested access is denied: requested & access != 0. */
            p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_6, 0, 0, r->access);
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_6, 0, 0, 0);
        }
        if (r->major >= 0) {
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, 0, (int32_t)r->major);
        }
        if (r->minor >= 0) {
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, 0, (int32_t)r->minor);
        }
        p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, r->allow ? 1 : 0);
        p[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
        for (size_t j = 0; j < nj; j++)
            p[jumps[j]].off = (int16_t)(k - jumps[j] - 1);
    }
    p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
    p[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    return k;
}

/* Loads the program of `rules` (runc's appended); its fd, or -1 with f set. */
static int load(struct fault *f, const struct rule *rules, size_t n)
{
    static struct bpf_insn program[MAX_INSNS];
    static struct rule all[MAX_DEVICE_RULES + NALLOWED];
    static char log[4096];
    static pthread_mutex_t building = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&building);
    for (size_t i = 0; i < g_nkept; i++)
        if (g_kept[i].n == n && memcmp(g_kept[i].rules, rules, n * sizeof(rules[0])) == 0) {
            int fd = fcntl(g_kept[i].fd, F_DUPFD_CLOEXEC, 3);
            pthread_mutex_unlock(&building);
            if (fd < 0)
                fail(f, CODE_INTERNAL, "duplicate the device program: %s", strerror(errno));
            return fd;
        }
    memcpy(all, rules, n * sizeof(all[0]));
    memcpy(all + n, RUNC_ALLOWED, sizeof(RUNC_ALLOWED));
    size_t len = build(all, n + NALLOWED, program);
    int prog = -1;
    /* Without the verifier's log first (it would fill any small buffer); with it, to say why, when that fails. */
    for (int verbose = 0; verbose <= 1 && prog < 0; verbose++) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
        attr.insns = (uint64_t)(uintptr_t)program;
        attr.insn_cnt = (uint32_t)len;
        attr.license = (uint64_t)(uintptr_t)"Apache";
        if (verbose) {
            log[0] = 0;
            attr.log_buf = (uint64_t)(uintptr_t)log;
            attr.log_size = sizeof(log);
            attr.log_level = 1;
        }
        prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
    }
    if (prog < 0) {
        size_t l = strlen(log);
        fail(f, CODE_INTERNAL, "load the device program: %s (%.160s)", strerror(errno), l > 160 ? log + l - 160 : log);
    } else if (g_nkept < MAX_KEPT) {
        int keep = fcntl(prog, F_DUPFD_CLOEXEC, 3);
        if (keep >= 0) {
            memcpy(g_kept[g_nkept].rules, rules, n * sizeof(rules[0]));
            g_kept[g_nkept].n = n;
            g_kept[g_nkept++].fd = keep;
        }
    }
    pthread_mutex_unlock(&building);
    return prog;
}

void devices_preload(void)
{
    struct fault f = {0};
    int fd = load(&f, CONTAINERD_DEFAULT, sizeof(CONTAINERD_DEFAULT) / sizeof(CONTAINERD_DEFAULT[0]));
    if (fd < 0)
        alog("preload the usual device program: %s", f.message);
    else
        close(fd); /* kept */
}

/* The kernel's id of a loaded program; 0 when it cannot be read. */
static uint32_t prog_id(int fd)
{
    struct bpf_prog_info info;
    union bpf_attr attr;
    memset(&info, 0, sizeof(info));
    memset(&attr, 0, sizeof(attr));
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = sizeof(info);
    attr.info.info = (uint64_t)(uintptr_t)&info;
    return syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) == 0 ? info.id : 0;
}

int devices_apply(struct fault *f, const char *cg, Rund__Agent__V1__DeviceRule **rules, size_t n, int *prog_fd)
{
    if (n == 0)
        return 0;
    if (n > MAX_DEVICE_RULES)
        return fail(f, CODE_INVALID_ARGUMENT, "%zu device rules are more than %d", n, MAX_DEVICE_RULES);
    struct rule mine[MAX_DEVICE_RULES];
    memset(mine, 0, n * sizeof(mine[0])); /* padding too: kept programs are found by memcmp */
    for (size_t i = 0; i < n; i++)
        if (rule_of(f, rules[i], &mine[i]))
            return -1;
    int prog = load(f, mine, n);
    if (prog < 0)
        return -1;
    uint32_t id = prog_id(prog);
    if (*prog_fd >= 0 && id != 0 && id == prog_id(*prog_fd)) {
        close(prog); /* the same program holds already (an update with the same rules) */
        return 0;
    }
    int dir = open(cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    union bpf_attr attach;
    memset(&attach, 0, sizeof(attach));
    attach.target_fd = (uint32_t)dir;
    attach.attach_bpf_fd = (uint32_t)prog;
    attach.attach_type = BPF_CGROUP_DEVICE;
    attach.attach_flags = BPF_F_ALLOW_MULTI;
    if (dir < 0 || syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof(attach)) < 0) {
        int e = errno;
        if (dir >= 0)
            close(dir);
        close(prog);
        return fail(f, CODE_INTERNAL, "attach the device program to %s: %s", cg, strerror(e));
    }
    if (*prog_fd >= 0) {
        /* The old rules go once the new ones hold: no moment without a filter. */
        attach.attach_bpf_fd = (uint32_t)*prog_fd;
        attach.attach_flags = 0;
        if (syscall(SYS_bpf, BPF_PROG_DETACH, &attach, sizeof(attach)) < 0)
            alog("detach the old device program of %s: %s", cg, strerror(errno));
        close(*prog_fd);
    }
    close(dir);
    *prog_fd = prog;
    return 0;
}
