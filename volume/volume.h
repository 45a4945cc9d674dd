/* volume/volume.h — the node-local volume store.
 *
 * A store is a data directory holding one pool file (the space every volume
 * allocates from, in fixed-size chunks) and a RocksDB database with the
 * metadata: volumes, their chunk maps and the store's parameters.  Volumes
 * are thin: a chunk gets pool space on first write, never-written ranges read
 * as zeros, trim and write-zeroes give whole chunks back.
 *
 * Data I/O is asynchronous on the caller's io_uring (one ring per loop
 * thread, struct vol_ioctx) with O_DIRECT; FLUSH and FUA go through the
 * store's sync thread, which group-commits the RocksDB WAL and fdatasyncs the
 * pool.  Write-cache semantics: a completed write survives the death of the
 * process; it survives power loss after a FLUSH, or at once with FUA.
 */
#ifndef BLOCKD_VOLUME_H
#define BLOCKD_VOLUME_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct io_uring;
struct io_uring_cqe;
struct vol_store;
struct volume;

#define VOL_NAME_MAX        63
#define VOL_TYPE_MAX        31
#define VOL_ID_LEN          36              /* UUID text */
#define VOL_MAX_SIZE        (256ULL << 40)  /* 256 TiB */
#define VOL_SIZE_ALIGN      512
#define VOL_DEFAULT_CHUNK   (1u << 20)

/* ---- the store ------------------------------------------------------------ */
struct vol_store_params {
  const char *dir;          /* data directory; created if missing */
  uint64_t capacity;        /* pool bytes; 0 = keep the existing, or fit the disk */
  uint32_t chunk_size;      /* for a new store; 0 = VOL_DEFAULT_CHUNK */
};

/* Open (or create) the store in params->dir and recover it.  Returns 0, or
 * -errno with a message for a person in err. */
int vol_store_open (const struct vol_store_params *params, struct vol_store **out,
                    char *err, size_t errlen);
/* Make everything durable and release the store.  Every volume reference
 * must have been put. */
void vol_store_close (struct vol_store *st);
/* Make every completed write durable (synchronously).  Returns 0 or -errno. */
int vol_store_sync (struct vol_store *st);

struct vol_pool_info {
  uint64_t capacity, allocated, free;
  uint64_t shared;          /* allocated bytes seen by more than one volume or snapshot */
  uint64_t leaked;          /* allocated bytes nobody sees (0 unless something is wrong) */
  uint32_t chunk_size;
  unsigned volumes, snapshots;
  char dir[256];
};
void vol_store_pool_info (struct vol_store *st, struct vol_pool_info *pi);

/* Verify the invariants of the store in dir (chunk maps reference existing
 * volumes and valid chunks; no chunk is owned twice; counts agree).  Writes a
 * report to out.  Returns 0 if consistent, 1 if a violation was found, or
 * -errno if the store could not be read. */
int vol_store_check (const char *dir, FILE *out);

/* ---- volume management (any thread; may block on RocksDB) ---------------- */
enum vol_status { VOL_AVAILABLE, VOL_IN_USE };

/* An attachment: the volume is a disk of an instance (a VM, named by the
 * caller).  Only a multi-attach volume has more than one. */
