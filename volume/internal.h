/* volume/internal.h — what the files of volume/ share. */
#ifndef BLOCKD_VOLUME_INTERNAL_H
#define BLOCKD_VOLUME_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <rocksdb/c.h>
#include <uuid/uuid.h>

#include "volume/volume.h"

/* Chunk map: a two-level table of physical chunk numbers + 1 (0 = hole),
 * LEAF_ENTRIES per leaf; leaves are allocated on first write. */
#define LEAF_SHIFT   12
#define LEAF_ENTRIES (1u << LEAF_SHIFT)

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

  pthread_mutex_t lock;             /* the volume registry below */
  struct volume **vols;
  size_t nvols, capvols;

  pthread_mutex_t alloc_lock;       /* the allocator */
  uint64_t *bitmap;                 /* 1 = in use, being freed, or in limbo */
  uint64_t alloc_hint, nfree;
  struct limbo_chunk { uint32_t phys; uint64_t seq; } *limbo;
  size_t nlimbo, caplimbo;
  _Atomic uint32_t *pins;

  /* metadata written since the last WAL sync (for FUA) */
  _Atomic uint64_t meta_seq, meta_synced;

  /* the sync thread: group commit of FLUSH and FUA */
  pthread_t sync_thread;
  pthread_mutex_t sync_lock;
  pthread_cond_t sync_cond;
  struct vol_io *sync_head, *sync_tail;
  bool sync_stop;
};

struct volume {
  struct vol_store *st;
  _Atomic int refs;                 /* registry + sessions */
  uuid_t uuid;
  char id[VOL_ID_LEN + 1];
  char name[VOL_NAME_MAX + 1];
  char type[VOL_TYPE_MAX + 1];
  int64_t created;

  pthread_mutex_t lock;             /* everything below */
  uint64_t size;
  uint32_t **leaves;                /* chunk map */
  uint64_t nleaves;
  uint64_t nmapped;
  bool deleted;
  struct vol_session *sessions;
  unsigned nsessions;
  struct vol_io *rmw_active;        /* unaligned writes in flight */
  struct vol_io *rmw_waiting;       /* ...and those waiting for them */
};

/* store.c */
uint32_t map_get (struct volume *v, uint64_t chunk);
int map_set (struct volume *v, uint64_t chunk, uint32_t phys_plus1);
int meta_put_map (struct volume *v, uint64_t chunk, uint32_t phys_plus1);
int meta_put_volume (struct volume *v);
int alloc_chunk (struct vol_store *st, uint32_t *phys);
void alloc_free (struct vol_store *st, uint32_t phys);
void alloc_promote (struct vol_store *st, uint64_t synced);
/* Drop the volume's claim on phys: frees it now, or when its pins drain.
 * ctx may be NULL (then the hole is punched synchronously). */
void chunk_unmap (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx);
void chunk_release (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx);
void volume_put (struct volume *v);
void set_err (char *err, size_t errlen, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

/* sync.c */
int sync_start (struct vol_store *st);
void sync_stop (struct vol_store *st);
void sync_enqueue (struct vol_store *st, struct vol_io *io);
int sync_now (struct vol_store *st);

/* Every SQE the store submits carries a pointer to a struct whose first
 * member is one of these kinds. */
enum sub_kind { SUB_READ, SUB_WRITE, SUB_RMW_READ, SUB_FALLOC, SUB_FREE, SUB_RELEASE };
struct release_op {
  int kind;                         /* SUB_RELEASE */
  uint32_t phys;
};

/* fault.c: test-only fault injection (see vol_fault_set) */
extern atomic_bool vol_faults_armed;
int fault_apply (struct vol_io *io, enum vol_op op, int res);

/* io.c */
void io_release_cqe (struct vol_store *st, struct io_uring_cqe *cqe);

#endif
