#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* A file in the control socket's directory (the daemon's state directory, where its lock
 * is), or with name NULL the directory itself. */
static int state_file(char *out, size_t cap, const char *name)
{
    const char *control = daemon_control_socket();
    const char *slash = strrchr(control, '/');
    int dir = slash ? (int)(slash - control) : 1;
    const char *base = slash ? control : ".";
    int n = name ? snprintf(out, cap, "%.*s/%s", dir, base, name) : snprintf(out, cap, "%.*s", dir, base);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* Whether a POSIX lock is held on the state directory's file name: rund.lock (a daemon
 * serves, or is on its way to: Daemon.lock) or rund.standby (a standby daemon waits to take
 * over: Standby.java). */
static int held(const char *name)
{
    char path[4096];
    if (state_file(path, sizeof(path), name))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
    return held;
}

int daemon_start(void)
{
    /* Many relays and launchers find the daemon gone at the same moment; one starts the next.
     * A JVM that would lose the daemon's lock costs a core for a second on a small node. */
    if (held("rund.lock") || held("rund.standby"))
        return DAEMON_LOCKED;
    char start_lock[4096];
    if (state_file(start_lock, sizeof(start_lock), NULL))
        return -1;
    mkdir(start_lock, 0700); /* the daemon makes it so too */
    if (state_file(start_lock, sizeof(start_lock), "rund.start"))
        return -1;
    /* Held (flock) by whoever starts a daemon and inherited by that daemon for its life: a
     * second starter sees it taken and waits instead. Not close-on-exec, on purpose. */
    int starting = open(start_lock, O_RDWR | O_CREAT, 0600);
    if (starting < 0)
        return -1;
    if (flock(starting, LOCK_EX | LOCK_NB)) {
        int e = errno;
        close(starting);
        if (e == EWOULDBLOCK)
            return DAEMON_STARTING;
        errno = e;
        return -1;
    }
    const char *daemon = env_or("RUND_DAEMON", "/usr/local/lib/rund/rund-daemon");
    const char *log = env_or("RUND_LOG", "/var/log/rund/daemon.log");
    pid_t pid = fork();
    if (pid < 0) {
        close(starting);
        return -1;
    }
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
        if (starting != 3) {
            dup2(starting, 3);
            close(starting);
        }
        for (int fd = 4; fd < 1024; fd++)
            close(fd);
        if (chdir("/") < 0)
            _exit(1);
        execl("/bin/sh", "sh", "-c", daemon, (char *)NULL);
        _exit(127);
    }
    close(starting); /* the daemon keeps its copy, and with it the lock */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return DAEMON_STARTED;
}
