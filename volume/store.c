/* volume/store.c — the store: pool file, RocksDB metadata, allocator,
 * recovery, and the volume registry.
 *
 * Metadata keys (RocksDB, default column family):
 *   "S"                          store parameters (JSON)
 *   "V" <id, 36 chars>           a volume (JSON)
 *   "M" <uuid, 16 bytes> <chunk, be64>   -> <phys, be32>   one chunk map entry
 *
 * The chunk maps are the only truth about which pool chunks are in use: the
 * allocator is rebuilt from them on open and every free chunk is punched
 * out of the pool file then, so a crash can neither leak space nor let a
 * reused chunk show another volume's old data.
 */
#include "volume/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

void
set_err (char *err, size_t errlen, const char *fmt, ...)
{
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
}

/* ---- chunk maps ----------------------------------------------------------- */

/* Caller holds v->lock. */
ment_t
map_get (struct volume *v, uint64_t chunk)
{
  uint64_t l = chunk >> LEAF_SHIFT;
  if (l >= v->nleaves || v->leaves[l] == NULL)
    return 0;
  return v->leaves[l][chunk & (LEAF_ENTRIES - 1)];
}

int
map_grow (struct volume *v, uint64_t size)
{
  uint64_t nchunks = (size + v->st->chunk_size - 1) >> v->st->chunk_shift;
  uint64_t nleaves = (nchunks + LEAF_ENTRIES - 1) >> LEAF_SHIFT;
  if (nleaves <= v->nleaves)
    return 0;
  ment_t **l = realloc (v->leaves, nleaves * sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  memset (l + v->nleaves, 0, (nleaves - v->nleaves) * sizeof *l);
  v->leaves = l;
  v->nleaves = nleaves;
  return 0;
}

void
map_free (struct volume *v)
{
  for (uint64_t l = 0; l < v->nleaves; l++)
    free (v->leaves[l]);
  free (v->leaves);
  v->leaves = NULL;
  v->nleaves = 0;
}

/* Caller holds v->lock.  Keeps nmapped (own chunks) right.  Returns 0 or
 * -ENOMEM. */
int
map_set (struct volume *v, uint64_t chunk, ment_t e)
{
  uint64_t l = chunk >> LEAF_SHIFT;
  if (l >= v->nleaves)
    return -EINVAL;
  if (v->leaves[l] == NULL) {
    if (e == 0)
      return 0;
    v->leaves[l] = calloc (LEAF_ENTRIES, sizeof (ment_t));
    if (v->leaves[l] == NULL)
      return -ENOMEM;
  }
  ment_t *p = &v->leaves[l][chunk & (LEAF_ENTRIES - 1)];
  bool was_own = ME_PHYS1 (*p) && ME_GEN (*p) != ME_INHERITED;
  bool is_own = ME_PHYS1 (e) && ME_GEN (e) != ME_INHERITED;
  v->nmapped += (uint64_t) is_own - (uint64_t) was_own;
  *p = e;
  return 0;
}

/* "M" <lineage uuid, 16> <chunk, be64> <gen, be32> -> <phys, be32> */
#define MKEY_LEN 29
static void
entry_key (char key[MKEY_LEN], const struct lineage *l, uint64_t chunk, uint32_t gen)
{
  key[0] = 'M';
  memcpy (key + 1, l->uuid, 16);
  for (int i = 0; i < 8; i++)
    key[17 + i] = (char) (chunk >> (56 - 8 * i));
  for (int i = 0; i < 4; i++)
    key[25 + i] = (char) (gen >> (24 - 8 * i));
}

int
meta_put_entry (struct vol_store *st, rocksdb_writebatch_t *wb, struct lineage *l,
                uint64_t chunk, uint32_t gen, uint32_t phys)
{
  char key[MKEY_LEN];
  char val[4] = { (char) (phys >> 24), (char) (phys >> 16), (char) (phys >> 8), (char) phys };
  entry_key (key, l, chunk, gen);
  if (wb) {
    if (phys == NO_ENTRY)
      rocksdb_writebatch_delete (wb, key, sizeof key);
    else
      rocksdb_writebatch_put (wb, key, sizeof key, val, sizeof val);
    return 0;
  }
  char *dberr = NULL;
  if (phys == NO_ENTRY)
    rocksdb_delete (st->db, st->wopts, key, sizeof key, &dberr);
  else
    rocksdb_put (st->db, st->wopts, key, sizeof key, val, sizeof val, &dberr);
  atomic_fetch_add (&st->meta_seq, 1);
  if (dberr) {
    log_error_ratelimited ("metadata write failed: %s", dberr);
    free (dberr);
    return -EIO;
  }
  return 0;
}

int
meta_write (struct vol_store *st, rocksdb_writebatch_t *wb, char *err, size_t errlen)
{
  char *dberr = NULL;
  rocksdb_write (st->db, st->wopts, wb, &dberr);
  atomic_fetch_add (&st->meta_seq, 1);
  if (dberr) {
    set_err (err, errlen, "the metadata store refused the update: %s", dberr);
    log_error ("metadata write failed: %s", dberr);
    free (dberr);
    return -EIO;
  }
  return 0;
}

int
meta_put_volume (struct volume *v, rocksdb_writebatch_t *wb)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "id", json_object_new_string (v->id));
  json_object_object_add (o, "name", json_object_new_string (v->name));
  json_object_object_add (o, "type", json_object_new_string (v->type));
  json_object_object_add (o, "size", json_object_new_int64 ((int64_t) v->size));
  json_object_object_add (o, "created", json_object_new_int64 (v->created));
  json_object_object_add (o, "lineage", json_object_new_string (v->lin->id));
  json_object_object_add (o, "source", json_object_new_string (v->source));
  attach_to_json (v, o);
  const char *s = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN);
  char key[1 + VOL_ID_LEN];
  key[0] = 'V';
  memcpy (key + 1, v->id, VOL_ID_LEN);
  int r = 0;
  if (wb)
    rocksdb_writebatch_put (wb, key, sizeof key, s, strlen (s));
  else {
    char *dberr = NULL;
    rocksdb_put (v->st->db, v->st->wopts, key, sizeof key, s, strlen (s), &dberr);
    atomic_fetch_add (&v->st->meta_seq, 1);
    if (dberr) {
      log_error ("metadata write failed for volume %s: %s", v->name, dberr);
      free (dberr);
      r = -EIO;
    }
  }
  json_object_put (o);
  return r;
}

