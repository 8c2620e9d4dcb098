/* rund-helper's FUSE file system, shared between fuse.c (nodes, handles, reads, the
 * dispatch) and fuse_write.c (a writable share's changes). Not for the rest of the helper:
 * helper.h is its interface. */
#ifndef RUND_FUSE_FS_H
#define RUND_FUSE_FS_H

#include <linux/fuse.h>
#include <linux/openat2.h>
#include <sys/stat.h>

#include "helper.h"

#define ENTRY_SECONDS 3600
#define WRITABLE_ENTRY_SECONDS 1
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* Linux 6.6: chmod of the inode an O_PATH descriptor names (AT_EMPTY_PATH) */
#endif
#define MAX_NAME 255
#define MAX_PATH 4095
#define MAX_READDIR (64u << 10)
#define MAX_LINK 4096
#define CONFINED (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
#define ROOT_ID 1

struct node {
    uint64_t lookups; /* 0: the slot is free */
    uint64_t generation;
    dev_t dev;
    ino_t ino;
    /* Which directory of the share the node lies in (a hash of its path's first name; 0 for
     * the root): one host directory bound twice, read-only for one container and writable
     * for another, or one image layer in two containers' images, is one inode in two trees,
     * and a node of one must never be served by a path of the other. */
    uint64_t top;
    char *path; /* beneath the root, "" for the root itself */
    size_t path_len;
    /* A writable share's inode may have a second name (a hard link) the guest found or
     * made: tried when `path` is gone, and then the two swap. NULL for none. */
    char *alt;
    size_t alt_len;
};

struct handle {
    int fd; /* -1: the slot is free */
    bool dir;
    uint32_t generation;
};

/* The reply being built: its body follows the out header. */
struct reply {
    uint8_t *body;
    size_t cap; /* room for the body */
    size_t len;
};

extern struct fuse_limits limits;
extern struct node *nodes; /* index = node id - 1; [0] is the root */
extern uint64_t path_bytes;
extern uint32_t fresh_nodes; /* node slots at and past it were never used */
extern bool writable;

/* How long the guest may cache an entry or attributes. */
uint64_t entry_seconds(void);
/* openat2(2) beneath `dirfd`, no symlink followed, no magic link; the descriptor or -errno. */
long openat2_confined(int dirfd, const char *path, int flags);
/* The node `id` names, or NULL. */
struct node *node_of(uint64_t id);
/* Node n's inode, opened confined from the root by its path (or its other name) and checked
 * to be n's; the descriptor or -errno. */
int resolve(struct node *n, int flags, struct stat *st);
int resolve_id(uint64_t id, int flags, struct stat *st);
void put_attr(struct fuse_attr *a, const struct stat *st);
/* The path beneath the root of `name` in directory node `dir`, into buf (MAX_PATH + 1
 * bytes); its length, 0 when it would be longer than MAX_PATH. */
size_t child_path(const struct node *dir, const char *name, size_t name_len, char *buf);
/* Replies with `st` as attributes the guest may cache for `valid` seconds. */
int attr_reply(const struct stat *st, uint64_t valid, struct reply *r);
/* Replies with the entry for `st`, found as `name` in `dir`; its node counts a lookup. */
int entry_reply(struct node *dir, const char *name, size_t name_len, const struct stat *st, struct reply *r);
void forget(uint64_t id, uint64_t count);
/* Keeps `fd` as a new handle and replies with it (EMFILE, fd closed, past the cap). */
int add_handle(int fd, bool dir, struct reply *r);
bool handle_room(void);
struct handle *handle_of(uint64_t fh);

/* ---- fuse_write.c: each answers a request as fuse_handle parsed it ---- */
int make_entry(const struct fuse_in_header *hdr, const uint8_t *body, size_t body_len, size_t fixed, struct reply *r);
int do_create(const struct fuse_in_header *hdr, const struct fuse_create_in *in, const uint8_t *rest, size_t left,
              struct reply *r);
int do_remove(uint64_t parent, const uint8_t *body, size_t body_len, int flags);
int do_rename(uint64_t olddir_id, uint64_t newdir_id, uint32_t flags, const uint8_t *p, size_t left);
int do_link(uint64_t parent, uint64_t old, const uint8_t *p, size_t left, struct reply *r);
int do_setattr(uint64_t id, const struct fuse_setattr_in *in, struct reply *r);
int do_write(const struct fuse_write_in *in, const uint8_t *data, size_t left, struct reply *r);
int do_fsync(const struct fuse_fsync_in *in);
int do_fallocate(const struct fuse_fallocate_in *in);

#endif