#define VOL_ATTACH_MAX      8
enum vol_role { VOL_ROLE_DATA, VOL_ROLE_SYSTEM };
struct vol_attachment {
  char instance[VOL_NAME_MAX + 1];
  enum vol_role role;
  int64_t since;            /* unix seconds */
};
struct vol_info {
  char id[VOL_ID_LEN + 1];
  char name[VOL_NAME_MAX + 1];
  char type[VOL_TYPE_MAX + 1];
  uint64_t size;
  uint64_t allocated;       /* bytes of pool space held by its own writes */
  int64_t created;          /* unix seconds */
  unsigned connections;     /* open NBD sessions */
  unsigned snapshots;       /* snapshots taken of it that still exist */
  char source[2 * VOL_NAME_MAX + 2];   /* VOL@SNAP it was cloned from, or "" */
  bool multi_attach;
  unsigned nattach;
  struct vol_attachment attach[VOL_ATTACH_MAX];
};
/* In use: attached to an instance, or opened by an NBD client. */
static inline enum vol_status vol_info_status (const struct vol_info *vi)
{ return vi->connections || vi->nattach ? VOL_IN_USE : VOL_AVAILABLE; }
const char *vol_status_name (enum vol_status s);
const char *vol_role_name (enum vol_role r);
/* "system" or "data" into *out.  Returns 0 or -EINVAL. */
int vol_role_parse (const char *s, enum vol_role *out);

/* Disk types are performance classes, as a cloud offers them: "standard"
 * (the default), "ssd", "premium".  NULL-terminated. */
extern const char *const vol_disk_types[];

/* Names: 1..VOL_NAME_MAX of [A-Za-z0-9._-], not starting with '.' or '-'.
 * Returns NULL if valid, else why not. */
const char *vol_name_invalid (const char *name);
/* Sizes: positive, multiple of VOL_SIZE_ALIGN, at most VOL_MAX_SIZE. */
const char *vol_size_invalid (uint64_t size);

/* Each returns 0 or -errno and, on error, a message in err:
 * -EINVAL bad argument, -EEXIST name taken, -ENOENT no such volume,
 * -EBUSY connected (delete without force) or attached (delete, even with
 * force: detach it first), -EIO storage failure. */
int vol_create (struct vol_store *st, const char *name, uint64_t size, const char *type,
                struct vol_info *out, char *err, size_t errlen);
int vol_stat (struct vol_store *st, const char *name_or_id, struct vol_info *out,
              char *err, size_t errlen);
int vol_resize (struct vol_store *st, const char *name_or_id, uint64_t new_size,
                struct vol_info *out, char *err, size_t errlen);
int vol_delete (struct vol_store *st, const char *name_or_id, bool force,
                char *err, size_t errlen);
/* A snapshot of every volume, sorted by name.  *out is malloc'd. */
int vol_list (struct vol_store *st, struct vol_info **out, size_t *n);

/* Create a volume; with from (VOL@SNAP or a snapshot id) a clone that shares
 * the snapshot's data (size 0: the snapshot's size).  flags: VOL_CREATE_*.
 * Errors as vol_create. */
#define VOL_CREATE_MULTI_ATTACH  (1u << 0)   /* may be attached to several instances */
int vol_create_from (struct vol_store *st, const char *name, uint64_t size, const char *type,
                     const char *from, unsigned flags, struct vol_info *out,
                     char *err, size_t errlen);

/* Record that volume name_or_id is attached to instance in role.  Attaching
 * it again to the same instance in the same role changes nothing.  -EBUSY
 * (the message names the holder) if it is attached to another instance and
 * not multi-attach, or to this one in the other role; -EINVAL for a bad
 * instance name.  Durable when it returns 0. */
int vol_attach (struct vol_store *st, const char *name_or_id, const char *instance,
                enum vol_role role, struct vol_info *out, char *err, size_t errlen);
/* Record that the volume is no longer attached to instance (NULL: to the
 * only instance it is attached to).  -EBUSY if it is not attached there. */
int vol_detach (struct vol_store *st, const char *name_or_id, const char *instance,
                struct vol_info *out, char *err, size_t errlen);
/* Give a volume the contents of one of its snapshots (ref: SNAP, VOL@SNAP or
 * an id).  -EBUSY while an NBD client is connected.  Later snapshots stay. */
int vol_rollback (struct vol_store *st, const char *name_or_id, const char *ref,
                  struct vol_info *out, char *err, size_t errlen);

