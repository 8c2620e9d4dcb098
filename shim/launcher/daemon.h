/* Reaching the node's rund daemon, for the launcher and for the relay (relay.c): its
 * sockets' paths and starting it when none answers. */
#ifndef RUND_DAEMON_H
#define RUND_DAEMON_H

/* An environment variable's value, or fallback when it is unset or empty. */
const char *env_or(const char *name, const char *fallback);

/* The daemon's control socket: RUND_CONTROL_SOCKET, or /run/rund/rund.sock. */
const char *daemon_control_socket(void);

/* Connects to a unix socket; the descriptor (close-on-exec), or -1 with errno set
 * (ENAMETOOLONG for a path that does not fit). */
int unix_connect(const char *path);

/* Starts the daemon (RUND_DAEMON, run by /bin/sh, its output appended to RUND_LOG)
 * detached from the caller: double fork and setsid; unless a daemon holds the node's lock
 * (it runs or is starting), a standby daemon waits to take over (rund.standby), or another
 * caller is starting one (rund.start, beside the
 * control socket, which the daemon it started holds for its life). DAEMON_STARTED,
 * DAEMON_LOCKED (a daemon or a standby holds its lock), DAEMON_STARTING (another caller is starting
 * one), or -1 with errno when it could not. */
enum { DAEMON_LOCKED = 0, DAEMON_STARTED = 1, DAEMON_STARTING = 2 };
int daemon_start(void);

#endif
