/* A container's seccomp profile (the OCI spec's linux.seccomp) compiled to a BPF program
 * with libseccomp, the way runc compiles it: the listed architectures beside the native
 * one, rules whose action is the default action skipped, syscalls libseccomp does not know
 * skipped, conditions on distinct arguments ANDed in one rule and conditions that repeat an
 * argument each made a rule of its own (with the others), ERRNO and TRACE returning EPERM
 * unless the profile says otherwise. Compiled once at create, before any fork; a child only
 * installs the program (seccomp(2)), which needs no allocation. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent.h"
#include "spawn.h"
#include "ttrpc.h"

#define MAX_RULES 4096
#define MAX_NAMES 4096
#define MAX_ARGS_PER_RULE 6

static int action_of(struct fault *f, const char *what, const char *name, const uint32_t *errno_ret, uint32_t *out)
{
    uint32_t code = errno_ret ? *errno_ret : EPERM;
    if (errno_ret && code > 4095)
        return fail(f, CODE_INVALID_ARGUMENT, "%s errnoRet %u is not an errno", what, code);
    if (strcmp(name, "SCMP_ACT_ALLOW") == 0)
        *out = SCMP_ACT_ALLOW;
    else if (strcmp(name, "SCMP_ACT_ERRNO") == 0)
        *out = SCMP_ACT_ERRNO(code);
    else if (strcmp(name, "SCMP_ACT_KILL") == 0 || strcmp(name, "SCMP_ACT_KILL_THREAD") == 0)
        *out = SCMP_ACT_KILL;
    else if (strcmp(name, "SCMP_ACT_KILL_PROCESS") == 0)
        *out = SCMP_ACT_KILL_PROCESS;
    else if (strcmp(name, "SCMP_ACT_TRAP") == 0)
        *out = SCMP_ACT_TRAP;
    else if (strcmp(name, "SCMP_ACT_TRACE") == 0)
        *out = SCMP_ACT_TRACE(code);
    else if (strcmp(name, "SCMP_ACT_LOG") == 0)
        *out = SCMP_ACT_LOG;
    else
        return fail(f, CODE_INVALID_ARGUMENT, "%s action %.64s is not one rund-agent applies", what, name);
    return 0;
}

static int op_of(struct fault *f, const char *name, enum scmp_compare *out)
{
    static const struct {
        const char *name;
        enum scmp_compare op;
    } OPS[] = {
        {"SCMP_CMP_NE", SCMP_CMP_NE}, {"SCMP_CMP_LT", SCMP_CMP_LT}, {"SCMP_CMP_LE", SCMP_CMP_LE},
        {"SCMP_CMP_EQ", SCMP_CMP_EQ}, {"SCMP_CMP_GE", SCMP_CMP_GE}, {"SCMP_CMP_GT", SCMP_CMP_GT},
        {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
    };
    for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++)
        if (strcmp(OPS[i].name, name) == 0) {
            *out = OPS[i].op;
            return 0;
        }
    return fail(f, CODE_INVALID_ARGUMENT, "seccomp argument operator %.64s is unknown", name);
}

/* "SCMP_ARCH_X86_64" -> libseccomp's token for "x86_64". */
static int arch_of(struct fault *f, const char *name, uint32_t *out)
{
    const char *prefix = "SCMP_ARCH_";
    char lower[32];
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0 || strlen(name + n) >= sizeof(lower))
        return fail(f, CODE_INVALID_ARGUMENT, "seccomp architecture %.64s is unknown", name);
    size_t i = 0;
    for (const char *c = name + n; *c; c++)
        lower[i++] = (*c >= 'A' && *c <= 'Z') ? (char)(*c - 'A' + 'a') : *c;
    lower[i] = 0;
    *out = seccomp_arch_resolve_name(lower);
    if (*out == 0)
        return fail(f, CODE_INVALID_ARGUMENT, "seccomp architecture %.64s is unknown", name);
    return 0;
}

static int add_rule(struct fault *f, scmp_filter_ctx ctx, const char *name, int nr, uint32_t action,
                    const struct scmp_arg_cmp *conds, unsigned n)
{
    int rc = seccomp_rule_add_array(ctx, action, nr, n, n ? conds : NULL);
    if (rc < 0)
        return fail(f, CODE_INVALID_ARGUMENT, "seccomp rule for %.64s: %s", name, strerror(-rc));
    return 0;
}

void seccomp_program_free(struct seccomp_program *p)
{
    free(p->filter);
    memset(p, 0, sizeof(*p));
}