/* ---- allocator -------------------------------------------------------------- */

static inline bool bit_get (const uint64_t *bm, uint64_t i) { return bm[i >> 6] >> (i & 63) & 1; }
static inline void bit_set (uint64_t *bm, uint64_t i) { bm[i >> 6] |= 1ULL << (i & 63); }
static inline void bit_clr (uint64_t *bm, uint64_t i) { bm[i >> 6] &= ~(1ULL << (i & 63)); }

/* Freed chunks wait in limbo until the metadata that unmapped them is
 * synced: reused earlier, a power loss could bring back the old mapping of
 * one volume over another volume's new data. */
static void
limbo_promote_unlocked (struct vol_store *st, uint64_t synced)
{
  size_t k = 0;
  for (size_t i = 0; i < st->nlimbo; i++) {
    if (st->limbo[i].seq <= synced) {
      bit_clr (st->bitmap, st->limbo[i].phys);
      st->nfree++;
    }
    else
      st->limbo[k++] = st->limbo[i];
  }
  st->nlimbo = k;
}

void
alloc_promote (struct vol_store *st, uint64_t synced)
{
  pthread_mutex_lock (&st->alloc_lock);
  limbo_promote_unlocked (st, synced);
  pthread_mutex_unlock (&st->alloc_lock);
}

