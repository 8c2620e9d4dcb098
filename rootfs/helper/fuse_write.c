/* The writable share's changes (rund-helper --writable): what FUSE's write requests do to
 * the host directories a sandbox's containers bind (a read-only one refuses them by its
 * mount: EROFS). fuse.c has the nodes, the
 * handles, the reads and the dispatch; fuse_fs.h what the two share. See fuse.c's comment
 * for how a change is confined. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fuse_fs.h"

/* One name from a request: NUL-terminated within `len` bytes at `p`, not empty, no longer
 * than a name may be, no '/', not "." or "..". Advances past it. */
static int take_name(const uint8_t **p, size_t *len, const char **name, size_t *name_len)
{
    size_t n = strnlen((const char *)*p, *len);
    if (n == *len || n == 0)
        return -EINVAL;
    if (n > MAX_NAME)
        return -ENAMETOOLONG;
    const char *s = (const char *)*p;
    if (!strcmp(s, ".") || !strcmp(s, "..") || memchr(s, '/', n))
        return -EINVAL;
    *name = s;
    *name_len = n;
    *p += n + 1;
    *len -= n + 1;
    return 0;
}

/* Whom the guest may give a host file to: at most what the pod's own specs let its
 * processes do (the daemon says, as containers and execs come; never taken back while the
 * sandbox lives). `any` when a process holds CAP_CHOWN; else new entries belong to the
 * uids and gids the specs name, and a chown is what the kernel lets a process without
 * CAP_CHOWN do (may_chown). Until the daemon says, nobody: a guest that makes files before
 * any container asked for the share is refused. A set-group-ID directory's group for what
 * is made in it is always allowed: it gives nothing away. */
#define MAX_OWNER_IDS 256
static struct {
    bool any;
    uint32_t nuids, ngids;
    uid_t uids[MAX_OWNER_IDS];
    gid_t gids[MAX_OWNER_IDS];
} owners;

static bool listed(const uint32_t *ids, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static bool uid_allowed(uid_t uid)
{
    return owners.any || listed(owners.uids, owners.nuids, uid);
}

static bool gid_allowed(gid_t gid)
{
    return owners.any || listed(owners.gids, owners.ngids, gid);
}

/* A chown as the kernel allows it to a process without CAP_CHOWN: the owner stays, and the
 * group changes only on a file the pod's user owns, to one of the pod's groups. */
static bool may_chown(const struct stat *st, bool set_uid, uid_t uid, bool set_gid, gid_t gid)
{
    if (owners.any)
        return true;
    if (set_uid && uid != st->st_uid)
        return false;
    return !set_gid || gid == st->st_gid || (listed(owners.uids, owners.nuids, st->st_uid) && gid_allowed(gid));
}

/* Adds `id` to a list the caller made room in. */
static void add_id(uint32_t *ids, uint32_t *n, uint32_t id)
{
    if (!listed(ids, *n, id))
        ids[(*n)++] = id;
}

int fuse_allow_owners(const char *list)
{
    if (!writable)
        return -1;
    if (!strcmp(list, "any")) {
        owners.any = true;
        return 0;
    }
    /* Parsed whole before anything is added: a bad list changes nothing. */
    uint32_t ids[2 + 64];
    int n = 0;
    for (const char *p = list; *p;) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || errno || v > 0xfffffffeul || (*end && *end != ' ') || n == (int)(sizeof(ids) / sizeof(ids[0])))
            return -1;
        ids[n++] = (uint32_t)v;
        p = *end ? end + 1 : end;
    }
    if (n < 2)
        return -1;
    if (owners.nuids + 1 > MAX_OWNER_IDS || owners.ngids + (uint32_t)n - 1 > MAX_OWNER_IDS)
        return -1;
    add_id(owners.uids, &owners.nuids, ids[0]);
    for (int i = 1; i < n; i++)
        add_id(owners.gids, &owners.ngids, ids[i]);
    return 0;
}

