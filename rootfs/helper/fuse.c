/* A FUSE file system serving the share (this process's root) to the guest.
 *
 * Read-only (the image share): images never change under a running sandbox, so the guest
 * may cache entries and attributes for long; every request that would change the file
 * system gets EROFS.
 *
 * Writable (the host-directory share, --writable): the host directories a sandbox's
 * containers bind (a read-only one refuses changes by its mount, EROFS, whatever this
 * process may do). The host may change them, so the guest caches for a second. Writes are made as a container's root makes them under runc: a new file,
 * directory, node or symlink belongs to the guest caller's uid and gid (the parent's group
 * when the parent is set-group-ID), attributes change as asked. Device nodes are refused
 * (EPERM), as are extended attributes (ENOSYS: the guest stops asking) and RENAME_WHITEOUT.
 * Each change names its place by a parent node, resolved confined as below, and one name
 * that holds no '/' and is not "." or "..": nothing is ever reached by a path the guest
 * wrote. A rename moves the paths of the nodes it moved; a node keeps a second name (a hard
 * link) to fall back on. The changes are fuse_write.c's.
 *
 * Confinement is the kernel's. Every file is reached with openat2(2) from the root's
 * descriptor with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: a symlink
 * anywhere on the way is refused (the guest resolves symlinks itself, from READLINK),
 * nothing resolves above the root, and mounts below it (each image is one) are crossed.
 * Beneath that, the process's mount namespace holds nothing but the share. A node is an
 * inode, keyed by (device, inode), with the path beneath the root it was found at; every
 * use re-resolves that path the same way and checks the inode is still the node's (ESTALE
 * otherwise), so nodes hold no descriptor. A lookup under a node that is not a directory
 * is ENOTDIR from the kernel; OPEN serves regular files only, checked on the inode before
 * it is opened (a FIFO, device or socket is ENXIO and never opened) and again after;
 * READLINK reads the link's own target.
 *
 * Bounds: at most `nodes` nodes and `path_bytes` of their paths (ENOMEM past either),
 * `handles` open files and directories (EMFILE; the process's RLIMIT_NOFILE backs it),
 * each refusal counted and logged; listings are read from the directory per READDIR, never
 * held; READ is at most 1 MiB. Single-threaded: one loop calls fuse_handle. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

#include "fuse_fs.h"

static int root_fd = -1;
struct fuse_limits limits;
struct node *nodes;   /* index = node id - 1; [0] is the root */
static uint32_t *free_nodes; /* a stack of node slots freed */
static uint32_t nfree_nodes, used_nodes;
/* Slots from here to the cap were never used: taken in order, so that the tables' pages
 * are touched only as the guest holds nodes (an idle helper's memory stays small). */
uint32_t fresh_nodes = 1;
uint64_t path_bytes;
static uint32_t *by_inode;   /* open addressing, linear probing: node index + 1, 0 empty */
static uint32_t inode_slots; /* a power of two, at least twice the node cap */
static struct handle *handles;
static uint32_t used_handles;
static bool mounted;
bool writable;
static uint64_t refused_nodes, refused_handles, generation_counter;

static uint32_t hash_inode(dev_t dev, ino_t ino, uint64_t top)
{
    uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4full ^ top;
    return (uint32_t)(h ^ h >> 29) & (inode_slots - 1);
}

static uint32_t *inode_slot(dev_t dev, ino_t ino, uint64_t top)
{
    for (uint32_t s = hash_inode(dev, ino, top);; s = (s + 1) & (inode_slots - 1)) {
        uint32_t v = by_inode[s];
        if (!v || (nodes[v - 1].dev == dev && nodes[v - 1].ino == ino && nodes[v - 1].top == top))
            return &by_inode[s];
    }
}

/* The share directory a path beneath the root lies in, as struct node's `top` says: a hash
 * (FNV-1a) of its first name, never 0. */
static uint64_t top_of(const char *path)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *c = path; *c && *c != '/'; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
    return h | 1;
}