/* ---- allocating ahead ----------------------------------------------------------
 * A write into a hole of the pool file has the filesystem allocate blocks,
 * and ext4 does that only with the file locked for that write alone: the
 * write cannot take io_uring's non-blocking path, it waits for io_uring's
 * worker threads (which write to one file one request at a time), and
 * every other I/O on the pool waits for the lock.  Every first write to a
 * chunk of a new volume, and every copy-on-write, was such a write.  So
 * while the allocator hands out the chunks of one group of AHEAD_BYTES, it
 * has the filesystem allocate that group and the next (unwritten extents:
 * they read as zeros; blocks already in use are left as they are) with an
 * asynchronous fallocate on the caller's ring.  Chunks given back are
 * still punched, so the pool file stays thin beyond the groups in use. */
#define AHEAD_BYTES (256ull << 20)

static uint64_t
ahead_chunks (const struct vol_store *st)
{
  uint64_t n = AHEAD_BYTES >> st->chunk_shift;
  return n ? n : 1;
}

/* Queue fallocate (mode, off, len) on ctx's ring as a store-internal op
 * (kind, phys), finished by io_release_cqe.  False if there was no SQE or
 * no memory: nothing is queued. */
static bool
background_fallocate (struct vol_store *st, struct vol_ioctx *ctx, int kind, uint32_t phys,
                      int mode, uint64_t off, uint64_t len)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (ctx->ring);
  struct release_op *op = sqe ? malloc (sizeof *op) : NULL;
  if (op == NULL) {
    if (sqe) {   /* a no-op that no completion handler will look at */
      io_uring_prep_nop (sqe);
      io_uring_sqe_set_data64 (sqe, 0);
    }
    return false;
  }
  op->kind = kind;
  op->phys = phys;
  op->ctx = ctx;
  io_uring_prep_fallocate (sqe, st->pool_fd, mode, off, len);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) op | ctx->tag);
  ctx->background++;
  return true;
}

/* The allocator entered group (from prev, or UINT64_MAX): ask for the next
 * group, and for this one too unless it was asked for as the next one. */
static void
alloc_ahead (struct vol_store *st, uint64_t group, uint64_t prev, struct vol_ioctx *ctx)
{
  uint64_t per = ahead_chunks (st);
  uint64_t ngroups = (st->nchunks + per - 1) / per;
  bool asked = prev != UINT64_MAX && (prev + 1) % ngroups == group;
  for (uint64_t k = asked ? 1 : 0; k < 2 && k < ngroups; k++) {
    uint64_t g = (group + k) % ngroups;
    uint64_t first = g * per, n = st->nchunks - first < per ? st->nchunks - first : per;
    if (!background_fallocate (st, ctx, SUB_AHEAD, (uint32_t) g, FALLOC_FL_KEEP_SIZE,
                               first << st->chunk_shift, n << st->chunk_shift)) {
      /* no room now: ask again with the next chunk */
      pthread_mutex_lock (&st->alloc_lock);
      st->ahead_group = UINT64_MAX;
      pthread_mutex_unlock (&st->alloc_lock);
      return;
    }
  }
}

static void
ahead_done (struct vol_store *st, struct release_op *op, int res)
{
  if (res == -EOPNOTSUPP || res == -ENOSYS || res == -EINVAL) {
    if (!atomic_exchange (&st->ahead_off, true))
      log_info ("%s/pool.dat: the filesystem does not allocate ahead (%s); first writes to "
                "chunks allocate their own blocks", st->dir, strerror (-res));
  }
  else if (res < 0)
    log_error_ratelimited ("%s/pool.dat: allocating the blocks of chunks %llu and on: %s",
                           st->dir, (unsigned long long) op->phys * ahead_chunks (st),
                           strerror (-res));
}

