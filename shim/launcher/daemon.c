#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

const char *daemon_control_socket(void)
{
    return env_or("RUND_CONTROL_SOCKET", "/run/rund/rund.sock");
}

int unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int daemon_start(void)
{
    const char *daemon = env_or("RUND_DAEMON", "/usr/local/lib/rund/rund-daemon");
    const char *log = env_or("RUND_LOG", "/var/log/rund/daemon.log");
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (setsid() < 0)
            _exit(1);
        if (fork() != 0)
            _exit(0);
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", log);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = 0;
            mkdir(dir, 0755);
        }
        int null = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0640);
        if (null < 0 || out < 0)
            _exit(1);
        dup2(null, 0);
        dup2(out, 1);
        dup2(out, 2);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        if (chdir("/") < 0)
            _exit(1);
        execl("/bin/sh", "sh", "-c", daemon, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return 0;
}
