/* volume/internal.h — what the files of volume/ share. */
#ifndef BLOCKD_VOLUME_INTERNAL_H
#define BLOCKD_VOLUME_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <rocksdb/c.h>
#include <uuid/uuid.h>

#include <linux/time_types.h>

#include "volume/volume.h"

/* Chunk map: a two-level table, LEAF_ENTRIES per leaf; leaves are
 * allocated on first write.  A live map entry (ment) holds the pool chunk
 * + 1 in its low 32 bits (0: hole) and the generation of the lineage entry
 * it comes from in bits 32..62 (ME_INHERITED: seen through the base of a
 * clone).  ME_BUSY marks a chunk being copied (copy-on-write). */
#define LEAF_SHIFT   12
#define LEAF_ENTRIES (1u << LEAF_SHIFT)
typedef uint64_t ment_t;
#define ME_PHYS1(e)      ((uint32_t) (e))
#define ME_GEN(e)        ((uint32_t) ((e) >> 32) & 0x7fffffffu)
#define ME_BUSY          (1ULL << 63)
#define ME_INHERITED     0u
#define ME_MAKE(p1, gen) ((uint64_t) (gen) << 32 | (uint32_t) (p1))
#define TOMB             UINT32_MAX   /* lineage entry: the chunk became a hole */

/* A lineage is the history of one chain of writes: for each chunk, the
 * pool chunks it held from which generation on (struct hist, sorted by
 * generation).  The live volume writes at cur_gen; a snapshot is a view
 * (lineage, generation) and taking one only bumps cur_gen; a clone or a
 * rolled-back volume is a new lineage whose base is such a view, read
 * through where it has no entry of its own.  Every entry owns its pool
 * chunk: no chunk is shared between entries, so no reference counts. */
struct hent { uint32_t gen, phys; };
struct hist { uint32_t n, cap; struct hent e[]; };

struct lineage {
  uuid_t uuid;
  char id[VOL_ID_LEN + 1];
  struct lineage *base;             /* read-through parent, or NULL */
  uint32_t base_gen;
  uint32_t cur_gen;                 /* the live view writes at this generation */
  struct volume *live;              /* the volume whose live view this is */
  struct hist ***leaves;            /* per chunk history */
  uint64_t nleaves;
  uint32_t *vgens;                  /* sorted generations of the other views: */
  size_t nv, capv;                  /* snapshots, and bases of child lineages */
  unsigned nchildren;
  struct lineage *next;             /* store list */
};

struct snapshot {
  uuid_t uuid;
  char id[VOL_ID_LEN + 1];
  char name[VOL_NAME_MAX + 1];
  char vol_name[VOL_NAME_MAX + 1];  /* the source volume at snapshot time */
  char vol_id[VOL_ID_LEN + 1];
  struct lineage *lin;
  uint32_t gen;
  uint64_t size;
  int64_t created;
  struct volume *view;              /* read-only volume while exported */
  struct snapshot *next;
};

/* Per physical chunk: in-flight I/O count, and FREE_PENDING once the chunk
 * was unmapped while I/O to it was in flight.  The last I/O to finish gives
 * the chunk back, so a freed chunk is never reused under a late write. */
#define PIN_FREE_PENDING (1u << 31)

/* struct vol_store — lock order: st->lock, then v->lock, then st->alloc_lock. */
struct vol_store {
  char dir[256];
  int pool_fd;
  uint32_t chunk_size, chunk_shift;
  uint32_t dio_align;
  uint64_t nchunks;                 /* pool capacity in chunks */
  rocksdb_t *db;
  rocksdb_options_t *dbopts;
  rocksdb_writeoptions_t *wopts;
  rocksdb_readoptions_t *ropts;

  pthread_mutex_t lock;             /* the registry: volumes, lineages, snapshots */
  struct volume **vols;
  size_t nvols, capvols;
  struct lineage *lineages;
  struct snapshot *snaps;

  pthread_mutex_t alloc_lock;       /* the allocator */
  uint64_t *bitmap;                 /* 1 = in use, being freed, or in limbo */
  uint64_t alloc_hint, nfree;
  uint64_t ahead_group;             /* group of the chunk last handed out (alloc_ahead) */
  atomic_bool ahead_off;            /* the filesystem cannot allocate ahead */
  atomic_bool zero_range_off;       /* nor zero a range: zeroing part of a chunk punches
                                     * (and allocates again for NO_HOLE) */
  struct limbo_chunk { uint32_t phys; uint64_t seq; } *limbo;
  size_t nlimbo, caplimbo;
  _Atomic uint32_t *pins;

  /* a copy-on-write or tombstone may have left an entry nobody sees */
  atomic_bool gc_needed;