/* Backward-shift deletion keeps every probe sequence unbroken without tombstones. */
static void inode_remove(uint32_t *slot)
{
    uint32_t i = (uint32_t)(slot - by_inode);
    by_inode[i] = 0;
    for (uint32_t j = (i + 1) & (inode_slots - 1); by_inode[j]; j = (j + 1) & (inode_slots - 1)) {
        const struct node *n = &nodes[by_inode[j] - 1];
        uint32_t home = hash_inode(n->dev, n->ino, n->top);
        /* Move j's entry into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            by_inode[i] = by_inode[j];
            by_inode[j] = 0;
            i = j;
        }
    }
}

/* How long the guest may cache an entry or attributes. */
uint64_t entry_seconds(void)
{
    return writable ? WRITABLE_ENTRY_SECONDS : ENTRY_SECONDS;
}

int fuse_init_root(int fd, struct fuse_limits l, bool rw)
{
    writable = rw;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    root_fd = fd;
    limits = l;
    inode_slots = 1;
    while (inode_slots < 2 * (l.nodes + 1))
        inode_slots <<= 1;
    nodes = calloc(l.nodes + 1, sizeof(*nodes));
    free_nodes = calloc(l.nodes + 1, sizeof(*free_nodes));
    by_inode = calloc(inode_slots, sizeof(*by_inode));
    handles = calloc(l.handles, sizeof(*handles));
    if (!nodes || !free_nodes || !by_inode || !handles)
        return -ENOMEM;
    for (uint32_t i = 0; i < l.handles; i++)
        handles[i].fd = -1;
    nodes[0] = (struct node){.lookups = 1, .dev = st.st_dev, .ino = st.st_ino, .path = "", .path_len = 0};
    *inode_slot(st.st_dev, st.st_ino, 0) = 1;
    return 0;
}

bool fuse_mounted(void)
{
    return mounted;
}

void fuse_stats(char *buf, size_t len)
{
    snprintf(buf, len, "mounted=%d nodes=%u handles=%u refused_nodes=%llu refused_handles=%llu path_bytes=%llu",
             mounted, used_nodes, used_handles, (unsigned long long)refused_nodes, (unsigned long long)refused_handles,
             (unsigned long long)path_bytes);
}

static void drop_node(uint32_t idx)
{
    struct node *n = &nodes[idx];
    inode_remove(inode_slot(n->dev, n->ino, n->top));
    path_bytes -= n->path_len + n->alt_len;
    free(n->path);
    free(n->alt);
    n->path = n->alt = NULL;
    n->alt_len = 0;
    n->lookups = 0;
    free_nodes[nfree_nodes++] = idx;
    used_nodes--;
}

/* Forgets every node but the root and closes every handle: a new mount starts afresh. */
static void reset(void)
{
    for (uint32_t i = 0; i < limits.handles; i++) {
        if (handles[i].fd >= 0) {
            close(handles[i].fd);
            handles[i].fd = -1;
        }
    }
    used_handles = 0;
    for (uint32_t i = 1; i < fresh_nodes; i++) {
        if (nodes[i].lookups)
            drop_node(i);
    }
    nfree_nodes = 0;
    fresh_nodes = 1;
}

long openat2_confined(int dirfd, const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC), .resolve = CONFINED};
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    return fd < 0 ? -errno : fd;
}

struct node *node_of(uint64_t id)
{
    if (id == 0 || id > (uint64_t)limits.nodes + 1)
        return NULL;
    struct node *n = &nodes[id - 1];
    return n->lookups ? n : NULL;
}

/* Opens `path` (beneath the root, confined) and checks it is node n's inode. */
static int resolve_path(const struct node *n, const char *path, int flags, struct stat *st)
{
    long fd = openat2_confined(root_fd, *path ? path : ".", flags);
    if (fd < 0)
        return (int)fd;
    if (fstat((int)fd, st) < 0) {
        int e = -errno;
        close((int)fd);
        return e;
    }
    if (st->st_dev != n->dev || st->st_ino != n->ino) {
        close((int)fd);
        return -ESTALE;
    }
    return (int)fd;
}

/* Opens node n's inode (itself, never a symlink's target) from the root, confined, by its
 * path or, that gone, its other name; checks it is still the node's inode. Returns the
 * descriptor or -errno. */
int resolve(struct node *n, int flags, struct stat *st)
{
    int fd = resolve_path(n, n->path, flags, st);
    if ((fd == -ENOENT || fd == -ESTALE) && n->alt) {
        fd = resolve_path(n, n->alt, flags, st);
        if (fd >= 0) {
            char *p = n->path;
            size_t len = n->path_len;
            n->path = n->alt, n->path_len = n->alt_len;
            n->alt = p, n->alt_len = len;
        }
    }
    return fd;
}

