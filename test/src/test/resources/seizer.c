/* A hostile container's root (no CAP_SYS_PTRACE): tries PTRACE_SEIZE on every process it
 * sees in its PID namespace, again and again until it holds it. Each one it holds it stops
 * at once (PTRACE_INTERRUPT) and looks at: a process whose program is still the runtime's
 * (neither the image's busybox nor the pod's pause) was held between its runtime's fork and
 * its exec, with the runtime's descriptors and privileges: that must never happen. It
 * writes "seized S held_before_exec H" (and the last such program) to argv[1] after every
 * round, for as long as it runs. Built static by the e2e test and run from a host directory. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PID (1 << 22)

static unsigned char seen[MAX_PID / 8];
static char last[256];

/* Stops a process just seized; whether its program is a runtime's, not the container's. */
static int runtimes(pid_t pid)
{
    int status;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0 || waitpid(pid, &status, __WALL) != pid || !WIFSTOPPED(status))
        return 0; /* gone meanwhile */
    char path[64], exe[256];
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = 0;
    int foreign = n > 0 && !strstr(exe, "busybox") && !strstr(exe, "pause");
    if (foreign)
        snprintf(last, sizeof(last), "%s", exe);
    ptrace(PTRACE_CONT, pid, 0, 0);
    return foreign;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    long seized = 0, held = 0;
    pid_t self = getpid();
    for (;;) {
        DIR *d = opendir("/proc");
        if (!d)
            return 3;
        struct dirent *e;
        while ((e = readdir(d))) {
            long pid = strtol(e->d_name, NULL, 10);
            if (pid <= 1 || pid >= MAX_PID || pid == self || (seen[pid / 8] & (1 << (pid % 8))))
                continue;
            /* Tried again every round until it works: as early as the kernel lets it. */
            if (ptrace(PTRACE_SEIZE, (pid_t)pid, 0, 0) == 0) {
                seen[pid / 8] |= (unsigned char)(1 << (pid % 8));
                seized++;
                held += runtimes((pid_t)pid);
            }
        }
        closedir(d);
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
            if (WIFSTOPPED(status)) {
                int sig = WSTOPSIG(status);
                ptrace(PTRACE_CONT, p, 0, (void *)(long)(sig == SIGTRAP || sig == SIGSTOP ? 0 : sig));
            }
        }
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", argv[1]);
        FILE *out = fopen(tmp, "w");
        if (out) {
            fprintf(out, "seized %ld held_before_exec %ld\n", seized, held);
            if (held)
                fprintf(out, "last held: %s\n", last);
            fclose(out);
            rename(tmp, argv[1]); /* whole or not at all, for a reader at any moment */
        }
    }
}