/* Set-ID bits never reach a host file (a nosuid mount would make them inert; the host's
 * other users and runc pods sharing the directory have none). A directory keeps its
 * set-group-ID bit, which only says what group new entries get; the kernel itself clears
 * it when the helper, which holds no CAP_FSETID, is not in the directory's group. */
static mode_t without_set_id(mode_t mode, bool dir)
{
    return dir ? mode & 07777 : mode & 01777;
}

/* Whether the caller in `hdr` may have a new entry in `parent`: its owner is the caller's
 * uid, its group the caller's gid or a set-group-ID parent's. */
static int may_make(const struct fuse_in_header *hdr, const struct stat *parent)
{
    return uid_allowed(hdr->uid) && (parent->st_mode & S_ISGID || gid_allowed(hdr->gid)) ? 0 : -EPERM;
}

/* Node `id`, which must be a directory: its descriptor (O_PATH) and attributes. */
static int open_dir(uint64_t id, struct node **dir, struct stat *st)
{
    *dir = node_of(id);
    return *dir ? resolve(*dir, O_PATH | O_DIRECTORY, st) : -ENOENT;
}

/* chmod of the inode `fd` (O_PATH) names; a symlink has no mode of its own. */
static int chmod_inode(int fd, const struct stat *st, mode_t mode)
{
    if (S_ISLNK(st->st_mode))
        return -EOPNOTSUPP;
    return syscall(SYS_fchmodat2, fd, "", without_set_id(mode, S_ISDIR(st->st_mode)), AT_EMPTY_PATH) < 0 ? -errno : 0;
}

/* Makes what `name` in `dfd` now is (just created by the helper's own uid) the guest
 * caller's, as under runc: its uid, and its gid or the parent's when the parent is
 * set-group-ID (may_make said both are allowed). Set-ID bits are not given (see
 * without_set_id). On failure the entry is removed again. Replies with its entry. */