/* ---- snapshots ------------------------------------------------------------- */
struct vol_snap_info {
  char id[VOL_ID_LEN + 1];
  char name[VOL_NAME_MAX + 1];
  char vol_name[VOL_NAME_MAX + 1];  /* source volume (at snapshot time) */
  char vol_id[VOL_ID_LEN + 1];
  uint64_t size;
  uint64_t referenced;              /* bytes of data it holds */
  uint64_t exclusive;               /* bytes only it holds: what deleting it frees */
  int64_t created;
  unsigned connections;
};
/* A crash-consistent snapshot of a live volume: every write acknowledged
 * before it, none acknowledged after.  Copies no data. */
int vol_snapshot_create (struct vol_store *st, const char *vol, const char *name,
                         struct vol_snap_info *out, char *err, size_t errlen);
/* ref: VOL@SNAP or an id.  -EBUSY while exported (unless force). */
int vol_snapshot_delete (struct vol_store *st, const char *ref, bool force, char *err, size_t errlen);
int vol_snapshot_stat (struct vol_store *st, const char *ref, struct vol_snap_info *out,
                       char *err, size_t errlen);
/* Snapshots, of volume vol (by name; NULL: all), by volume then creation. */
int vol_snapshot_list (struct vol_store *st, const char *vol, struct vol_snap_info **out, size_t *n);
/* Chunk-granular ranges whose contents differ between from (VOL@SNAP) and
 * to (VOL@SNAP or a live volume's name).  fn is called per range. */
typedef int (*vol_range_fn) (void *opaque, uint64_t offset, uint64_t length);
int vol_diff (struct vol_store *st, const char *from, const char *to, vol_range_fn fn,
              void *opaque, char *err, size_t errlen);
/* What an NBD client connecting to export name would get: a volume, or a
 * snapshot (read-only).  Returns 0 or -ENOENT. */
int vol_export_stat (struct vol_store *st, const char *name, struct vol_info *out, bool *read_only);

/* ---- sessions: an NBD connection holds a volume open --------------------- */
/* Kicked when the volume is force-deleted: the session must stop and put
 * the volume.  kick runs on the deleting thread with the store's locks
 * held: it must only signal its owner, never call back into volume/. */
struct vol_session {
  void (*kick) (struct vol_session *s);
  struct vol_session *next, *prev;    /* owned by the volume */
};
/* Open a volume by name for a session.  Returns it with a reference held,
 * or NULL with errno ENOENT. */
struct volume *vol_open (struct vol_store *st, const char *name, struct vol_session *s);
void vol_close (struct volume *v, struct vol_session *s);
uint64_t vol_size (struct volume *v);
uint32_t vol_dio_align (struct volume *v);   /* offset/length/memory alignment for O_DIRECT */
bool vol_read_only (struct volume *v);
uint32_t vol_chunk_size (struct volume *v);
/* Would a write to [offset, offset + length) copy a chunk first, because a
 * snapshot or a clone's source still sees it?  (A write that covers such a
 * chunk whole, aligned, replaces it without a copy.) */
bool vol_write_copies (struct volume *v, uint64_t offset, uint64_t length);
/* For data read ahead of a client (any thread): a mark for reading
 * [offset, offset + length), taken before the read is submitted; 0 if a
 * write, trim or write-zeroes near the range is in flight, for the read
 * might miss part of it.  The data read is current for as long as
 * vol_written_since says no write near it has started since the mark.
 * Near: in the range's 1 MiB regions, so a write that overlaps it always
 * counts; so may one in a region WR_SLOTS MiB away, which shares counters. */
uint64_t vol_write_mark (struct volume *v, uint64_t offset, uint32_t length);
bool vol_written_since (struct volume *v, uint64_t offset, uint32_t length, uint64_t mark);

