/* rund-helper: one sandbox's helper process. Today it is the sandbox's virtio-fs back-end
 * (vhost-user on one side, FUSE over the guest's virtqueues on the other); it is also the
 * process meant to hold what must outlive a daemon restart.
 *
 * Every byte it parses comes from a guest that may own its kernel, so it runs as the
 * sandbox's own unprivileged uid (the one its QEMU runs as, which is what lets it reach
 * that VM's memory with process_vm_readv and no other's), in a mount namespace whose root
 * is the sandbox's share, under a seccomp allow-list, in the sandbox's cgroup. */
#ifndef RUND_HELPER_H
#define RUND_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define QUEUES 2
#define MAX_REGIONS 32
/* The most a request's readable or a reply's writable part may span. */
#define MAX_CHAIN_BYTES (4u << 20)
/* The most data one WRITE carries (FUSE_INIT's max_write), and the most of a request we read. */
#define MAX_WRITE (128u << 10)
#define MAX_REQUEST (MAX_WRITE + 4096)
/* READ and READDIR replies: at most 1 MiB of data. */
#define MAX_READ (1u << 20)
#define MAX_REPLY (MAX_READ + 4096)

/* ---- log.c ---- */
void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define LOG(...) logf_(__VA_ARGS__)
/* Counts a refusal and logs the first and every 1000th. */
bool log_every(uint64_t count);

/* ---- guest memory (vhost.c) ---- */
struct region {
    uint64_t gpa, size, hva;
};

struct memory {
    pid_t pid; /* the front-end process, whose address space holds the guest's RAM */
    int n;
    struct region r[MAX_REGIONS];
};

/* Front-end address of guest [gpa, gpa+len), or 0 when no one region holds it. */
uint64_t gpa_to_hva(const struct memory *m, uint64_t gpa, uint64_t len);
bool hva_ok(const struct memory *m, uint64_t hva, uint64_t len);
/* process_vm_readv/writev of the front-end; 0 or -errno. */
int mem_read(const struct memory *m, uint64_t hva, void *buf, size_t len);
int mem_write(const struct memory *m, uint64_t hva, const void *buf, size_t len);

/* ---- virtqueues (virtq.c) ---- */
struct vq {
    int index;
    uint32_t size;
    uint64_t desc, avail, used;
    uint16_t last_avail;
    int used_idx; /* -1: read it from the ring before serving (after a (re)start) */
    int kick, call;
    bool enabled, broken;
};

/* Serves one request: `in` holds `in_len` bytes (the request may be longer: `total`),
 * at most `cap` bytes are written to `out`; returns the reply's length, 0 for none. */
typedef size_t (*handler_fn)(const uint8_t *in, size_t in_len, size_t total, uint8_t *out, size_t cap);

bool vq_ready(const struct vq *q);
/* Serves what the guest made available. Returns false when the guest broke the ring's
 * rules (logged; the queue stops). */
bool vq_process(struct vq *q, const struct memory *m, handler_fn handler);

/* ---- FUSE (fuse.c) ---- */
struct fuse_limits {
    uint32_t nodes;      /* looked-up inodes the guest may hold: ENOMEM past it */
    uint32_t handles;    /* open files and directories: EMFILE past it */
    uint64_t path_bytes; /* bytes of node paths held: ENOMEM past it */
};

/* `writable`: serve writes (the host-directory share); else every write is EROFS. */
int fuse_init_root(int root_fd, struct fuse_limits limits, bool writable);
size_t fuse_handle(const uint8_t *in, size_t in_len, size_t total, uint8_t *out, size_t cap);
bool fuse_mounted(void);
void fuse_stats(char *buf, size_t len);
/* The daemon's "owners" request: "any", or "UID GID [GID]..." the pod's specs name, added
 * to those the guest may give files to; 0, or -1 for a malformed list or one too long. */
int fuse_allow_owners(const char *list);

/* ---- vhost-user (vhost.c) ---- */
/* epoll tags: what a ready descriptor is. */
enum { TAG_LISTEN = 1, TAG_CONN, TAG_KICK0, TAG_CTL_LISTEN = TAG_KICK0 + QUEUES, TAG_CTL };

void vhost_init(int epoll_fd, pid_t front_end);
/* Handles one message from the front-end: 1 to go on, 0 when it closed, -1 when it broke
 * the protocol (logged). */
int vhost_message(int conn);
/* Queue `qi` was kicked: drains its eventfd and serves it. */
void vhost_kicked(int qi);
void vhost_stats(char *buf, size_t len);

/* ---- confinement (seccomp.c) ---- */
int seccomp_allow_list(bool writable);
int seccomp_pin_peer(pid_t pid);

#endif