/* Returns 0 and a free chunk in *phys (now in use), or -ENOSPC. */
int
alloc_chunk (struct vol_store *st, uint32_t *phys, struct vol_ioctx *ctx)
{
  pthread_mutex_lock (&st->alloc_lock);
  if (st->nfree == 0 && st->nlimbo) {
    /* Only chunks in limbo are left: sync the metadata now (a rare stall,
     * on a full pool) so that freed space is usable at once. */
    pthread_mutex_unlock (&st->alloc_lock);
    sync_now (st);
    pthread_mutex_lock (&st->alloc_lock);
    limbo_promote_unlocked (st, atomic_load (&st->meta_synced));
  }
  if (st->nfree == 0) {
    pthread_mutex_unlock (&st->alloc_lock);
    return -ENOSPC;
  }
  uint64_t nwords = (st->nchunks + 63) / 64;
  uint64_t w = st->alloc_hint / 64;
  for (uint64_t n = 0; n <= nwords; n++, w = (w + 1) % nwords) {
    uint64_t free_bits = ~st->bitmap[w];
    if (free_bits == 0)
      continue;
    uint64_t i = w * 64 + (uint64_t) __builtin_ctzll (free_bits);
    if (i >= st->nchunks)
      continue;
    bit_set (st->bitmap, i);
    st->nfree--;
    st->alloc_hint = i + 1;
    uint64_t group = i / ahead_chunks (st), prev = st->ahead_group;
    bool ahead = ctx && group != prev && !atomic_load (&st->ahead_off);
    if (ahead)
      st->ahead_group = group;
    pthread_mutex_unlock (&st->alloc_lock);
    if (ahead)
      alloc_ahead (st, group, prev, ctx);
    *phys = (uint32_t) i;
    return 0;
  }
  pthread_mutex_unlock (&st->alloc_lock);
  return -ENOSPC;
}

/* phys is punched and unmapped: into limbo until the unmapping is synced. */
void
alloc_free (struct vol_store *st, uint32_t phys)
{
  uint64_t seq = atomic_load (&st->meta_seq);
  pthread_mutex_lock (&st->alloc_lock);
  if (bit_get (st->bitmap, phys)) {
    if (st->nlimbo == st->caplimbo) {
      size_t cap = st->caplimbo ? 2 * st->caplimbo : 64;
      void *n = realloc (st->limbo, cap * sizeof *st->limbo);
      if (n == NULL) {
        /* no memory to wait: the chunk stays in use until the next start */
        pthread_mutex_unlock (&st->alloc_lock);
        log_error_ratelimited ("out of memory freeing a chunk; it is reclaimed at the next start");
        return;
      }
      st->limbo = n;
      st->caplimbo = cap;
    }
    st->limbo[st->nlimbo++] = (struct limbo_chunk) { .phys = phys, .seq = seq };
    if (atomic_load (&st->meta_synced) >= seq)
      limbo_promote_unlocked (st, seq);
  }
  pthread_mutex_unlock (&st->alloc_lock);
}

static int
punch (struct vol_store *st, uint64_t off, uint64_t len)
{
  if (fallocate (st->pool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) off, (off_t) len) < 0)
    return -errno;
  return 0;
}

/* The punch of a chunk given back finished with res (0 or -errno): the
 * chunk goes to the allocator, or stays in use until the next start. */
void
chunk_punched (struct vol_store *st, uint32_t phys, int res)
{
  if (res < 0)
    log_error_ratelimited ("punching chunk %u: %s (space stays in use until restart)",
                           phys, strerror (-res));
  else
    alloc_free (st, phys);
}

/* A chunk whose pins drained: punch it out of the pool (so it reads as
 * zeros when reused), then give it to the allocator.  With a ring the punch
 * is asynchronous and io_release_cqe() finishes the job. */

void
chunk_release (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx)
{
  atomic_store (&st->pins[phys], 0);
  if (ctx && background_fallocate (st, ctx, SUB_RELEASE, phys,
                                   FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                   (uint64_t) phys << st->chunk_shift, st->chunk_size))
    return;
  /* no ring, no SQE or no memory: punch here */
  chunk_punched (st, phys, punch (st, (uint64_t) phys << st->chunk_shift, st->chunk_size));
}