/* ---- I/O statistics --------------------------------------------------------- */
/* What clients asked of a volume, as /proc/diskstats counts it for a disk:
 * requests answered, by kind, with their bytes, how many failed, and the
 * time from each one's arrival to its answer (summed, so that its change
 * over an interval divided by the interval is the average number in
 * flight), and the part of that time each spent on the store: from the
 * request's handing to the store (a write's whole payload in; a read in
 * pieces: its first piece) to its answer; 0 for one answered without it.
 * The rest is a write's wait for its payload.
 * blockd counts them as it answers; they start at zero when the volume is
 * loaded (the daemon's start) or created. */
enum vol_stat_kind {
  VOL_STAT_READ, VOL_STAT_WRITE, VOL_STAT_FLUSH, VOL_STAT_TRIM, VOL_STAT_ZERO,
  VOL_STAT_KINDS
};
struct vol_stat_count {
  uint64_t ops, bytes, errors, time_ns;
  uint64_t storage_ns;                    /* the part of time_ns spent on the store */
};
struct vol_stats {
  int64_t since;                          /* unix seconds: counting began */
  struct vol_stat_count kind[VOL_STAT_KINDS];
};
const char *vol_stat_kind_name (enum vol_stat_kind k);   /* "read", "write", ... */
/* Count one answered request.  slot: the caller's thread (loop) number;
 * threads whose slots differ modulo VOL_STAT_SLOTS never share a cache
 * line (the others share counters, atomically). */
#define VOL_STAT_SLOTS 8
void vol_stats_add (struct volume *v, unsigned slot, enum vol_stat_kind k, uint64_t bytes,
                    uint64_t ns, uint64_t storage_ns, bool failed);
/* The volume's counts, and its info.  Returns 0 or -ENOENT (message in err). */
int vol_stats_get (struct vol_store *st, const char *name_or_id, struct vol_info *info,
                   struct vol_stats *out, char *err, size_t errlen);
/* Every volume's info and counts, taken in one pass, sorted by name.
 * *out is malloc'd.  Returns 0 or -ENOMEM. */
struct vol_info_stats {
  struct vol_info info;                   /* first: sorted as vol_list's */
  struct vol_stats stats;
};
int vol_stats_list (struct vol_store *st, struct vol_info_stats **out, size_t *n);

/* ---- data path ------------------------------------------------------------ */
/* One per loop thread.  The loop hands every CQE whose user_data has
 * (user_data & VOL_UD_TAG_MASK) == tag to vol_io_cqe(). */
#define VOL_UD_TAG_MASK 7ULL
struct vol_io;
struct vol_ioctx {
  struct vol_store *store;
  struct io_uring *ring;
  uint64_t tag;
  /* Thread-safe: hand io back to this context's thread, which must then
   * call vol_io_resume(io).  Used for flush completions and wake-ups. */
  void (*post) (struct vol_ioctx *ctx, struct vol_io *io);
  void *opaque;
  unsigned background;    /* store-internal SQEs in flight (chunk releases,
                             allocation ahead): a loop must not exit before
                             this is 0 */
  unsigned inflight;      /* the data path's pool SQEs queued or in flight */
  unsigned away;          /* ios at the sync thread or parked: each comes back
                             through post */
  /* set by vol_ioctx_register: the pool is registered file 0 of ring, and
   * data buffers inside [fixed_base, fixed_base + fixed_len) are in its
   * registered buffer 0 */
  bool pool_fixed;
  char *fixed_base;
  size_t fixed_len;
  /* Optional, called on this context's thread: buffers for the store's
   * own pool I/O (a chunk's copy), *cap set to the size handed out.  The
   * owner of the ring hands out memory the disk takes in one request:
   * a 1 MiB buffer of 4 KiB pages is more segments than a virtio disk
   * takes (254), and the kernel then refuses it to io_uring's
   * non-blocking path, so it waits for io_uring's worker threads, which
   * write to a file one request at a time.  NULL: the heap. */
  void *(*buf_get) (struct vol_ioctx *ctx, size_t len, size_t *cap);
  void (*buf_put) (struct vol_ioctx *ctx, void *buf, size_t cap);
};