/* Node `id`'s inode, resolved and checked as resolve() does; ENOENT for no such node. */
int resolve_id(uint64_t id, int flags, struct stat *st)
{
    struct node *n = node_of(id);
    return n ? resolve(n, flags, st) : -ENOENT;
}

void put_attr(struct fuse_attr *a, const struct stat *st)
{
    *a = (struct fuse_attr){
        .ino = st->st_ino,
        .size = (uint64_t)st->st_size,
        .blocks = (uint64_t)st->st_blocks,
        .atime = (uint64_t)st->st_atim.tv_sec,
        .mtime = (uint64_t)st->st_mtim.tv_sec,
        .ctime = (uint64_t)st->st_ctim.tv_sec,
        .atimensec = (uint32_t)st->st_atim.tv_nsec,
        .mtimensec = (uint32_t)st->st_mtim.tv_nsec,
        .ctimensec = (uint32_t)st->st_ctim.tv_nsec,
        .mode = st->st_mode,
        .nlink = (uint32_t)st->st_nlink,
        .uid = st->st_uid,
        .gid = st->st_gid,
        .rdev = (uint32_t)st->st_rdev,
        .blksize = 4096,
    };
}


size_t child_path(const struct node *dir, const char *name, size_t name_len, char *buf)
{
    size_t len = dir->path_len ? dir->path_len + 1 + name_len : name_len;
    if (len > MAX_PATH)
        return 0;
    if (dir->path_len) {
        memcpy(buf, dir->path, dir->path_len);
        buf[dir->path_len] = '/';
    }
    memcpy(buf + len - name_len, name, name_len);
    buf[len] = 0;
    return len;
}

/* Replies with the entry for `st`, found as `name` in node `dir`: its node, made if the
 * guest holds none for that inode, counts one more lookup. A writable share's node found
 * at a path that is not its own keeps that path as its other name (a hard link: either
 * name may be removed while the guest holds the node). */
int entry_reply(struct node *dir, const char *name, size_t name_len, const struct stat *st, struct reply *r)
{
    char here[MAX_PATH + 1];
    size_t len = child_path(dir, name, name_len, here);
    if (!len)
        return -ENAMETOOLONG;
    struct fuse_entry_out *o = (struct fuse_entry_out *)r->body;
    if (r->cap < sizeof(*o))
        return -ERANGE;
    uint64_t top = top_of(here);
    uint32_t *slot = inode_slot(st->st_dev, st->st_ino, top);
    struct node *n = *slot ? &nodes[*slot - 1] : NULL;
    bool fresh = !n;
    if (fresh && ((!nfree_nodes && fresh_nodes > limits.nodes) || path_bytes + len > limits.path_bytes)) {
        if (log_every(++refused_nodes))
            LOG("the guest holds %u nodes (%llu path bytes), the cap; LOOKUP refused with ENOMEM (%llu so far)",
                used_nodes, (unsigned long long)path_bytes, (unsigned long long)refused_nodes);
        return -ENOMEM;
    }
    if (!fresh && writable && strcmp(here, n->path) && (!n->alt || strcmp(here, n->alt))) {
        /* A second name grows what the guest holds as surely as a new node does. */
        if (len > n->alt_len && path_bytes + (len - n->alt_len) > limits.path_bytes) {
            if (log_every(++refused_nodes))
                LOG("the guest holds %llu path bytes, the cap; a second name's LOOKUP refused with ENOMEM (%llu so far)",
                    (unsigned long long)path_bytes, (unsigned long long)refused_nodes);
            return -ENOMEM;
        }
        char *alt = strdup(here);
        if (!alt)
            return -ENOMEM;
        path_bytes += len - n->alt_len;
        free(n->alt);
        n->alt = alt;
        n->alt_len = len;
    }
    if (fresh) {
        char *path = strdup(here);
        if (!path)
            return -ENOMEM;
        uint32_t idx = nfree_nodes ? free_nodes[--nfree_nodes] : fresh_nodes++;
        nodes[idx] = (struct node){.generation = ++generation_counter, .dev = st->st_dev, .ino = st->st_ino, .top = top};
        *slot = idx + 1;
        used_nodes++;
        n = &nodes[idx];
        n->path = path;
        n->path_len = len;
        path_bytes += len;
    }
    n->lookups++;
    *o = (struct fuse_entry_out){.nodeid = (uint64_t)(n - nodes) + 1, .generation = n->generation,
                                 .entry_valid = entry_seconds(), .attr_valid = entry_seconds()};
    put_attr(&o->attr, st);
    r->len = sizeof(*o);
    return 0;
}