static int adopt_new(struct node *dir, int dfd, const struct stat *parent, const char *name, size_t name_len,
                     const struct fuse_in_header *hdr, struct reply *r)
{
    long fd = openat2_confined(dfd, name, O_PATH);
    struct stat st = {0};
    int e = fd < 0 ? (int)fd : 0;
    if (!e && fstat((int)fd, &st) < 0)
        e = -errno;
    gid_t gid = parent->st_mode & S_ISGID ? parent->st_gid : hdr->gid;
    if (!e && fchownat((int)fd, "", hdr->uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
        e = -errno;
    if (!e && fstat((int)fd, &st) < 0)
        e = -errno;
    if (fd >= 0)
        close((int)fd);
    if (!e)
        e = entry_reply(dir, name, name_len, &st, r);
    if (e)
        unlinkat(dfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
    return e;
}

/* MKDIR, MKNOD and SYMLINK: `make` creates the entry in `dfd`. */
int make_entry(const struct fuse_in_header *hdr, const uint8_t *body, size_t body_len, size_t fixed, struct reply *r)
{
    const uint8_t *p = body + fixed;
    size_t left = body_len - fixed;
    const char *name, *target = NULL;
    size_t name_len;
    int e = take_name(&p, &left, &name, &name_len);
    if (e)
        return e;
    mode_t mode = 0;
    if (hdr->opcode == FUSE_SYMLINK) {
        size_t n = strnlen((const char *)p, left);
        if (n == left || n == 0)
            return -EINVAL;
        if (n >= MAX_LINK)
            return -ENAMETOOLONG;
        target = (const char *)p;
    } else if (hdr->opcode == FUSE_MKDIR) {
        mode = S_IFDIR | (((const struct fuse_mkdir_in *)body)->mode & 07777);
    } else {
        mode = ((const struct fuse_mknod_in *)body)->mode;
        if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
            return -EPERM; /* no device nodes on the host */
        mode = (mode & S_IFMT) | without_set_id(mode, false);
    }
    struct node *dir;
    struct stat parent;
    int dfd = open_dir(hdr->nodeid, &dir, &parent);
    if (dfd < 0)
        return dfd;
    if ((e = may_make(hdr, &parent))) {
        close(dfd);
        return e;
    }
    if (hdr->opcode == FUSE_SYMLINK)
        e = symlinkat(target, dfd, name) < 0 ? -errno : 0;
    else if (hdr->opcode == FUSE_MKDIR)
        e = mkdirat(dfd, name, mode & 07777) < 0 ? -errno : 0;
    else
        e = mknodat(dfd, name, mode, 0) < 0 ? -errno : 0;
    if (!e)
        e = adopt_new(dir, dfd, &parent, name, name_len, hdr, r);
    close(dfd);
    return e;
}

/* CREATE: a regular file made and opened; replies with its entry and its handle. */
int do_create(const struct fuse_in_header *hdr, const struct fuse_create_in *in, const uint8_t *rest, size_t left,
              struct reply *r)
{
    const char *name;
    size_t name_len;
    int e = take_name(&rest, &left, &name, &name_len);
    if (e)
        return e;
    if (r->cap < sizeof(struct fuse_entry_out) + sizeof(struct fuse_open_out))
        return -ERANGE;
    if (!handle_room())
        return -EMFILE;
    struct node *dir;
    struct stat parent;
    int dfd = open_dir(hdr->nodeid, &dir, &parent);
    if (dfd < 0)
        return dfd;
    if ((e = may_make(hdr, &parent))) {
        close(dfd);
        return e;
    }
    /* Made here (O_EXCL) or, when the guest did not ask for O_EXCL and the host made it
     * meanwhile, opened as it is: only a file made here is given to the caller. */
    uint64_t flags = (in->flags & (O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC)) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    if ((flags & O_ACCMODE) == O_RDONLY)
        flags |= O_RDWR; /* the guest's page cache may write back through any handle */
    struct open_how how = {.flags = flags | O_CREAT | O_EXCL, .mode = without_set_id(in->mode, false), .resolve = CONFINED};
    long fd = syscall(SYS_openat2, dfd, name, &how, sizeof(how));
    bool made = fd >= 0;
    if (fd < 0 && errno == EEXIST && !(in->flags & O_EXCL)) {
        how = (struct open_how){.flags = flags, .resolve = CONFINED};
        fd = syscall(SYS_openat2, dfd, name, &how, sizeof(how));
    }
    struct stat st;
    if (fd < 0) {
        e = -errno;
    } else if (fstat((int)fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        e = -EEXIST; /* not a regular file: the guest's view was stale */
    } else if (made) {
        e = adopt_new(dir, dfd, &parent, name, name_len, hdr, r);
    } else if ((in->flags & O_TRUNC) && ftruncate((int)fd, 0) < 0) {
        e = -errno;
    } else {
        e = fstat((int)fd, &st) < 0 ? -errno : entry_reply(dir, name, name_len, &st, r);
    }
    close(dfd);
    if (e) {
        if (fd >= 0)
            close((int)fd);
        return e;
    }
    struct reply open = {.body = r->body + r->len, .cap = r->cap - r->len};
    e = add_handle((int)fd, false, &open);
    if (e) {
        forget(((struct fuse_entry_out *)r->body)->nodeid, 1);
        return e;
    }
    r->len += open.len;
    return 0;
}

/* UNLINK and RMDIR. */
int do_remove(uint64_t parent, const uint8_t *body, size_t body_len, int flags)
{
    const char *name;
    size_t name_len;
    int e = take_name(&body, &body_len, &name, &name_len);
    if (e)
        return e;
    struct node *dir;
    struct stat st;
    int dfd = open_dir(parent, &dir, &st);
    if (dfd < 0)
        return dfd;
    e = unlinkat(dfd, name, flags) < 0 ? -errno : 0;
    close(dfd);
    return e;
}

/* Moves the paths of nodes at or beneath `from` to `to` (and, exchanging, those at or
 * beneath `to` to `from`), after a rename did so on disk. A path that would grow past
 * MAX_PATH, or the paths held past their cap, stays as it was: its node answers ESTALE,
 * as one gone does. */
static bool beneath(const char *path, size_t len, const char *dir, size_t dir_len)
{
    return len >= dir_len && !memcmp(path, dir, dir_len) && (len == dir_len || path[dir_len] == '/');
}

/* One name of a node, moved from `old` (its prefix of old_len bytes) to `new`. */
static void move_path(char **path, size_t *path_len, size_t old_len, const char *new, size_t new_len)
{
    size_t len = *path_len - old_len + new_len;
    if (len > *path_len && path_bytes + (len - *path_len) > limits.path_bytes)
        return;
    char *moved = len <= MAX_PATH ? malloc(len + 1) : NULL;
    if (!moved)
        return;
    memcpy(moved, new, new_len);
    memcpy(moved + new_len, *path + old_len, *path_len - old_len + 1);
    path_bytes += len - *path_len;
    free(*path);
    *path = moved;
    *path_len = len;
}

static void move_paths(const char *from, size_t from_len, const char *to, size_t to_len, bool exchange)
{
    for (uint32_t i = 1; i < fresh_nodes; i++) {
        struct node *n = &nodes[i];
        if (!n->lookups)
            continue;
        for (int k = 0; k < 2; k++) {
            char **path = k ? &n->alt : &n->path;
            size_t *len = k ? &n->alt_len : &n->path_len;
            if (!*path)
                continue;
            if (beneath(*path, *len, from, from_len))
                move_path(path, len, from_len, to, to_len);
            else if (exchange && beneath(*path, *len, to, to_len))
                move_path(path, len, to_len, from, from_len);
        }
    }
}

/* RENAME and RENAME2: `newdir` and `flags` (RENAME_NOREPLACE, RENAME_EXCHANGE; a whiteout is
 * the guest's overlay's business, not the host's), then the old and the new name. */
int do_rename(uint64_t olddir_id, uint64_t newdir_id, uint32_t flags, const uint8_t *p, size_t left)
{
    const char *oldname, *newname;
    size_t old_len, new_len;
    int e = take_name(&p, &left, &oldname, &old_len);
    if (!e)
        e = take_name(&p, &left, &newname, &new_len);
    if (e)
        return e;
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
        return -EINVAL;
    struct node *olddir, *newdir;
    struct stat st;
    int ofd = open_dir(olddir_id, &olddir, &st);
    if (ofd < 0)
        return ofd;
    int nfd = open_dir(newdir_id, &newdir, &st);
    if (nfd < 0) {
        close(ofd);
        return nfd;
    }
    static char from[MAX_PATH + 1], to[MAX_PATH + 1];
    size_t from_len = child_path(olddir, oldname, old_len, from);
    size_t to_len = child_path(newdir, newname, new_len, to);
    e = !from_len || !to_len ? -ENAMETOOLONG : renameat2(ofd, oldname, nfd, newname, flags) < 0 ? -errno : 0;
    close(ofd);
    close(nfd);
    if (!e)
        move_paths(from, from_len, to, to_len, flags & RENAME_EXCHANGE);
    return e;
}

/* LINK: a new name in `parent` for node `old`'s inode. */
int do_link(uint64_t parent, uint64_t old, const uint8_t *p, size_t left, struct reply *r)
{
    const char *name;
    size_t name_len;
    int e = take_name(&p, &left, &name, &name_len);
    if (e)
        return e;
    struct stat st;
    int ofd = resolve_id(old, O_PATH, &st);
    if (ofd < 0)
        return ofd;
    struct node *dir;
    struct stat parent_st;
    int dfd = open_dir(parent, &dir, &parent_st);
    if (dfd < 0) {
        close(ofd);
        return dfd;
    }
    /* The inode itself, by its descriptor: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, held. */
    e = linkat(ofd, "", dfd, name, AT_EMPTY_PATH) < 0 ? -errno : 0;
    if (!e && fstat(ofd, &st) < 0)
        e = -errno;
    close(ofd);
    close(dfd);
    return e ? e : entry_reply(dir, name, name_len, &st, r);
}

/* SETATTR: size, owner, mode (after the owner: a chown clears set-ID bits), times. */
int do_setattr(uint64_t id, const struct fuse_setattr_in *in, struct reply *r)
{
    struct stat st;
    int fd = resolve_id(id, O_PATH, &st);
    if (fd < 0)
        return fd;
    int e = 0;
    if (in->valid & FATTR_SIZE) {
        struct handle *h = in->valid & FATTR_FH ? handle_of(in->fh) : NULL;
        if (!S_ISREG(st.st_mode)) {
            e = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        } else if ((int64_t)in->size < 0) {
            e = -EINVAL;
        } else if (h && !h->dir) {
            e = ftruncate(h->fd, (off_t)in->size) < 0 ? -errno : 0;
        } else {
            struct stat again;
            int wfd = resolve_id(id, O_WRONLY | O_NONBLOCK, &again);
            if (wfd < 0)
                e = wfd;
            else if (!S_ISREG(again.st_mode))
                e = -EINVAL;
            else if (ftruncate(wfd, (off_t)in->size) < 0)
                e = -errno;
            if (wfd >= 0)
                close(wfd);
        }
    }
    if (!e && !may_chown(&st, in->valid & FATTR_UID, in->uid, in->valid & FATTR_GID, in->gid))
        e = -EPERM; /* what no process of the pod may do */
    if (!e && (in->valid & (FATTR_UID | FATTR_GID))
        && fchownat(fd, "", in->valid & FATTR_UID ? in->uid : (uid_t)-1, in->valid & FATTR_GID ? in->gid : (gid_t)-1,
                    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
        e = -errno;
    if (!e && (in->valid & FATTR_MODE))
        e = chmod_inode(fd, &st, in->mode);
    if (!e && (in->valid & (FATTR_ATIME | FATTR_MTIME))) {
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
        if (in->valid & FATTR_ATIME)
            ts[0] = in->valid & FATTR_ATIME_NOW ? (struct timespec){.tv_nsec = UTIME_NOW}
                                                : (struct timespec){(time_t)in->atime, in->atimensec % 1000000000};
        if (in->valid & FATTR_MTIME)
            ts[1] = in->valid & FATTR_MTIME_NOW ? (struct timespec){.tv_nsec = UTIME_NOW}
                                                : (struct timespec){(time_t)in->mtime, in->mtimensec % 1000000000};
        e = utimensat(fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    }
    if (!e && fstat(fd, &st) < 0)
        e = -errno;
    close(fd);
    return e ? e : attr_reply(&st, entry_seconds(), r);
}

/* WRITE: the data follows the request's fixed part; all of it was read (max_write). */
int do_write(const struct fuse_write_in *in, const uint8_t *data, size_t left, struct reply *r)
{
    struct handle *h = handle_of(in->fh);
    if (!h || h->dir)
        return -EBADF;
    if (in->size > left || in->size > MAX_WRITE || (int64_t)in->offset < 0)
        return -EINVAL;
    if (r->cap < sizeof(struct fuse_write_out))
        return -ERANGE;
    size_t done = 0;
    while (done < in->size) {
        ssize_t n = pwrite(h->fd, data + done, in->size - done, (off_t)(in->offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (!done)
                return -errno;
            break;
        }
        done += (size_t)n;
    }
    *(struct fuse_write_out *)r->body = (struct fuse_write_out){.size = (uint32_t)done};
    r->len = sizeof(struct fuse_write_out);
    return 0;
}

int do_fsync(const struct fuse_fsync_in *in)
{
    struct handle *h = handle_of(in->fh);
    if (!h)
        return -EBADF;
    return ((in->fsync_flags & 1) ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? -errno : 0;
}

int do_fallocate(const struct fuse_fallocate_in *in)
{
    struct handle *h = handle_of(in->fh);
    if (!h || h->dir)
        return -EBADF;
    if ((int64_t)in->offset < 0 || (int64_t)in->length <= 0)
        return -EINVAL;
    return fallocate(h->fd, (int)in->mode, (off_t)in->offset, (off_t)in->length) < 0 ? -errno : 0;
}
