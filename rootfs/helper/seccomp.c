/* The helper's seccomp allow-list, as classic BPF written here (no libseccomp: the binary
 * stays static and small). Anything not listed kills the process: it needs to read and
 * write its sockets and eventfds, resolve and read files beneath its root (and, serving a
 * writable share, change them), and reach its VM's memory; never to open sockets, exec, mount, ptrace, or open files by handle (with
 * CAP_DAC_READ_SEARCH, open_by_handle_at would reach any file of a file system the share
 * holds a mount of). A second filter, once the front-end is known, lets
 * process_vm_readv/writev name that one process only, and seccomp(2) no more. The first
 * filter and the pin are both installed by seccomp(2). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "helper.h"

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "rund-helper: no seccomp architecture for this target"
#endif

static const int allowed[] = {
    SYS_read, SYS_write, SYS_close, SYS_fcntl, SYS_lseek, SYS_pread64, SYS_readlinkat, SYS_getdents64, SYS_openat2,
    SYS_fstat, SYS_newfstatat, SYS_fstatfs, SYS_recvmsg, SYS_sendmsg, SYS_sendto, SYS_accept4, SYS_getsockopt,
    SYS_epoll_pwait, SYS_epoll_ctl, SYS_process_vm_readv, SYS_process_vm_writev, SYS_mmap, SYS_munmap, SYS_mremap,
    SYS_brk, SYS_madvise, SYS_clock_gettime, SYS_getpid, SYS_exit, SYS_exit_group, SYS_rt_sigreturn,
    SYS_restart_syscall, SYS_seccomp,
#ifdef SYS_epoll_wait
    SYS_epoll_wait,
#endif
};

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* Linux 6.6; the same number on x86_64 and aarch64 */
#endif

/* A writable share's back-end also changes files: what FUSE's write requests map to (glibc
 * makes renameat2 without flags a renameat). */
static const int writes[] = {
    SYS_pwrite64, SYS_ftruncate, SYS_fallocate, SYS_fsync, SYS_fdatasync, SYS_mkdirat, SYS_mknodat, SYS_symlinkat,
    SYS_linkat, SYS_unlinkat, SYS_renameat, SYS_renameat2, SYS_fchown, SYS_fchownat, SYS_fchmod, SYS_fchmodat2, SYS_utimensat,
};

#define N_ALLOWED (sizeof(allowed) / sizeof(allowed[0]))
#define N_WRITES (sizeof(writes) / sizeof(writes[0]))
#define NR offsetof(struct seccomp_data, nr)
#define ARCH_AT offsetof(struct seccomp_data, arch)
#define ARG0_LO offsetof(struct seccomp_data, args[0])
#define ARG0_HI (offsetof(struct seccomp_data, args[0]) + 4)

/* By seccomp(2), which the allow-list lets through once: the pin's filter forbids it after.
 * no_new_privs is set already (rund-jail sets it; main checks it). */
static int install(struct sock_filter *f, unsigned short len)
{
    struct sock_fprog prog = {.len = len, .filter = f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 0;
}

int seccomp_allow_list(bool writable)
{
    int list[N_ALLOWED + N_WRITES];
    unsigned count = 0;
    for (unsigned i = 0; i < N_ALLOWED; i++)
        list[count++] = allowed[i];
    for (unsigned i = 0; writable && i < N_WRITES; i++)
        list[count++] = writes[i];
    struct sock_filter f[8 + N_ALLOWED + N_WRITES];
    unsigned short n = 0;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARCH_AT);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR);
#if defined(__x86_64__)
    /* x32 system calls share the architecture and set bit 30 of the number. */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, (unsigned char)count, 0); /* to the KILL */
#endif
    for (unsigned i = 0; i < count; i++) {
        /* A match jumps to the ALLOW after the list: (count - 1 - i) tests and the KILL in between. */
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)list[i], (unsigned char)(count - i), 0);
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return install(f, n);
}

int seccomp_pin_peer(pid_t pid)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 6, 0), /* no filter after this one */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_writev, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0_HI),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0_LO),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)pid, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    return install(f, (unsigned short)(sizeof(f) / sizeof(f[0])));
}