static int lookup(uint64_t parent, const char *name, size_t name_len, struct reply *r)
{
    struct node *dir = node_of(parent);
    if (!dir)
        return -ENOENT;
    struct stat st;
    int dfd = resolve(dir, O_PATH | O_DIRECTORY, &st); /* ENOTDIR: not a directory */
    if (dfd < 0)
        return dfd;
    long fd = openat2_confined(dfd, name, O_PATH);
    close(dfd);
    if (fd < 0)
        return (int)fd;
    int e = fstat((int)fd, &st) < 0 ? -errno : 0;
    close((int)fd);
    return e ? e : entry_reply(dir, name, name_len, &st, r);
}

void forget(uint64_t id, uint64_t count)
{
    struct node *n = node_of(id);
    if (!n || id == ROOT_ID)
        return;
    if (count >= n->lookups)
        drop_node((uint32_t)(id - 1));
    else
        n->lookups -= count;
}

int attr_reply(const struct stat *st, uint64_t valid, struct reply *r)
{
    struct fuse_attr_out *o = (struct fuse_attr_out *)r->body;
    if (r->cap < sizeof(*o))
        return -ERANGE;
    *o = (struct fuse_attr_out){.attr_valid = valid};
    put_attr(&o->attr, st);
    r->len = sizeof(*o);
    return 0;
}

static int getattr(uint64_t id, struct reply *r)
{
    struct stat st;
    int fd = resolve_id(id, O_PATH, &st);
    if (fd < 0)
        return fd;
    close(fd);
    /* The share's own root gains and loses directories as containers come and go. */
    return attr_reply(&st, id == ROOT_ID ? 1 : entry_seconds(), r);
}

static int do_readlink(uint64_t id, struct reply *r)
{
    struct stat st;
    int fd = resolve_id(id, O_PATH, &st);
    if (fd < 0)
        return fd;
    if (!S_ISLNK(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    size_t room = r->cap < MAX_LINK ? r->cap : MAX_LINK;
    ssize_t got = readlinkat(fd, "", (char *)r->body, room);
    int e = got < 0 ? -errno : 0;
    close(fd);
    if (e)
        return e;
    r->len = (size_t)got;
    return 0;
}

int add_handle(int fd, bool dir, struct reply *r)
{
    for (uint32_t i = 0; i < limits.handles; i++) {
        if (handles[i].fd < 0) {
            handles[i].fd = fd;
            handles[i].dir = dir;
            handles[i].generation++;
            used_handles++;
            struct fuse_open_out *o = (struct fuse_open_out *)r->body;
            *o = (struct fuse_open_out){.fh = (uint64_t)handles[i].generation << 32 | (i + 1),
                                        .open_flags = writable ? 0 : FOPEN_KEEP_CACHE};
            r->len = sizeof(*o);
            return 0;
        }
    }
    close(fd);
    return -EMFILE;
}

bool handle_room(void)
{
    if (used_handles < limits.handles)
        return true;
    if (log_every(++refused_handles))
        LOG("the guest holds %u open files and directories, the cap; OPEN refused with EMFILE (%llu so far)",
            used_handles, (unsigned long long)refused_handles);
    return false;
}

struct handle *handle_of(uint64_t fh)
{
    uint32_t i = (uint32_t)fh;
    if (i == 0 || i > limits.handles)
        return NULL;
    struct handle *h = &handles[i - 1];
    return h->fd >= 0 && h->generation == (uint32_t)(fh >> 32) ? h : NULL;
}

static int do_open(uint64_t id, uint32_t flags, struct reply *r)
{
    struct node *n = node_of(id);
    if (!n)
        return -ENOENT;
    bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_CREAT));
    if (writes && !writable)
        return -EROFS;
    if (r->cap < sizeof(struct fuse_open_out))
        return -ERANGE;
    if (!handle_room())
        return -EMFILE;
    struct stat st;
    int fd = resolve(n, O_PATH, &st);
    if (fd < 0)
        return fd;
    close(fd);
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if (!S_ISREG(st.st_mode))
        return -ENXIO; /* FIFOs, devices, sockets and symlinks are never opened here */
    /* Opened without blocking, and checked again: still the node's inode, still regular;
     * truncated only then. */
    int mode = writable ? (int)(flags & (O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC)) : O_RDONLY;
    fd = resolve(n, mode | O_NONBLOCK, &st);
    if (fd < 0)
        return fd;
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -ENXIO;
    }
    if (writable && (flags & O_TRUNC) && ftruncate(fd, 0) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return add_handle(fd, false, r);
}

