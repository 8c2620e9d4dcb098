/* A container's device rules (the OCI spec's linux.resources.devices) as a BPF program on
 * its cgroup, as runc applies them on cgroup v2: the rules are read from the last to the
 * first and the first that matches decides (cgroup v1's "the later rule wins"); none
 * matching denies. An allow rule matches an access it covers whole (reading /dev/null under
 * "rwm"); a deny rule matches an access that asks for anything it names. The program is
 * attached with BPF_F_ALLOW_MULTI; an update attaches the new one, then detaches the old. */
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
#define MAX_INSNS (8 + MAX_DEVICE_RULES * 8 + 2)

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

/* Builds the program: r2 = device type, r3 = requested access, r4 = major, r5 = minor. */
static int build(struct fault *f, Rund__Agent__V1__DeviceRule **rules, size_t n, struct bpf_insn *p, size_t *len)
{
    size_t k = 0;
    p[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_1, 0, 0);
    p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_2, 0, 0);
    p[k++] = insn(BPF_ALU | BPF_RSH | BPF_K, BPF_REG_3, 0, 0, 16);
    p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xFFFF);
    p[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_4, BPF_REG_1, 4, 0);
    p[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_5, BPF_REG_1, 8, 0);
    for (size_t i = n; i-- > 0;) {
        const Rund__Agent__V1__DeviceRule *r = rules[i];
        int32_t access;
        if (access_bits(f, r->access, &access))
            return -1;
        int32_t type = 0;
        if (strcmp(r->type, "c") == 0)
            type = BPF_DEVCG_DEV_CHAR;
        else if (strcmp(r->type, "b") == 0)
            type = BPF_DEVCG_DEV_BLOCK;
        else if (strcmp(r->type, "a") != 0 && r->type[0])
            return fail(f, CODE_INVALID_ARGUMENT, "device rule type %.8s is not a, b or c", r->type);
        if ((r->major && (r->major->value < -1 || r->major->value > 0xFFFFFFFFLL)) ||
            (r->minor && (r->minor->value < -1 || r->minor->value > 0xFFFFFFFFLL)))
            return fail(f, CODE_INVALID_ARGUMENT, "device rule number out of range");
        /* The jumps below skip to the next rule; their offsets are set once its length is known. */
        size_t jumps[4], nj = 0;
        if (type) {
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, 0, type);
        }
        p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_3, 0, 0);
        if (r->allow) {
            /* Matches when every requested access is allowed: requested & ~access == 0. */
            p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_6, 0, 0, ~access & 7);
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_6, 0, 0, 0);
        } else {
            /* Matches when any requested access is denied: requested & access != 0. */
            p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_6, 0, 0, access);
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_6, 0, 0, 0);
        }
        if (r->major && r->major->value >= 0) {
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, 0, (int32_t)r->major->value);
        }
        if (r->minor && r->minor->value >= 0) {
            jumps[nj++] = k;
            p[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, 0, (int32_t)r->minor->value);
        }
        p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, r->allow ? 1 : 0);
        p[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
        for (size_t j = 0; j < nj; j++)
            p[jumps[j]].off = (int16_t)(k - jumps[j] - 1);
    }
    p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
    p[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    *len = k;
    return 0;
}

int devices_apply(struct fault *f, const char *cg, Rund__Agent__V1__DeviceRule **rules, size_t n, int *prog_fd)
{
    if (n == 0)
        return 0;
    if (n > MAX_DEVICE_RULES)
        return fail(f, CODE_INVALID_ARGUMENT, "%zu device rules are more than %d", n, MAX_DEVICE_RULES);
    static struct bpf_insn program[MAX_INSNS];
    static pthread_mutex_t building = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&building);
    size_t len = 0;
    int rc = build(f, rules, n, program, &len);
    int prog = -1;
    if (rc == 0) {
        /* Without the verifier's log first (it would fill any small buffer); with it, to say why, when that fails. */
        static char log[4096];
        for (int verbose = 0; verbose <= 1 && prog < 0; verbose++) {
            union bpf_attr load;
            memset(&load, 0, sizeof(load));
            load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
            load.insns = (uint64_t)(uintptr_t)program;
            load.insn_cnt = (uint32_t)len;
            load.license = (uint64_t)(uintptr_t)"Apache";
            if (verbose) {
                log[0] = 0;
                load.log_buf = (uint64_t)(uintptr_t)log;
                load.log_size = sizeof(log);
                load.log_level = 1;
            }
            prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof(load));
        }
        if (prog < 0) {
            size_t n = strlen(log);
            rc = fail(f, CODE_INTERNAL, "load the device program: %s (%.160s)", strerror(errno),
                      n > 160 ? log + n - 160 : log);
        }
    }
    pthread_mutex_unlock(&building);
    if (rc)
        return -1;
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