  /* metadata written since the last WAL sync (for FUA) */
  _Atomic uint64_t meta_seq, meta_synced;

  /* the sync thread: group commit of FLUSH and FUA */
  pthread_t sync_thread;
  pthread_mutex_t sync_lock;
  pthread_cond_t sync_cond;
  struct vol_io *sync_head, *sync_tail;
  bool sync_stop;
};

/* Writes, trims and write-zeroes counted by the 1 MiB regions of the
 * volume they touch, for data read ahead of a client (vol_write_mark):
 * region r counts in wr[r % WR_SLOTS], so regions WR_SLOTS MiB apart share
 * a slot and a write to one makes what was read ahead from the other look
 * stale, which costs a read again and nothing else.  started wraps after
 * 2^32 writes to a slot, far more than come while a read ahead waits to
 * be taken (at most a second without reads). */
#define WR_SHIFT 20
#define WR_SLOTS 1024
struct wr_region {
  _Atomic uint32_t inflight;
  _Atomic uint32_t started;
};

struct volume {
  struct vol_store *st;
  _Atomic int refs;                 /* registry + sessions */
  uuid_t uuid;
  char id[VOL_ID_LEN + 1];
  char name[VOL_NAME_MAX + 1];
  char type[VOL_TYPE_MAX + 1];
  int64_t created;

  struct lineage *lin;              /* NULL for a snapshot view */
  struct snapshot *snap;            /* a read-only snapshot view, or NULL */
  char source[2 * VOL_NAME_MAX + 2];/* VOL@SNAP a clone was made from, or "" */
  bool multi_attach;
  unsigned nattach;                 /* attach[]: under st->lock */
  struct vol_attachment attach[VOL_ATTACH_MAX];

  pthread_mutex_t lock;             /* everything below (not wr[]), and lin's history */
  _Atomic uint64_t size;            /* changed under lock; read without it on the I/O path */
  ment_t **leaves;                  /* chunk map of the live view */
  uint64_t nleaves;
  uint64_t nmapped;                 /* own (not inherited) chunks mapped */
  bool deleted;
  struct vol_session *sessions;
  unsigned nsessions;
  struct vol_io *excl_active;       /* writes that need a range to themselves */
  struct vol_io *excl_waiting;      /* (unaligned, copy-on-write) and waiters */
  _Atomic int writes_inflight;      /* for a snapshot's quiesce */
  struct wr_region wr[WR_SLOTS];    /* writes by where they go, for read-ahead */
  atomic_bool quiescing;
  pthread_cond_t quiesce_cond;
  struct vol_io *quiesce_waiting;

  int64_t stats_since;              /* vol_stats_add: counted since (unix s) */
  struct stat_slot *stats;          /* VOL_STAT_SLOTS of them, 64-byte aligned */
};

/* stats.c */
struct stat_slot;
int stats_init (struct volume *v);
void stats_free (struct volume *v);
void stats_sum (struct volume *v, struct vol_stats *out);   /* its slots added up */

/* store.c */
ment_t map_get (struct volume *v, uint64_t chunk);
int map_set (struct volume *v, uint64_t chunk, ment_t e);
int map_grow (struct volume *v, uint64_t size);
void map_free (struct volume *v);
/* Record lineage entry (chunk, gen) -> phys (TOMB: a hole; NO_ENTRY:
 * delete it), in wb if given, else at once. */
#define NO_ENTRY (UINT32_MAX - 1)
int meta_put_entry (struct vol_store *st, rocksdb_writebatch_t *wb, struct lineage *l,
                    uint64_t chunk, uint32_t gen, uint32_t phys);
int meta_put_volume (struct volume *v, rocksdb_writebatch_t *wb);
int meta_write (struct vol_store *st, rocksdb_writebatch_t *wb, char *err, size_t errlen);
struct volume *volume_new (struct vol_store *st);
struct volume *find_volume_unlocked (struct vol_store *st, const char *name_or_id);
struct volume *find_volume_or_err (struct vol_store *st, const char *name_or_id,
                                   char *err, size_t errlen);
unsigned volume_retire (struct volume *v, bool force);
int registry_add (struct vol_store *st, struct volume *v);
void fill_info (struct volume *v, struct vol_info *vi);
/* ctx (may be NULL): the caller's ring, on which the allocator may ask the
 * filesystem to allocate the blocks of the chunks it hands out next. */
int alloc_chunk (struct vol_store *st, uint32_t *phys, struct vol_ioctx *ctx);
void alloc_free (struct vol_store *st, uint32_t phys);
void chunk_punched (struct vol_store *st, uint32_t phys, int res);
void alloc_promote (struct vol_store *st, uint64_t synced);
/* Drop the volume's claim on phys: frees it now, or when its pins drain.
 * ctx may be NULL (then the hole is punched synchronously). */