void
io_release_cqe (struct vol_store *st, struct io_uring_cqe *cqe)
{
  struct release_op *op = (struct release_op *) (uintptr_t) (cqe->user_data & ~VOL_UD_TAG_MASK);
  if (op->kind == SUB_AHEAD)
    ahead_done (st, op, cqe->res);
  else if (op->kind == SUB_RELEASE)
    chunk_punched (st, op->phys, cqe->res);
  op->ctx->background--;
  free (op);
}

/* The volume no longer maps phys: release it now, or let the last pin do it. */
bool
chunk_unmap_claim (struct vol_store *st, uint32_t phys)
{
  uint32_t old = atomic_fetch_or (&st->pins[phys], PIN_FREE_PENDING);
  if ((old & ~PIN_FREE_PENDING) != 0)
    return false;
  atomic_store (&st->pins[phys], 0);
  return true;
}

void
chunk_unmap (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx)
{
  if (chunk_unmap_claim (st, phys))
    chunk_release (st, phys, ctx);
}

/* ---- volumes ---------------------------------------------------------------- */

const char *const vol_disk_types[] = { "standard", "ssd", "premium", NULL };

const char *
vol_status_name (enum vol_status s)
{
  return s == VOL_IN_USE ? "in-use" : "available";
}

const char *
vol_name_invalid (const char *name)
{
  size_t n = strlen (name);
  if (n == 0)
    return "must not be empty";
  if (n > VOL_NAME_MAX)
    return "is longer than 63 characters";
  if (name[0] == '.' || name[0] == '-')
    return "must not start with '.' or '-'";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char) name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
          || c == '.' || c == '_' || c == '-'))
      return "may contain only letters, digits, '.', '_' and '-'";
  }
  return NULL;
}

const char *
vol_size_invalid (uint64_t size)
{
  if (size == 0)
    return "must be positive";
  if (size % VOL_SIZE_ALIGN)
    return "must be a multiple of 512 bytes";
  if (size > VOL_MAX_SIZE)
    return "is larger than the maximum of 256T";
  return NULL;
}

void
fill_info (struct volume *v, struct vol_info *vi)
{
  memset (vi, 0, sizeof *vi);
  memcpy (vi->id, v->id, sizeof vi->id);
  memcpy (vi->name, v->name, sizeof vi->name);
  memcpy (vi->type, v->type, sizeof vi->type);
  memcpy (vi->source, v->source, sizeof vi->source);
  vi->created = v->created;
  vi->multi_attach = v->multi_attach;
  vi->nattach = v->nattach;
  memcpy (vi->attach, v->attach, sizeof vi->attach);
  pthread_mutex_lock (&v->lock);
  vi->size = v->size;
  vi->allocated = v->nmapped << v->st->chunk_shift;
  vi->connections = v->nsessions;
  pthread_mutex_unlock (&v->lock);
  for (struct snapshot *s = v->st->snaps; s; s = s->next)
    if (strcmp (s->vol_id, v->id) == 0)
      vi->snapshots++;
}

struct volume *
volume_new (struct vol_store *st)
{
  struct volume *v = calloc (1, sizeof *v);
  if (v == NULL)
    return NULL;
  if (stats_init (v) < 0) {
    free (v);
    return NULL;
  }
  v->st = st;
  atomic_init (&v->refs, 1);
  pthread_mutex_init (&v->lock, NULL);
  pthread_cond_init (&v->quiesce_cond, NULL);
  return v;
}

/* Drop a reference; the last one frees the volume's memory (its chunks
 * belong to its lineage, which the store collects). */
void
volume_put (struct volume *v)
{
  if (atomic_fetch_sub (&v->refs, 1) != 1)
    return;
  map_free (v);
  pthread_mutex_destroy (&v->lock);
  pthread_cond_destroy (&v->quiesce_cond);
  stats_free (v);
  free (v);
}