static int do_opendir(uint64_t id, struct reply *r)
{
    if (!node_of(id))
        return -ENOENT;
    if (r->cap < sizeof(struct fuse_open_out))
        return -ERANGE;
    if (!handle_room())
        return -EMFILE;
    struct stat st;
    int fd = resolve_id(id, O_RDONLY | O_DIRECTORY, &st); /* ENOTDIR: not a directory */
    if (fd < 0)
        return fd;
    return add_handle(fd, true, r);
}

static int do_read(const struct fuse_read_in *in, struct reply *r)
{
    struct handle *h = handle_of(in->fh);
    if (!h || h->dir)
        return -EBADF;
    if ((int64_t)in->offset < 0)
        return -EINVAL;
    size_t want = in->size;
    if (want > MAX_READ)
        want = MAX_READ;
    if (want > r->cap)
        want = r->cap;
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(h->fd, r->body + got, want - got, (off_t)(in->offset + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (!got)
                return -errno;
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    r->len = got;
    return 0;
}

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Lists from `offset` (0, or the d_off of the last entry the guest got) as many entries
 * as fit: the directory is read per call, so a listing costs nothing between calls. */
static int do_readdir(const struct fuse_read_in *in, struct reply *r)
{
    static uint8_t buf[MAX_READDIR] __attribute__((aligned(8)));
    struct handle *h = handle_of(in->fh);
    if (!h || !h->dir)
        return -EBADF;
    if ((int64_t)in->offset < 0)
        return -EINVAL;
    size_t room = in->size;
    if (room > MAX_READDIR)
        room = MAX_READDIR;
    if (room > r->cap)
        room = r->cap;
    r->len = 0;
    if (room < 32)
        return 0;
    if (lseek(h->fd, (off_t)in->offset, SEEK_SET) < 0)
        return -errno;
    long n = syscall(SYS_getdents64, h->fd, buf, room);
    if (n < 0)
        return -errno;
    for (long at = 0; at < n;) {
        const struct linux_dirent64 *d = (const struct linux_dirent64 *)(buf + at);
        if (d->d_reclen < 20 || at + d->d_reclen > n) {
            LOG("getdents64 record of %u bytes at %ld of %ld", d->d_reclen, at, n);
            return -EIO;
        }
        size_t name_len = strnlen(d->d_name, d->d_reclen - 19);
        size_t rec = (FUSE_NAME_OFFSET + name_len + 7) & ~(size_t)7;
        if (room - r->len < rec)
            break; /* the next READDIR starts from the last entry sent */
        struct fuse_dirent *o = (struct fuse_dirent *)(r->body + r->len);
        memset(o, 0, rec);
        o->ino = d->d_ino;
        o->off = (uint64_t)d->d_off;
        o->namelen = (uint32_t)name_len;
        o->type = d->d_type;
        memcpy(o->name, d->d_name, name_len);
        r->len += rec;
        at += d->d_reclen;
    }
    return 0;
}

static int do_release(uint64_t fh)
{
    struct handle *h = handle_of(fh);
    if (h) {
        close(h->fd);
        h->fd = -1;
        used_handles--;
    }
    return 0;
}

static int do_statfs(struct reply *r)
{
    struct statfs s;
    if (fstatfs(root_fd, &s) < 0)
        return -errno;
    struct fuse_statfs_out *o = (struct fuse_statfs_out *)r->body;
    if (r->cap < sizeof(*o))
        return -ERANGE;
    *o = (struct fuse_statfs_out){.st = {.blocks = s.f_blocks, .bfree = s.f_bfree, .bavail = s.f_bavail,
                                         .files = s.f_files, .ffree = s.f_ffree, .bsize = (uint32_t)s.f_bsize,
                                         .namelen = MAX_NAME, .frsize = (uint32_t)s.f_frsize}};
    r->len = sizeof(*o);
    return 0;
}

static int do_init(const struct fuse_init_in *in, struct reply *r)
{
    if (in->major != 7) {
        LOG("the guest speaks FUSE %u.%u, not 7.x", in->major, in->minor);
        return -EPROTO;
    }
    reset();
    mounted = true;
    struct fuse_init_out *o = (struct fuse_init_out *)r->body;
    if (r->cap < sizeof(*o))
        return -ERANGE;
    *o = (struct fuse_init_out){.major = 7, .minor = in->minor < 31 ? in->minor : 31,
                                .max_readahead = in->max_readahead, .flags = writable ? FUSE_BIG_WRITES : 0,
                                .max_background = 16, .congestion_threshold = 12,
                                .max_write = writable ? MAX_WRITE : 4096, .time_gran = 1};
    r->len = sizeof(*o);
    return 0;
}

static bool is_write(uint32_t op)
{
    switch (op) {
    case FUSE_SETATTR: case FUSE_SYMLINK: case FUSE_MKNOD: case FUSE_MKDIR: case FUSE_UNLINK: case FUSE_RMDIR:
    case FUSE_RENAME: case FUSE_LINK: case FUSE_WRITE: case FUSE_SETXATTR: case FUSE_REMOVEXATTR: case FUSE_CREATE:
    case FUSE_FALLOCATE: case FUSE_RENAME2: case FUSE_COPY_FILE_RANGE: case FUSE_TMPFILE:
        return true;
    default:
        return false;
    }
}

/* A request's body: at least `size` bytes, or the request is malformed (EINVAL). */
#define BODY(type, size)                                                                                               \
    ({                                                                                                                 \
        if (body_len < (size))                                                                                         \
            goto einval;                                                                                               \
        (const type *)body;                                                                                            \
    })

size_t fuse_handle(const uint8_t *in, size_t in_len, size_t total, uint8_t *out, size_t cap)
{
    static uint8_t aligned[MAX_REQUEST] __attribute__((aligned(8)));
    if (in_len < sizeof(struct fuse_in_header)) {
        LOG("request of %zu bytes is shorter than a FUSE header", total);
        return 0;
    }
    if (cap < sizeof(struct fuse_out_header))
        return 0; /* no room even for an error */
    memcpy(aligned, in, in_len);
    const struct fuse_in_header *hdr = (const struct fuse_in_header *)aligned;
    const uint8_t *body = aligned + sizeof(*hdr);
    size_t body_len = in_len - sizeof(*hdr);
    struct reply r = {.body = out + sizeof(struct fuse_out_header), .cap = cap - sizeof(struct fuse_out_header)};
    int err = 0;
    bool answer = true;
    if (hdr->len != total) {
        err = -EINVAL;
    } else if (!writable && is_write(hdr->opcode)) {
        err = -EROFS;
    } else if (total > in_len) {
        err = -EINVAL; /* more than the largest WRITE the guest was told of */
    } else {
        switch (hdr->opcode) {
        case FUSE_INIT:
            err = do_init(BODY(struct fuse_init_in, 16), &r);
            break;
        case FUSE_LOOKUP: {
            const char *name = (const char *)body;
            size_t len = strnlen(name, body_len);
            if (len == body_len || len == 0)
                goto einval;
            if (len > MAX_NAME)
                err = -ENAMETOOLONG;
            else if (!strcmp(name, ".") || !strcmp(name, "..") || memchr(name, '/', len))
                err = -ENOENT;
            else
                err = lookup(hdr->nodeid, name, len, &r);
            break;
        }
        case FUSE_FORGET:
            forget(hdr->nodeid, BODY(struct fuse_forget_in, sizeof(struct fuse_forget_in))->nlookup);
            answer = false;
            break;
        case FUSE_BATCH_FORGET: {
            const struct fuse_batch_forget_in *b = BODY(struct fuse_batch_forget_in, sizeof(*b));
            const struct fuse_forget_one *one = (const struct fuse_forget_one *)(b + 1);
            size_t fit = (body_len - sizeof(*b)) / sizeof(*one);
            for (size_t i = 0; i < b->count && i < fit; i++)
                forget(one[i].nodeid, one[i].nlookup);
            answer = false;
            break;
        }
        case FUSE_GETATTR:
            err = getattr(hdr->nodeid, &r);
            break;
        case FUSE_READLINK:
            err = do_readlink(hdr->nodeid, &r);
            break;
        case FUSE_OPEN:
            err = do_open(hdr->nodeid, BODY(struct fuse_open_in, sizeof(struct fuse_open_in))->flags, &r);
            break;
        case FUSE_READ:
            err = do_read(BODY(struct fuse_read_in, sizeof(struct fuse_read_in)), &r);
            break;
        case FUSE_READDIR:
            err = do_readdir(BODY(struct fuse_read_in, sizeof(struct fuse_read_in)), &r);
            break;
        case FUSE_OPENDIR:
            err = do_opendir(hdr->nodeid, &r);
            break;
        case FUSE_RELEASE:
        case FUSE_RELEASEDIR:
            err = do_release(BODY(struct fuse_release_in, 8)->fh);
            break;
        case FUSE_FLUSH:
            break;
        case FUSE_STATFS:
            err = do_statfs(&r);
            break;
        case FUSE_INTERRUPT:
            answer = false; /* every request is answered at once; nothing to interrupt */
            break;
        case FUSE_DESTROY:
            reset();
            break;
        /* From here, a writable share's only (the read-only one answered EROFS above). */
        case FUSE_MKDIR:
            BODY(struct fuse_mkdir_in, sizeof(struct fuse_mkdir_in));
            err = make_entry(hdr, body, body_len, sizeof(struct fuse_mkdir_in), &r);
            break;
        case FUSE_MKNOD:
            BODY(struct fuse_mknod_in, sizeof(struct fuse_mknod_in));
            err = make_entry(hdr, body, body_len, sizeof(struct fuse_mknod_in), &r);
            break;
        case FUSE_SYMLINK:
            err = make_entry(hdr, body, body_len, 0, &r);
            break;
        case FUSE_CREATE: {
            const struct fuse_create_in *c = BODY(struct fuse_create_in, sizeof(struct fuse_create_in));
            err = do_create(hdr, c, body + sizeof(*c), body_len - sizeof(*c), &r);
            break;
        }
        case FUSE_UNLINK:
            err = do_remove(hdr->nodeid, body, body_len, 0);
            break;
        case FUSE_RMDIR:
            err = do_remove(hdr->nodeid, body, body_len, AT_REMOVEDIR);
            break;
        case FUSE_RENAME: {
            const struct fuse_rename_in *m = BODY(struct fuse_rename_in, sizeof(struct fuse_rename_in));
            err = do_rename(hdr->nodeid, m->newdir, 0, body + sizeof(*m), body_len - sizeof(*m));
            break;
        }
        case FUSE_RENAME2: {
            const struct fuse_rename2_in *m = BODY(struct fuse_rename2_in, sizeof(struct fuse_rename2_in));
            err = do_rename(hdr->nodeid, m->newdir, m->flags, body + sizeof(*m), body_len - sizeof(*m));
            break;
        }
        case FUSE_LINK: {
            const struct fuse_link_in *l = BODY(struct fuse_link_in, sizeof(struct fuse_link_in));
            err = do_link(hdr->nodeid, l->oldnodeid, body + sizeof(*l), body_len - sizeof(*l), &r);
            break;
        }
        case FUSE_SETATTR:
            err = do_setattr(hdr->nodeid, BODY(struct fuse_setattr_in, sizeof(struct fuse_setattr_in)), &r);
            break;
        case FUSE_WRITE: {
            const struct fuse_write_in *w = BODY(struct fuse_write_in, sizeof(struct fuse_write_in));
            err = do_write(w, body + sizeof(*w), body_len - sizeof(*w), &r);
            break;
        }
        case FUSE_FSYNC:
        case FUSE_FSYNCDIR:
            err = writable ? do_fsync(BODY(struct fuse_fsync_in, sizeof(struct fuse_fsync_in))) : 0;
            break;
        case FUSE_FALLOCATE:
            err = do_fallocate(BODY(struct fuse_fallocate_in, sizeof(struct fuse_fallocate_in)));
            break;
        default:
            err = -ENOSYS; /* extended attributes, copy_file_range, tmpfile, locks: the guest stops asking */
        }
    }
    goto done;
einval:
    err = -EINVAL;
done:
    if (!answer)
        return 0;
    if (err)
        r.len = 0;
    struct fuse_out_header oh = {.len = (uint32_t)(sizeof(oh) + r.len), .error = err, .unique = hdr->unique};
    memcpy(out, &oh, sizeof(oh));
    return oh.len;
}