void chunk_unmap (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx);
/* The first half of chunk_unmap: true if no I/O pins phys, and the caller
 * must now release it (punch it, then alloc_free); else the last pin will. */
bool chunk_unmap_claim (struct vol_store *st, uint32_t phys);
void chunk_release (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx);
void volume_put (struct volume *v);
void set_err (char *err, size_t errlen, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

/* attach.c */
struct json_object;
void attach_to_json (const struct volume *v, struct json_object *o);
int attach_from_json (struct volume *v, struct json_object *o);

/* snapshot.c */
struct volume *snapshot_view_unlocked (struct vol_store *st, const char *name);
struct snapshot *find_snapshot_unlocked (struct vol_store *st, const char *ref);
const char *vol_type_invalid (const char *type);

/* lineage.c */
struct lineage *lin_new (struct vol_store *st, struct lineage *base, uint32_t base_gen);
void lin_free (struct lineage *l);        /* memory only */
bool lin_empty (const struct lineage *l); /* no entry left */
void lin_link (struct vol_store *st, struct lineage *l);
int lin_put (struct vol_store *st, rocksdb_writebatch_t *wb, struct lineage *l);
struct hist *lin_hist (struct lineage *l, uint64_t chunk);
/* Set the entry of chunk at gen (append, or replace one of the same gen). */
int lin_hist_set (struct lineage *l, uint64_t chunk, uint32_t gen, uint32_t phys);
void lin_hist_drop (struct lineage *l, uint64_t chunk, uint32_t gen);
int lin_view_add (struct lineage *l, uint32_t gen);
void lin_view_del (struct lineage *l, uint32_t gen);
uint32_t lin_maxv (struct lineage *l);
/* What view (l, gen) holds at chunk: pool chunk + 1, or 0 for a hole. */
uint32_t view_lookup (struct lineage *l, uint32_t gen, uint64_t chunk);
/* Fill a chunk map with view (l, gen) over nchunks chunks; own entries of
 * l get their generation, what comes through a base ME_INHERITED (or all
 * of it, if all_inherited). */
int view_materialize (struct lineage *l, uint32_t gen, uint64_t nchunks, ment_t ***leaves,
                      uint64_t *nleaves, bool all_inherited, uint64_t *nown, struct volume *held);
/* Who holds what: for every pool chunk, how many views (live volumes and
 * snapshots) see it, and the last one that did. */
struct holders {
  uint32_t *count;
  const void **last;
  uint64_t shared, leaked;
};
int holders_compute (struct vol_store *st, struct holders *h);
void holders_free (struct holders *h);
/* Remove every entry no view can see any more, and every lineage left with
 * neither views nor entries, in one batch with what wb already holds (wb may
 * be NULL); frees their pool chunks once it is written.  Caller holds
 * st->lock and has already changed the in-memory state. */
int store_gc (struct vol_store *st, rocksdb_writebatch_t *wb, char *err, size_t errlen);
/* What store_gc would do, to memory only (for --check): returns how many
 * pool chunks it would free, or -errno.  Takes st->lock. */
long store_gc_in_memory (struct vol_store *st);
/* store_gc if a write asked for it (gc_needed).  Takes st->lock. */
void store_gc_if_needed (struct vol_store *st);

/* sync.c */
int sync_start (struct vol_store *st);
void sync_stop (struct vol_store *st);
/* On io's own thread: io goes to the sync thread, counted in io->ctx->away
 * until vol_io_resume takes it back. */
void sync_enqueue (struct vol_store *st, struct vol_io *io);
int sync_now (struct vol_store *st);
/* Make the metadata log (RocksDB WAL) durable, not the pool.  0 or -EIO. */
int meta_log_sync (struct vol_store *st);

/* Every SQE the store submits carries a pointer to a struct whose first
 * member is one of these kinds. */
enum sub_kind { SUB_READ, SUB_WRITE, SUB_RMW_READ, SUB_FALLOC, SUB_FREE, SUB_COW_READ,
                SUB_COW_WRITE, SUB_RELEASE, SUB_AHEAD, SUB_DELAY };
struct release_op {
  int kind;                         /* SUB_RELEASE, SUB_AHEAD, SUB_DELAY */
  uint32_t phys;                    /* SUB_AHEAD: the group */
  struct vol_ioctx *ctx;
  struct __kernel_timespec ts;      /* SUB_DELAY: how long */
};

/* fault.c: test-only fault injection (see vol_fault_set) */
extern atomic_bool vol_faults_armed;
int fault_apply (struct vol_io *io, enum vol_op op, int res);
unsigned fault_delay (struct vol_io *io, enum vol_op op);

/* io.c */
void io_release_cqe (struct vol_store *st, struct io_uring_cqe *cqe);

#endif