/* v is going away: unless it has sessions and force is not set, mark it
 * deleted (its I/O then fails with ESHUTDOWN) and kick every session.
 * Returns 0, or the number of sessions that refused it. */
unsigned
volume_retire (struct volume *v, bool force)
{
  pthread_mutex_lock (&v->lock);
  unsigned n = v->nsessions;
  if (n == 0 || force) {
    v->deleted = true;
    for (struct vol_session *s = v->sessions; s; s = s->next)
      s->kick (s);
    n = 0;
  }
  pthread_mutex_unlock (&v->lock);
  return n;
}

/* Caller holds st->lock. */
struct volume *
find_volume_unlocked (struct vol_store *st, const char *name_or_id)
{
  for (size_t i = 0; i < st->nvols; i++)
    if (strcmp (st->vols[i]->name, name_or_id) == 0 || strcmp (st->vols[i]->id, name_or_id) == 0)
      return st->vols[i];
  return NULL;
}

/* The same, for a volume the caller needs: NULL with "not found" in err.
 * Caller holds st->lock. */
struct volume *
find_volume_or_err (struct vol_store *st, const char *name_or_id, char *err, size_t errlen)
{
  struct volume *v = find_volume_unlocked (st, name_or_id);
  if (v == NULL)
    set_err (err, errlen, "volume \"%.80s\" not found", name_or_id);
  return v;
}

int
registry_add (struct vol_store *st, struct volume *v)
{
  if (st->nvols == st->capvols) {
    size_t cap = st->capvols ? st->capvols * 2 : 16;
    struct volume **n = realloc (st->vols, cap * sizeof *n);
    if (n == NULL)
      return -ENOMEM;
    st->vols = n;
    st->capvols = cap;
  }
  st->vols[st->nvols++] = v;
  return 0;
}

static void
registry_del (struct vol_store *st, struct volume *v)
{
  for (size_t i = 0; i < st->nvols; i++)
    if (st->vols[i] == v) {
      st->vols[i] = st->vols[--st->nvols];
      return;
    }
}

const char *
vol_type_invalid (const char *type)
{
  for (const char *const *t = vol_disk_types; *t; t++)
    if (strcmp (*t, type) == 0)
      return NULL;
  return "is unknown (standard, ssd or premium)";
}

int
vol_create (struct vol_store *st, const char *name, uint64_t size, const char *type,
            struct vol_info *out, char *err, size_t errlen)
{
  return vol_create_from (st, name, size, type, NULL, 0, out, err, errlen);
}

int
vol_stat (struct vol_store *st, const char *name_or_id, struct vol_info *out,
          char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  if (v)
    fill_info (v, out);
  pthread_mutex_unlock (&st->lock);
  return v ? 0 : -ENOENT;
}

int
vol_resize (struct vol_store *st, const char *name_or_id, uint64_t new_size,
            struct vol_info *out, char *err, size_t errlen)
{
  const char *why;
  int r = 0;
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  if (v == NULL)
    r = -ENOENT;
  else if ((why = vol_size_invalid (new_size)) != NULL) {
    set_err (err, errlen, "volume \"%s\": size %llu %s", v->name,
             (unsigned long long) new_size, why);
    r = -EINVAL;
  }
  else {
    pthread_mutex_lock (&v->lock);
    uint64_t old = v->size;
    if (new_size < old) {
      set_err (err, errlen, "volume \"%s\": new size %llu is smaller than the current %llu; "
               "volumes can only grow", v->name, (unsigned long long) new_size,
               (unsigned long long) old);
      r = -EINVAL;
    }
    else if ((r = map_grow (v, new_size)) < 0)
      set_err (err, errlen, "out of memory");
    else {
      v->size = new_size;
      if ((r = meta_put_volume (v, NULL)) < 0) {
        v->size = old;
        set_err (err, errlen, "volume \"%s\": could not record the new size", v->name);
      }
    }
    pthread_mutex_unlock (&v->lock);
    if (r == 0) {
      log_info ("resized volume %s to %llu bytes", v->name, (unsigned long long) new_size);
      if (out)
        fill_info (v, out);
    }
  }
  pthread_mutex_unlock (&st->lock);
  return r;
}