int seccomp_compile(struct fault *f, const Rund__Agent__V1__Seccomp *s, struct seccomp_program *out)
{
    memset(out, 0, sizeof(*out));
    if (s->n_syscalls > MAX_RULES)
        return fail(f, CODE_INVALID_ARGUMENT, "seccomp has %zu rules, more than %d", s->n_syscalls, MAX_RULES);
    uint32_t def;
    if (action_of(f, "seccomp defaultAction", s->default_action,
                  s->default_errno_ret ? &s->default_errno_ret->value : NULL, &def))
        return -1;
    scmp_filter_ctx ctx = seccomp_init(def);
    if (!ctx)
        return fail(f, CODE_INTERNAL, "seccomp_init failed");
    int rc = -1, mem = -1;
    /* rund-agent sets no_new_privs itself, as the process spec says. */
    if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) < 0) {
        fail(f, CODE_INTERNAL, "seccomp: clear the no_new_privs attribute");
        goto out;
    }
    for (size_t i = 0; i < s->n_architectures; i++) {
        uint32_t arch;
        if (arch_of(f, s->architectures[i], &arch))
            goto out;
        int r = seccomp_arch_add(ctx, arch);
        if (r < 0 && r != -EEXIST) {
            fail(f, CODE_INVALID_ARGUMENT, "seccomp architecture %.64s: %s", s->architectures[i], strerror(-r));
            goto out;
        }
    }
    for (size_t i = 0; i < s->n_flags; i++) {
        const char *flag = s->flags[i];
        if (strcmp(flag, "SECCOMP_FILTER_FLAG_LOG") == 0)
            out->flags |= SECCOMP_FILTER_FLAG_LOG;
        else if (strcmp(flag, "SECCOMP_FILTER_FLAG_SPEC_ALLOW") == 0)
            out->flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        else if (strcmp(flag, "SECCOMP_FILTER_FLAG_TSYNC") == 0)
            ; /* a container's process has one thread when the filter goes on */
        else {
            fail(f, CODE_INVALID_ARGUMENT, "seccomp flag %.64s is unknown", flag);
            goto out;
        }
    }
    size_t names = 0;
    for (size_t i = 0; i < s->n_syscalls; i++) {
        const Rund__Agent__V1__SyscallRule *r = s->syscalls[i];
        uint32_t action;
        if (action_of(f, "seccomp syscall", r->action, r->errno_ret ? &r->errno_ret->value : NULL, &action))
            goto out;
        if (r->n_args > MAX_ARGS_PER_RULE) {
            fail(f, CODE_INVALID_ARGUMENT, "seccomp rule %zu has %zu argument conditions, more than %d", i,
                 r->n_args, MAX_ARGS_PER_RULE);
            goto out;
        }
        names += r->n_names;
        if (names > MAX_NAMES) {
            fail(f, CODE_INVALID_ARGUMENT, "seccomp names more than %d syscalls", MAX_NAMES);
            goto out;
        }
        if (action == def)
            continue; /* as runc: the default does it already */
        struct scmp_arg_cmp single[MAX_ARGS_PER_RULE];
        struct scmp_arg_cmp repeated[MAX_ARGS_PER_RULE];
        unsigned nsingle = 0, nrepeated = 0;
        for (size_t a = 0; a < r->n_args; a++) {
            const Rund__Agent__V1__SyscallArg *arg = r->args[a];
            enum scmp_compare op = SCMP_CMP_EQ;
            if (arg->index > 5) {
                fail(f, CODE_INVALID_ARGUMENT, "seccomp argument index %u is above 5", arg->index);
                goto out;
            }
            if (op_of(f, arg->op, &op))
                goto out;
            struct scmp_arg_cmp c = {.arg = arg->index, .op = op, .datum_a = arg->value, .datum_b = arg->value_two};
            unsigned same = 0;
            for (size_t b = 0; b < r->n_args; b++)
                same += r->args[b]->index == arg->index;
            if (same > 1)
                repeated[nrepeated++] = c;
            else
                single[nsingle++] = c;
        }
        for (size_t k = 0; k < r->n_names; k++) {
            int nr = seccomp_syscall_resolve_name(r->names[k]);
            if (nr == __NR_SCMP_ERROR)
                continue; /* as runc: a syscall this libseccomp does not know is skipped */
            if (nrepeated == 0) {
                if (add_rule(f, ctx, r->names[k], nr, action, single, nsingle))
                    goto out;
                continue;
            }
            /* An argument named twice: each of its conditions is a rule of its own (OR). */
            for (unsigned m = 0; m < nrepeated; m++) {
                struct scmp_arg_cmp conds[MAX_ARGS_PER_RULE];
                memcpy(conds, single, nsingle * sizeof(conds[0]));
                conds[nsingle] = repeated[m];
                if (add_rule(f, ctx, r->names[k], nr, action, conds, nsingle + 1))
                    goto out;
            }
        }
    }
    mem = memfd_create("seccomp", MFD_CLOEXEC);
    if (mem < 0 || seccomp_export_bpf(ctx, mem) < 0) {
        fail(f, CODE_INTERNAL, "seccomp: export the program: %s", strerror(errno));
        goto out;
    }
    off_t size = lseek(mem, 0, SEEK_END);
    if (size <= 0 || size % sizeof(struct sock_filter) != 0 || size / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        fail(f, CODE_INVALID_ARGUMENT, "seccomp: the compiled program has %lld bytes, more than the kernel takes",
             (long long)size);
        goto out;
    }
    out->filter = malloc((size_t)size);
    if (!out->filter || pread(mem, out->filter, (size_t)size, 0) != size) {
        fail(f, CODE_INTERNAL, "seccomp: read the program back");
        goto out;
    }
    out->len = (unsigned short)(size / sizeof(struct sock_filter));
    rc = 0;
out:
    if (mem >= 0)
        close(mem);
    seccomp_release(ctx);
    if (rc)
        seccomp_program_free(out);
    return rc;
}