/* Register the store's pool file, and arena (len bytes, may be NULL) as
 * buffer 0, with ctx's ring, so that pool I/O skips the per-request file
 * lookup and page pinning.  Call on the ring's thread before any I/O.
 * Returns 0, or -errno with nothing changed (I/O works as before). */
int vol_ioctx_register (struct vol_ioctx *ctx, void *arena, size_t len);

enum vol_op { VOL_OP_READ, VOL_OP_WRITE, VOL_OP_FLUSH, VOL_OP_TRIM, VOL_OP_ZERO };
#define VOL_F_FUA       (1u << 0)
#define VOL_F_NO_HOLE   (1u << 1)   /* ZERO: keep the range allocated */
#define VOL_F_FAST_ZERO (1u << 2)   /* ZERO: fail with -ENOTSUP rather than write zeros */
#define VOL_F_HOLE_OK   (1u << 3)   /* READ: a range that is all hole is not filled (io->hole) */

struct vol_sub;
struct vol_io {
  /* set by the caller before vol_io_submit */
  struct volume *vol;
  struct vol_ioctx *ctx;
  enum vol_op op;
  unsigned flags;
  uint64_t offset;
  uint32_t length;
  void *buf;                      /* READ: filled; WRITE: data.  Aligned to vol_dio_align(). */
  void (*done) (struct vol_io *io);
  void *opaque;
  /* result: 0 or -errno, valid when done is called */
  int result;
  /* READ with VOL_F_HOLE_OK: nothing in the range was ever written (or it
   * was trimmed): it reads as zeros, and buf was left as it was */
  bool hole;
  /* private to volume/ */
  int pending;
  int phase;
  bool counted;                   /* in the volume's writes in flight */
  uint64_t cow_whole;             /* chunks (from the request's first) that a
                                     copy-on-write filled with this write's data */
  uint64_t rmw_lo, rmw_hi;        /* aligned range an unaligned write rewrites */
  void *bounce;
  struct vol_sub *subs;
  unsigned nsubs, capsubs;
  struct vol_io *next;            /* wait / sync queues */
};

/* Start io.  Returns 0 if it completes later (io->done is called on the
 * ctx's thread), or 1 if it already completed (io->result is set and done
 * is NOT called). */
int vol_io_submit (struct vol_io *io);
void vol_io_cqe (struct vol_ioctx *ctx, struct io_uring_cqe *cqe);
void vol_io_resume (struct vol_io *io);
void vol_io_release (struct vol_io *io);   /* free private buffers; io may be reused */

/* Allocation status of [offset, offset+length): calls fn for consecutive
 * extents (allocated or not) until the range is covered, max_extents were
 * reported, or fn returns nonzero. */
typedef int (*vol_extent_fn) (void *opaque, uint64_t offset, uint64_t length, bool allocated);
int vol_extents (struct volume *v, uint64_t offset, uint64_t length, unsigned max_extents,
                 vol_extent_fn fn, void *opaque);

/* ---- fault injection, for tests ------------------------------------------ */
/* Make the next count pool operations of kind op (VOL_OP_READ, WRITE, TRIM
 * or ZERO) on volume name (NULL: any) fail with -err (EIO, ENOSPC...), as
 * if the disk had failed them.  count 0 clears every fault.  Returns 0 or
 * -EINVAL.  Costs one predictable branch on the I/O path when unused. */
int vol_fault_set (const char *name, enum vol_op op, int err, unsigned count);
/* Make the next count pool operations of kind op on volume name (NULL:
 * any) wait ms milliseconds (1 to 10000) before they start, and then
 * succeed or fail as the disk has them; they count as in flight meanwhile.
 * Replaces any fault set before.  Returns 0 or -EINVAL. */
int vol_fault_delay (const char *name, enum vol_op op, unsigned ms, unsigned count);

#endif