int
vol_delete (struct vol_store *st, const char *name_or_id, bool force, char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  if (v == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOENT;
  }
  /* messages before unlocking: v may go away once st->lock is released */
  if (v->nattach) {
    set_err (err, errlen, "volume \"%s\" is attached to instance %s (%s disk); detach it first",
             v->name, v->attach[0].instance, vol_role_name (v->attach[0].role));
    pthread_mutex_unlock (&st->lock);
    return -EBUSY;
  }
  unsigned n = volume_retire (v, force);
  if (n) {
    set_err (err, errlen, "volume \"%s\" is in use by %u NBD connection%s; disconnect the "
             "client%s or delete with force", v->name, n, n == 1 ? "" : "s", n == 1 ? "" : "s");
    pthread_mutex_unlock (&st->lock);
    return -EBUSY;
  }
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  char vkey[1 + VOL_ID_LEN];
  vkey[0] = 'V';
  memcpy (vkey + 1, v->id, VOL_ID_LEN);
  rocksdb_writebatch_delete (wb, vkey, sizeof vkey);
  pthread_mutex_lock (&v->lock);
  v->lin->live = NULL;
  v->lin = NULL;
  pthread_mutex_unlock (&v->lock);
  registry_del (st, v);
  /* the record and what only the volume held, in one batch; its snapshots stay */
  int r = store_gc (st, wb, err, errlen);
  rocksdb_writebatch_destroy (wb);
  pthread_mutex_unlock (&st->lock);
  log_info ("deleted volume %s (%s)%s", v->name, v->id, force ? " (forced)" : "");
  volume_put (v);         /* the registry's reference; sessions hold theirs */
  if (r < 0)
    log_error ("volume %s: freeing its space: %s (it is reclaimed at the next start)", name_or_id, err);
  return 0;
}

static int
cmp_info_name (const void *a, const void *b)
{
  return strcmp (((const struct vol_info *) a)->name, ((const struct vol_info *) b)->name);
}

int
vol_list (struct vol_store *st, struct vol_info **out, size_t *n)
{
  pthread_mutex_lock (&st->lock);
  struct vol_info *a = calloc (st->nvols ? st->nvols : 1, sizeof *a);
  if (a == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOMEM;
  }
  for (size_t i = 0; i < st->nvols; i++)
    fill_info (st->vols[i], &a[i]);
  *n = st->nvols;
  pthread_mutex_unlock (&st->lock);
  qsort (a, *n, sizeof *a, cmp_info_name);
  *out = a;
  return 0;
}

int
vol_stats_list (struct vol_store *st, struct vol_info_stats **out, size_t *n)
{
  pthread_mutex_lock (&st->lock);
  struct vol_info_stats *a = calloc (st->nvols ? st->nvols : 1, sizeof *a);
  if (a == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOMEM;
  }
  for (size_t i = 0; i < st->nvols; i++) {
    fill_info (st->vols[i], &a[i].info);
    stats_sum (st->vols[i], &a[i].stats);
  }
  *n = st->nvols;
  pthread_mutex_unlock (&st->lock);
  qsort (a, *n, sizeof *a, cmp_info_name);    /* info is the first member */
  *out = a;
  return 0;
}

static void
session_add (struct volume *v, struct vol_session *s)
{
  atomic_fetch_add (&v->refs, 1);
  pthread_mutex_lock (&v->lock);
  s->prev = NULL;
  s->next = v->sessions;
  if (v->sessions)
    v->sessions->prev = s;
  v->sessions = s;
  v->nsessions++;
  pthread_mutex_unlock (&v->lock);
}

struct volume *
vol_open (struct vol_store *st, const char *name, struct vol_session *s)
{
  pthread_mutex_lock (&st->lock);
  struct volume *v;
  if (strchr (name, '@'))
    v = snapshot_view_unlocked (st, name);    /* a read-only snapshot export */
  else {
    v = find_volume_unlocked (st, name);
    if (v && strcmp (v->name, name) != 0)
      v = NULL;                     /* exports are named by volume name only */
  }
  if (v)
    session_add (v, s);
  pthread_mutex_unlock (&st->lock);
  if (v == NULL)
    errno = ENOENT;
  return v;
}

void
vol_close (struct volume *v, struct vol_session *s)
{
  struct vol_store *st = v->st;
  pthread_mutex_lock (&st->lock);     /* a snapshot may let go of its view */
  pthread_mutex_lock (&v->lock);
  if (s->prev)
    s->prev->next = s->next;
  else
    v->sessions = s->next;
  if (s->next)
    s->next->prev = s->prev;
  v->nsessions--;
  bool last_view_session = v->snap && v->nsessions == 0;
  pthread_mutex_unlock (&v->lock);
  if (last_view_session) {
    if (v->snap->view == v)
      v->snap->view = NULL;
    volume_put (v);                   /* the snapshot's reference */
  }
  pthread_mutex_unlock (&st->lock);
  volume_put (v);
}

uint64_t
vol_size (struct volume *v)
{
  return atomic_load (&v->size);
}

uint32_t vol_dio_align (struct volume *v) { return v->st->dio_align; }
bool vol_read_only (struct volume *v) { return v->snap != NULL; }
uint32_t vol_chunk_size (struct volume *v) { return v->st->chunk_size; }

void
vol_store_pool_info (struct vol_store *st, struct vol_pool_info *pi)
{
  memset (pi, 0, sizeof *pi);
  store_gc_if_needed (st);          /* report settled figures */
  pthread_mutex_lock (&st->alloc_lock);
  uint64_t nfree = st->nfree + st->nlimbo;     /* limbo is free, just not yet reusable */
  pthread_mutex_unlock (&st->alloc_lock);
  pi->capacity = st->nchunks << st->chunk_shift;
  pi->free = nfree << st->chunk_shift;
  pi->allocated = pi->capacity - pi->free;
  pi->chunk_size = st->chunk_size;
  pthread_mutex_lock (&st->lock);
  pi->volumes = (unsigned) st->nvols;
  for (struct snapshot *s = st->snaps; s; s = s->next)
    pi->snapshots++;
  struct holders h;
  if (holders_compute (st, &h) == 0) {
    pi->shared = h.shared << st->chunk_shift;
    pi->leaked = h.leaked << st->chunk_shift;
    holders_free (&h);
  }
  pthread_mutex_unlock (&st->lock);
  snprintf (pi->dir, sizeof pi->dir, "%s", st->dir);
}

int
vol_extents (struct volume *v, uint64_t offset, uint64_t length, unsigned max_extents,
             vol_extent_fn fn, void *opaque)
{
  struct vol_store *st = v->st;
  uint64_t end = offset + length;
  unsigned n = 0;
  pthread_mutex_lock (&v->lock);
  if (end > v->size)
    end = v->size;
  while (offset < end && n < max_extents) {
    uint64_t chunk = offset >> st->chunk_shift;
    bool alloc = ME_PHYS1 (map_get (v, chunk)) != 0;
    uint64_t e = (chunk + 1) << st->chunk_shift;
    while (e < end && (ME_PHYS1 (map_get (v, e >> st->chunk_shift)) != 0) == alloc)
      e += st->chunk_size;
    if (e > end)
      e = end;
    n++;
    if (fn (opaque, offset, e - offset, alloc))
      break;
    offset = e;
  }
  pthread_mutex_unlock (&v->lock);
  return 0;
}
