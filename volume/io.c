/* volume/io.c — the data path: reads, writes, trim and write-zeroes on the
 * caller's io_uring, O_DIRECT on the pool file.
 *
 * A request is cut at chunk boundaries into pieces; each piece maps to one
 * pool chunk (allocated on first write) and becomes one SQE.  Every piece
 * pins its chunk until its SQE completes, so a chunk unmapped by a
 * concurrent trim or delete is not reused while I/O to it is in flight.
 *
 * Requests that are not aligned to the pool's O_DIRECT alignment go through
 * a bounce buffer covering the aligned range: reads copy out of it; writes
 * read the partial edge blocks first (read-modify-write), and an unaligned
 * write waits while another one overlapping the same blocks is in flight.
 *
 * A write, or a partial trim or zero, that touches a chunk a snapshot or a
 * clone's source still sees first copies the chunk (copy-on-write): the
 * copy goes to a new pool chunk, is recorded as the volume's own entry at
 * the current generation, and the request then runs again, now in place.
 * An aligned write that covers the whole chunk has nothing to copy: its own
 * data goes to the new chunk, and the run after it skips that chunk.
 * While a chunk is being copied (ME_BUSY), other writes to it wait.
 * Writes are counted in flight so that a snapshot can wait them out.
 */
#include "volume/internal.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define NO_CHUNK UINT32_MAX

enum phase { PH_START, PH_RMW_READ, PH_MAIN, PH_SYNC, PH_PARKED, PH_COW };

struct vol_sub {
  int kind;                 /* enum sub_kind: first member, see internal.h */
  struct vol_io *io;
  uint32_t phys;            /* pinned chunk, or NO_CHUNK */
  uint32_t len;             /* bytes the SQE must transfer */
  uint64_t foff;            /* offset in the pool file */
  uint64_t bpos;            /* offset in the data buffer */
  int fmode;                /* SUB_FALLOC, SUB_FREE: fallocate mode */
  uint32_t freed;           /* SUB_FREE: chunk to give back once punched;
                               SUB_COW_*: the new chunk being filled */
  uint64_t chunk;           /* SUB_COW_*: which chunk of the volume */
  void *cowbuf;             /* SUB_COW_*: the chunk's data on its way */
  size_t cowcap;            /* its size from vol_ioctx.buf_get, or 0 (the heap's) */
};

static inline uint64_t align_down (uint64_t x, uint64_t a) { return x & ~(a - 1); }
static inline uint64_t align_up (uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

/* pool SQEs of one context queued or in flight up to which a read is
 * submitted at once (sub_submit) */
#define READ_AT_ONCE 4

static struct io_uring_sqe *
get_sqe (struct io_uring *ring)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (ring);
  if (sqe == NULL) {
    io_uring_submit (ring);
    sqe = io_uring_get_sqe (ring);
  }
  return sqe;
}

static int
subs_reserve (struct vol_io *io, unsigned n)
{
  if (io->capsubs >= n)
    return 0;
  struct vol_sub *s = realloc (io->subs, n * sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  io->subs = s;
  io->capsubs = n;
  return 0;
}

static struct vol_sub *
sub_add (struct vol_io *io, int kind, uint32_t phys, uint64_t foff, uint32_t len, uint64_t bpos)
{
  struct vol_sub *s = &io->subs[io->nsubs++];
  *s = (struct vol_sub) { .kind = kind, .io = io, .phys = phys, .len = len,
                          .foff = foff, .bpos = bpos };
  return s;
}

static void
pin (struct vol_store *st, uint32_t phys)
{
  atomic_fetch_add (&st->pins[phys], 1);
}

static void
unpin (struct vol_store *st, uint32_t phys, struct vol_ioctx *ctx)
{
  uint32_t old = atomic_fetch_sub (&st->pins[phys], 1);
  if (old == (PIN_FREE_PENDING | 1))
    chunk_release (st, phys, ctx);
}

/* What a pool operation does, as fault injection names it. */
static enum vol_op
sub_op (const struct vol_io *io, const struct vol_sub *s)
{
  return s->kind == SUB_READ || s->kind == SUB_RMW_READ || s->kind == SUB_COW_READ ? VOL_OP_READ
         : s->kind == SUB_WRITE || s->kind == SUB_COW_WRITE ? VOL_OP_WRITE
         : io->op;
}

/* Fault injection: the next SQE waits ms before it starts (a timeout
 * hard-linked to it, finished by io_release_cqe).  Both go into the ring
 * together, or the timeout would be linked to whatever came next. */
static void
delay_next (struct vol_ioctx *ctx, unsigned ms)
{
  if (io_uring_sq_space_left (ctx->ring) < 2)
    io_uring_submit (ctx->ring);
  struct release_op *op = NULL;
  if (io_uring_sq_space_left (ctx->ring) < 2 || (op = calloc (1, sizeof *op)) == NULL) {
    log_error ("fault injection: no room to delay a pool operation; it goes at once");
    return;
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe (ctx->ring);
  op->kind = SUB_DELAY;
  op->ctx = ctx;
  op->ts.tv_sec = ms / 1000;
  op->ts.tv_nsec = (long long) (ms % 1000) * 1000000;
  io_uring_prep_timeout (sqe, &op->ts, 0, 0);
  sqe->flags |= IOSQE_IO_HARDLINK;
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) op | ctx->tag);
  ctx->background++;
}

/* Submit one SQE for a sub.  Returns 0 or -errno (no SQE available). */
static int
sub_submit (struct vol_io *io, struct vol_sub *s, void *base)
{
  struct vol_store *st = io->vol->st;
  struct vol_ioctx *ctx = io->ctx;
  if (__builtin_expect (atomic_load_explicit (&vol_faults_armed, memory_order_relaxed), 0)) {
    unsigned ms = fault_delay (io, sub_op (io, s));
    if (ms) {
      log_debug ("fault injection: a pool operation of volume %s waits %u ms", io->vol->name, ms);
      delay_next (ctx, ms);
    }
  }
  struct io_uring_sqe *sqe = get_sqe (ctx->ring);
  if (sqe == NULL)
    return -EBUSY;
  int fd = ctx->pool_fixed ? 0 : st->pool_fd;
  char *p = NULL;
  bool fixed = false;
  if (base) {                       /* a read or a write: is its buffer registered? */
    p = (char *) base + s->bpos;
    uintptr_t a = (uintptr_t) p, fb = (uintptr_t) ctx->fixed_base;
    fixed = ctx->fixed_len && a >= fb && a + s->len <= fb + ctx->fixed_len;
  }
  switch (s->kind) {
  case SUB_READ:
  case SUB_RMW_READ:
  case SUB_COW_READ:
    if (fixed)
      io_uring_prep_read_fixed (sqe, fd, p, s->len, s->foff, 0);
    else
      io_uring_prep_read (sqe, fd, p, s->len, s->foff);
    break;
  case SUB_WRITE:
  case SUB_COW_WRITE:
    if (fixed)
      io_uring_prep_write_fixed (sqe, fd, p, s->len, s->foff, 0);
    else
      io_uring_prep_write (sqe, fd, p, s->len, s->foff);
    break;
  case SUB_FALLOC:
  case SUB_FREE:
    io_uring_prep_fallocate (sqe, fd, s->fmode, s->foff, s->len);
    break;
  default:
    abort ();                       /* every kind submitted is listed above */
  }
  if (ctx->pool_fixed)
    sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) s | ctx->tag);
  io->pending++;
  /* A client's read goes to the kernel as soon as it is prepared while the
   * disk has little of this loop's work, and with the loop's batch once it
   * has enough.  A client's queue tends to move in rounds: its requests
   * arrive together, and submitted together they enter the kernel under one
   * block plug, so the first reaches the disk only once the last has been
   * prepared (large sequential ones merged into one disk request, finishing
   * together).  Submitted at once, the first of a round starts while the
   * rest are prepared (sixth pass: randread QD32 +5%, 70/30 QD16 +8..11%).
   * But each submit costs an io_uring_enter and a virtio notification, a
   * VM exit that took a third of the server's CPU at 4k QD32 on the machine
   * of the thirteenth pass.  With READ_AT_ONCE in flight the disk has work,
   * and waiting for the batch costs it nothing.  There, against every read
   * at once (5 rounds): one notification per 1.9 reads instead of one per
   * read; IOs per server CPU-second +6% at 4k QD32, +22% at 70/30 QD16,
   * +33% with 4 connections, IOPS +2..10% (docs/BENCHMARKS.md).  Writes
   * are always batched: a cap of 8 per enter lost in 5 of 5 rounds (sixth
   * pass). */
  if (ctx->inflight++ < READ_AT_ONCE && s->kind == SUB_READ)
    io_uring_submit (ctx->ring);
  return 0;
}

int
vol_ioctx_register (struct vol_ioctx *ctx, void *arena, size_t len)
{
  int fd = ctx->store->pool_fd;
  int r = io_uring_register_files (ctx->ring, &fd, 1);
  if (r < 0)
    return r;
  if (arena && len) {
    struct iovec iov = { arena, len };
    r = io_uring_register_buffers (ctx->ring, &iov, 1);
    if (r < 0) {
      io_uring_unregister_files (ctx->ring);
      return r;
    }
    ctx->fixed_base = arena;
    ctx->fixed_len = len;
  }
  ctx->pool_fixed = true;
  return 0;
}

/* Is a chunk map entry seen by something other than the live view (a
 * snapshot, or the source of a clone)?  Caller holds v->lock. */
static bool
frozen (struct volume *v, ment_t e)
{
  return ME_PHYS1 (e) && (ME_GEN (e) == ME_INHERITED || ME_GEN (e) <= lin_maxv (v->lin));
}

bool
vol_write_copies (struct volume *v, uint64_t offset, uint64_t length)
{
  if (v->snap || length == 0)
    return false;
  uint32_t shift = v->st->chunk_shift;
  bool copies = false;
  pthread_mutex_lock (&v->lock);
  for (uint64_t c = offset >> shift; c <= (offset + length - 1) >> shift && !copies; c++)
    copies = frozen (v, map_get (v, c) & ~ME_BUSY);
  pthread_mutex_unlock (&v->lock);
  return copies;
}

/* Map chunk for writing: allocate it on first write.  The entry must not be
 * frozen.  Caller holds v->lock.  Returns phys + 1, or -errno. */
static int64_t
map_for_write (struct volume *v, uint64_t chunk, struct vol_ioctx *ctx)
{
  struct vol_store *st = v->st;
  ment_t e = map_get (v, chunk);
  if (ME_PHYS1 (e))
    return ME_PHYS1 (e);
  if (v->deleted)
    return -ESHUTDOWN;
  uint32_t phys;
  int r = alloc_chunk (st, &phys, ctx);
  if (r < 0)
    return r;
  struct lineage *l = v->lin;
  log_debug ("volume %s: chunk %llu gets pool chunk %u at gen %u", v->name,
             (unsigned long long) chunk, phys, l->cur_gen);
  if ((r = meta_put_entry (st, NULL, l, chunk, l->cur_gen, phys)) < 0
      || (r = lin_hist_set (l, chunk, l->cur_gen, phys)) < 0
      || (r = map_set (v, chunk, ME_MAKE (phys + 1, l->cur_gen))) < 0) {
    lin_hist_drop (l, chunk, l->cur_gen);
    map_set (v, chunk, 0);
    chunk_release (st, phys, NULL);
    return r;
  }
  return phys + 1;
}

static int finish (struct vol_io *io);
static int io_start (struct vol_io *io);
static void cow_publish (struct vol_io *io);

static void
set_result (struct vol_io *io, int r)
{
  if (io->result == 0)
    io->result = r;
}

/* ---- read ------------------------------------------------------------------ */
static int
do_read (struct vol_io *io)
{
  struct volume *v = io->vol;
  struct vol_store *st = v->st;
  uint64_t a = st->dio_align;
  uint64_t lo = align_down (io->offset, a), hi = align_up (io->offset + io->length, a);
  void *target = io->buf;
  if (lo != io->offset || hi != io->offset + io->length || ((uintptr_t) io->buf & (a - 1))) {
    if (posix_memalign (&io->bounce, a, hi - lo) != 0)
      return -ENOMEM;
    target = io->bounce;
  }
  unsigned n = (unsigned) (((hi - 1) >> st->chunk_shift) - (lo >> st->chunk_shift) + 1);
  if (subs_reserve (io, n) < 0)
    return -ENOMEM;

  pthread_mutex_lock (&v->lock);
  if (v->deleted) {                 /* its chunks may be another volume's now */
    pthread_mutex_unlock (&v->lock);
    return -ESHUTDOWN;
  }
  for (uint64_t pos = lo; pos < hi;) {
    uint64_t chunk = pos >> st->chunk_shift;
    uint64_t cend = (chunk + 1) << st->chunk_shift;
    uint32_t len = (uint32_t) ((cend < hi ? cend : hi) - pos);
    uint32_t p = ME_PHYS1 (map_get (v, chunk));
    if (p) {                        /* holes are zeroed below */
      pin (st, p - 1);
      sub_add (io, SUB_READ, p - 1, ((uint64_t) (p - 1) << st->chunk_shift) + (pos & (st->chunk_size - 1)),
               len, pos - lo);
    }
    pos += len;
  }
  pthread_mutex_unlock (&v->lock);
  /* no pool chunk at all: with VOL_F_HOLE_OK the caller says so rather
   * than send zeros */
  if (io->nsubs == 0 && (io->flags & VOL_F_HOLE_OK)) {
    io->hole = true;
    return 0;
  }
  /* the holes around the pieces read from the pool are zeros */
  uint64_t at = 0;
  for (unsigned i = 0; i <= io->nsubs; i++) {
    uint64_t next = i < io->nsubs ? io->subs[i].bpos : hi - lo;
    if (next > at)
      memset ((char *) target + at, 0, next - at);
    if (i < io->nsubs)
      at = io->subs[i].bpos + io->subs[i].len;
  }
  io->phase = PH_MAIN;
  for (unsigned i = 0; i < io->nsubs; i++)
    if (sub_submit (io, &io->subs[i], target) < 0) {
      set_result (io, -EBUSY);
      unpin (st, io->subs[i].phys, io->ctx);
      io->subs[i].phys = NO_CHUNK;
    }
  return 0;
}

/* ---- waiting ----------------------------------------------------------------- */
static bool
excl_overlaps (struct vol_io *list, uint64_t lo, uint64_t hi)
{
  for (; list; list = list->next)
    if (list->rmw_lo < hi && lo < list->rmw_hi)
      return true;
  return false;
}

static void
post_all (struct vol_io *w)
{
  while (w) {                       /* they retry on their own threads */
    struct vol_io *n = w->next;
    w->next = NULL;
    w->ctx->post (w->ctx, w);
    w = n;
  }
}

/* Caller holds v->lock: io waits on list and runs again when woken.  The
 * list is kept in arrival order, and woken in that order, so that waiting
 * does not reorder a client's writes. */
static int
park (struct vol_io *io, struct vol_io **list)
{
  io->phase = PH_PARKED;
  io->ctx->away++;
  io->next = NULL;
  while (*list)
    list = &(*list)->next;
  *list = io;
  return 0;
}

static void
excl_leave (struct vol_io *io)
{
  struct volume *v = io->vol;
  pthread_mutex_lock (&v->lock);
  for (struct vol_io **pp = &v->excl_active; *pp; pp = &(*pp)->next)
    if (*pp == io) {
      *pp = io->next;
      break;
    }
  struct vol_io *w = v->excl_waiting;
  v->excl_waiting = NULL;
  pthread_mutex_unlock (&v->lock);
  io->next = NULL;
  io->rmw_hi = 0;
  post_all (w);
}

/* The regions that [offset, offset + length) touches: the first, and how
 * many (at most WR_SLOTS: then every slot). */
static unsigned
wr_span (uint64_t offset, uint64_t length, uint64_t *first)
{
  *first = offset >> WR_SHIFT;
  uint64_t n = ((offset + (length ? length : 1) - 1) >> WR_SHIFT) - *first + 1;
  return n < WR_SLOTS ? (unsigned) n : WR_SLOTS;
}

static struct wr_region *
wr_slot (struct volume *v, uint64_t region)
{
  return &v->wr[region % WR_SLOTS];
}

/* A write of v to [offset, offset + length) starts: it is in flight until
 * write_done with the same range.  In each region in flight first, then
 * started, so that vol_write_mark, which reads them the other way round,
 * sees the write either in flight or started. */
static void
write_begin (struct volume *v, uint64_t offset, uint64_t length)
{
  uint64_t first;
  unsigned n = wr_span (offset, length, &first);
  atomic_fetch_add (&v->writes_inflight, 1);
  for (unsigned i = 0; i < n; i++) {
    atomic_fetch_add (&wr_slot (v, first + i)->inflight, 1);
    atomic_fetch_add (&wr_slot (v, first + i)->started, 1);
  }
}

/* The writes started in the regions of a range, and whether one is in
 * flight. */
static uint64_t
wr_started (struct volume *v, uint64_t offset, uint64_t length, bool *busy)
{
  uint64_t first, started = 0;
  unsigned n = wr_span (offset, length, &first);
  for (unsigned i = 0; i < n; i++)
    started += atomic_load (&wr_slot (v, first + i)->started);
  for (unsigned i = 0; busy && i < n; i++)
    *busy |= atomic_load (&wr_slot (v, first + i)->inflight) != 0;
  return started;
}

uint64_t
vol_write_mark (struct volume *v, uint64_t offset, uint32_t length)
{
  bool busy = false;
  uint64_t started = wr_started (v, offset, length, &busy);
  return busy ? 0 : started + 1;
}

bool
vol_written_since (struct volume *v, uint64_t offset, uint32_t length, uint64_t mark)
{
  return mark == 0 || wr_started (v, offset, length, NULL) + 1 != mark;
}

/* A write of v is done (or parked): a snapshot waiting for it may go on. */
static void
write_done (struct volume *v, uint64_t offset, uint64_t length)
{
  uint64_t first;
  unsigned n = wr_span (offset, length, &first);
  for (unsigned i = 0; i < n; i++)
    atomic_fetch_sub (&wr_slot (v, first + i)->inflight, 1);
  if (atomic_fetch_sub (&v->writes_inflight, 1) == 1 && atomic_load (&v->quiescing)) {
    pthread_mutex_lock (&v->lock);
    pthread_cond_broadcast (&v->quiesce_cond);
    pthread_mutex_unlock (&v->lock);
  }
}

/* ---- copy-on-write ----------------------------------------------------------- */

/* Does aligned write io cover chunk c whole, within the first 64 chunks it
 * touches (io->cow_whole)?  Then copying c would be wasted: the write
 * replaces all of it. */
static bool
writes_whole (const struct vol_io *io, uint64_t c)
{
  const struct vol_store *st = io->vol->st;
  uint64_t a = st->dio_align, cs = c << st->chunk_shift;
  return io->op == VOL_OP_WRITE && ((io->offset | io->length | (uintptr_t) io->buf) & (a - 1)) == 0
         && io->offset <= cs && io->offset + io->length >= cs + st->chunk_size
         && c - (io->offset >> st->chunk_shift) < 64;
}

/* A buffer for a chunk's copy: the context's (see vol_ioctx.buf_get),
 * else the heap.  On io->ctx's thread, as cow_buf_put. */
static void *
cow_buf_get (struct vol_io *io, size_t *cap)
{
  struct vol_ioctx *ctx = io->ctx;
  struct vol_store *st = io->vol->st;
  void *b;
  if (ctx->buf_get) {
    b = ctx->buf_get (ctx, st->chunk_size, cap);
    if (b && ((uintptr_t) b & (st->dio_align - 1)) == 0)
      return b;
    if (b)
      ctx->buf_put (ctx, b, *cap);
  }
  *cap = 0;                         /* the heap's */
  return posix_memalign (&b, st->dio_align, st->chunk_size) == 0 ? b : NULL;
}

static void
cow_buf_put (struct vol_io *io, void *buf, size_t cap)
{
  if (cap)
    io->ctx->buf_put (io->ctx, buf, cap);
  else
    free (buf);
}

/* Copy the chunks of io's range that are frozen (cow[] lists them) to new
 * pool chunks, or fill them with io's own data where it covers them whole.
 * Caller holds v->lock; releases it.  Returns 0 (the io runs again when
 * the copies are recorded) or -errno. */
static int
cow_start (struct vol_io *io, const uint64_t *cow, unsigned ncow)
{
  struct volume *v = io->vol;
  struct vol_store *st = v->st;
  int r = subs_reserve (io, ncow);
  for (unsigned i = 0; i < ncow && r == 0; i++) {
    ment_t e = map_get (v, cow[i]);
    uint32_t phys;
    void *buf = NULL;
    if ((r = alloc_chunk (st, &phys, io->ctx)) < 0)
      break;
    if (writes_whole (io, cow[i])) {
      /* the write's own bytes for this chunk go to the new one */
      uint64_t cs = cow[i] << st->chunk_shift;
      map_set (v, cow[i], e | ME_BUSY);
      struct vol_sub *s = sub_add (io, SUB_COW_WRITE, NO_CHUNK, (uint64_t) phys << st->chunk_shift,
                                   st->chunk_size, cs - io->offset);
      s->freed = phys;
      s->chunk = cow[i];
      s->cowbuf = NULL;
      s->cowcap = 0;
      io->cow_whole |= 1ULL << (cow[i] - (io->offset >> st->chunk_shift));
      continue;
    }
    size_t cap;
    if ((buf = cow_buf_get (io, &cap)) == NULL) {
      chunk_release (st, phys, NULL);
      r = -ENOMEM;
      break;
    }
    pin (st, ME_PHYS1 (e) - 1);
    map_set (v, cow[i], e | ME_BUSY);
    struct vol_sub *s = sub_add (io, SUB_COW_READ, ME_PHYS1 (e) - 1,
                                 (uint64_t) (ME_PHYS1 (e) - 1) << st->chunk_shift, st->chunk_size, 0);
    s->freed = phys;
    s->chunk = cow[i];
    s->cowbuf = buf;
    s->cowcap = cap;
  }
  if (r < 0) {                      /* undo what was set up */
    for (unsigned i = 0; i < io->nsubs; i++) {
      struct vol_sub *s = &io->subs[i];
      map_set (v, s->chunk, map_get (v, s->chunk) & ~ME_BUSY);
      chunk_release (st, s->freed, NULL);
      cow_buf_put (io, s->cowbuf, s->cowcap);
    }
    struct vol_io *w = v->excl_waiting;
    v->excl_waiting = NULL;
    pthread_mutex_unlock (&v->lock);
    for (unsigned i = 0; i < io->nsubs; i++)
      if (io->subs[i].phys != NO_CHUNK)
        unpin (st, io->subs[i].phys, io->ctx);
    io->nsubs = 0;
    io->cow_whole = 0;
    post_all (w);
    return r;
  }
  write_begin (v, io->offset, io->length);
  pthread_mutex_unlock (&v->lock);
  io->phase = PH_COW;
  for (unsigned i = 0; i < io->nsubs; i++) {
    struct vol_sub *s = &io->subs[i];
    if (sub_submit (io, s, s->cowbuf ? s->cowbuf : io->buf) < 0)
      set_result (io, -EBUSY);
  }
  if (io->pending == 0) {           /* none reached the ring: no completion will undo them */
    cow_publish (io);
    return io->result;
  }
  return 0;
}

/* Every copy is written (or failed): record them, or undo them. */
static void
cow_publish (struct vol_io *io)
{
  struct volume *v = io->vol;
  struct vol_store *st = v->st;
  pthread_mutex_lock (&v->lock);
  if (v->deleted)
    set_result (io, -ESHUTDOWN);
  /* The history in memory first, then the store, so that either both
   * record every copy or neither records any: a copy the store recorded
   * must never be given back to the pool. */
  uint32_t gen = v->lin->cur_gen;
  unsigned set = 0;
  bool stored = false;              /* the store may hold the copies */
  if (io->result == 0) {
    while (set < io->nsubs && lin_hist_set (v->lin, io->subs[set].chunk, gen, io->subs[set].freed) == 0)
      set++;
    if (set < io->nsubs)
      set_result (io, -ENOMEM);
  }
  if (io->result == 0) {
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
    for (unsigned i = 0; i < io->nsubs; i++)
      meta_put_entry (st, wb, v->lin, io->subs[i].chunk, gen, io->subs[i].freed);
    stored = true;                  /* even if it says it failed */
    set_result (io, meta_write (st, wb, NULL, 0));
    rocksdb_writebatch_destroy (wb);
  }
  if (io->result < 0)
    for (unsigned i = 0; i < set; i++)
      lin_hist_drop (v->lin, io->subs[i].chunk, gen);
  for (unsigned i = 0; i < io->nsubs; i++) {
    struct vol_sub *s = &io->subs[i];
    ment_t e = map_get (v, s->chunk) & ~ME_BUSY;
    if (io->result == 0) {
      log_debug ("volume %s: chunk %llu copied from pool chunk %u (gen %u) to %u at gen %u",
                 v->name, (unsigned long long) s->chunk, ME_PHYS1 (e) - 1, ME_GEN (e), s->freed, gen);
      e = ME_MAKE (s->freed + 1, gen);
    }
    map_set (v, s->chunk, e);
  }
  struct vol_io *w = v->excl_waiting;
  v->excl_waiting = NULL;
  pthread_mutex_unlock (&v->lock);
  for (unsigned i = 0; i < io->nsubs; i++) {
    struct vol_sub *s = &io->subs[i];
    if (s->phys != NO_CHUNK)
      unpin (st, s->phys, io->ctx);
    /* never published: back to the pool, unless the store may have
     * recorded it (a failed write to it); then it stays allocated until
     * the next start rebuilds the pool from the store */
    if (io->result < 0 && !stored && ME_PHYS1 (map_get (v, s->chunk)) != s->freed + 1)
      chunk_release (st, s->freed, NULL);
    cow_buf_put (io, s->cowbuf, s->cowcap);
  }
  io->nsubs = 0;
  /* the copied entry may now be seen by nobody (a clone's source that no
   * snapshot keeps): the store collects it soon */
  atomic_store (&st->gc_needed, true);
  write_done (v, io->offset, io->length);
  post_all (w);
}

/* Every copy is written: record them (or undo), then run io again.  A
 * snapshot may come in between and keep chunks a whole-chunk copy filled
 * with this write's data, and not the rest: the write is not acknowledged
 * yet, and a crash could leave the same. */
static void
cow_done (struct vol_io *io)
{
  cow_publish (io);
  if (io->result < 0 || io_start (io) == 1)   /* keeps cow_whole */
    io->done (io);
}

/* ---- write ----------------------------------------------------------------- */

/* A WRITE_ZEROES with NO_HOLE: its range must stay allocated. */
static inline bool
keeps_blocks (const struct vol_io *io)
{
  return io->op == VOL_OP_ZERO && (io->flags & VOL_F_NO_HOLE);
}

/* Under v->lock: may io (touching chunks c0..c1) go on?  Returns 1 if so;
 * 0 if it was parked or went to copy-on-write (done later); -errno. */
static int
write_gate (struct vol_io *io, uint64_t c0, uint64_t c1, bool whole_ok_zero)
{
  struct volume *v = io->vol;
  struct vol_store *st = v->st;
  if (v->snap) {
    pthread_mutex_unlock (&v->lock);
    return -EPERM;
  }
  if (v->deleted) {
    pthread_mutex_unlock (&v->lock);
    return -ESHUTDOWN;
  }
  if (atomic_load (&v->quiescing)) {
    park (io, &v->quiesce_waiting);
    pthread_mutex_unlock (&v->lock);
    return 0;
  }
  uint64_t cow[64];
  unsigned ncow = 0;
  for (uint64_t c = c0; c <= c1; c++) {
    ment_t e = map_get (v, c);
    if (e & ME_BUSY) {
      park (io, &v->excl_waiting);
      pthread_mutex_unlock (&v->lock);
      return 0;
    }
    if (!frozen (v, e))
      continue;
    if (whole_ok_zero) {
      /* trim / zero of a whole chunk needs no copy: only its edges may */
      uint64_t cs = c << st->chunk_shift, ce = cs + st->chunk_size;
      bool whole = io->offset <= cs && io->offset + io->length >= ce;
      if (whole && !keeps_blocks (io))
        continue;
    }
    if (ncow < 64)
      cow[ncow++] = c;
  }
  if (ncow) {
    int r = cow_start (io, cow, ncow);     /* releases v->lock */
    return r < 0 ? r : 0;
  }
  return 1;
}

static int
do_write (struct vol_io *io)
{
  struct volume *v = io->vol;
  struct vol_store *st = v->st;
  uint64_t a = st->dio_align;
  uint64_t end = io->offset + io->length;
  uint64_t lo = align_down (io->offset, a), hi = align_up (end, a);
  bool rmw = lo != io->offset || hi != end || ((uintptr_t) io->buf & (a - 1));
  unsigned n = (unsigned) (((hi - 1) >> st->chunk_shift) - (lo >> st->chunk_shift) + 1);
  if (subs_reserve (io, n + 2) < 0)
    return -ENOMEM;
  if (rmw && io->bounce == NULL && posix_memalign (&io->bounce, a, hi - lo) != 0)
    return -ENOMEM;

  pthread_mutex_lock (&v->lock);
  int g = write_gate (io, lo >> st->chunk_shift, (hi - 1) >> st->chunk_shift, false);
  if (g <= 0)
    return g;
  if (rmw) {
    if (excl_overlaps (v->excl_active, lo, hi)) {
      park (io, &v->excl_waiting);
      pthread_mutex_unlock (&v->lock);
      return 0;
    }
    io->rmw_lo = lo;
    io->rmw_hi = hi;
    io->next = v->excl_active;
    v->excl_active = io;
  }
  write_begin (v, io->offset, io->length);
  io->counted = true;
  int r = 0;
  for (uint64_t pos = lo; pos < hi;) {
    uint64_t chunk = pos >> st->chunk_shift;
    uint64_t cend = (chunk + 1) << st->chunk_shift;
    uint32_t len = (uint32_t) ((cend < hi ? cend : hi) - pos);
    uint64_t rel = chunk - (lo >> st->chunk_shift);
    if (rel < 64 && (io->cow_whole >> rel & 1)) {
      pos += len;                   /* a copy-on-write wrote it already */
      continue;
    }
    int64_t p = map_for_write (v, chunk, io->ctx);
    if (p < 0) {
      r = (int) p;
      break;
    }
    pin (st, (uint32_t) p - 1);
    sub_add (io, SUB_WRITE, (uint32_t) p - 1,
             ((uint64_t) (p - 1) << st->chunk_shift) + (pos & (st->chunk_size - 1)), len,
             pos - lo);
    pos += len;
  }
  pthread_mutex_unlock (&v->lock);
  if (r < 0) {
    set_result (io, r);
    return finish (io);             /* unpins what was pinned */
  }

  unsigned nwrites = io->nsubs;
  if (rmw) {
    /* Read the partial edge blocks into the bounce buffer. */
    uint64_t edges[2] = { io->offset != lo ? lo : UINT64_MAX, end != hi ? hi - a : UINT64_MAX };
    if (edges[1] == edges[0])
      edges[1] = UINT64_MAX;        /* one block holds both edges */
    memset (io->bounce, 0, hi - lo);
    for (int e = 0; e < 2; e++) {
      if (edges[e] == UINT64_MAX)
        continue;
      for (unsigned i = 0; i < nwrites; i++) {
        struct vol_sub *w = &io->subs[i];
        uint64_t wpos = lo + w->bpos;
        if (edges[e] >= wpos && edges[e] < wpos + w->len) {
          sub_add (io, SUB_RMW_READ, NO_CHUNK, w->foff + (edges[e] - wpos), (uint32_t) a,
                   edges[e] - lo);
          break;
        }
      }
    }
    if (io->nsubs > nwrites) {
      io->phase = PH_RMW_READ;
      for (unsigned i = nwrites; i < io->nsubs; i++)
        if (sub_submit (io, &io->subs[i], io->bounce) < 0)
          set_result (io, -EBUSY);
      if (io->pending)
        return 0;
      return finish (io);
    }
    memcpy ((char *) io->bounce + (io->offset - lo), io->buf, io->length);
  }
  io->phase = PH_MAIN;
  for (unsigned i = 0; i < nwrites; i++)
    if (sub_submit (io, &io->subs[i], rmw ? io->bounce : io->buf) < 0)
      set_result (io, -EBUSY);
  if (io->pending)
    return 0;
  return finish (io);
}

/* Phase 2 of a read-modify-write: merge the new bytes and write. */
static void
rmw_write (struct vol_io *io)
{
  uint64_t lo = io->rmw_lo;
  memcpy ((char *) io->bounce + (io->offset - lo), io->buf, io->length);
  io->phase = PH_MAIN;
  for (unsigned i = 0; i < io->nsubs; i++)
    if (io->subs[i].kind == SUB_WRITE && sub_submit (io, &io->subs[i], io->bounce) < 0)
      set_result (io, -EBUSY);
}

/* ---- trim and write-zeroes --------------------------------------------------- */

/* Whole chunk hole-punched out of the live view.  Caller holds v->lock.
 * Returns the pool chunk the volume gave up (phys + 1) or 0, or -errno. */
static int64_t
unmap_chunk (struct volume *v, uint64_t chunk, ment_t e)
{
  struct vol_store *st = v->st;
  struct lineage *l = v->lin;
  uint32_t cur = l->cur_gen;
  int r;
  if (frozen (v, e)) {
    /* someone else sees the data: the live view gets a tombstone */
    if ((r = meta_put_entry (st, NULL, l, chunk, cur, TOMB)) < 0
        || (r = lin_hist_set (l, chunk, cur, TOMB)) < 0)
      return r;
    map_set (v, chunk, 0);
    atomic_store (&st->gc_needed, true);
    return 0;
  }
  /* the volume's own data: the entry goes, and the chunk back to the pool;
   * a tombstone stays if older data (a snapshot's, a base's) lies beneath */
  struct hist *h = lin_hist (l, chunk);
  bool beneath = l->base || (h && h->n > 1);
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  if (ME_GEN (e) != cur || !beneath)
    meta_put_entry (st, wb, l, chunk, ME_GEN (e), NO_ENTRY);
  if (beneath)
    meta_put_entry (st, wb, l, chunk, cur, TOMB);
  r = meta_write (st, wb, NULL, 0);
  rocksdb_writebatch_destroy (wb);
  if (r < 0)
    return r;
  lin_hist_drop (l, chunk, ME_GEN (e));
  if (beneath)
    lin_hist_set (l, chunk, cur, TOMB);
  map_set (v, chunk, 0);
  return ME_PHYS1 (e);
}

static int
do_zero (struct vol_io *io)
{
  struct volume *v = io->vol;
  struct vol_store *st = v->st;
  bool keep = keeps_blocks (io);
  uint64_t end = io->offset + io->length;
  unsigned n = (unsigned) (((end - 1) >> st->chunk_shift) - (io->offset >> st->chunk_shift) + 1);
  if (subs_reserve (io, n) < 0)
    return -ENOMEM;
  pthread_mutex_lock (&v->lock);
  int g = write_gate (io, io->offset >> st->chunk_shift, (end - 1) >> st->chunk_shift, true);
  if (g <= 0)
    return g;
  write_begin (v, io->offset, io->length);
  io->counted = true;
  int r = 0;
  for (uint64_t pos = io->offset; pos < end && r == 0;) {
    uint64_t chunk = pos >> st->chunk_shift;
    uint64_t cend = (chunk + 1) << st->chunk_shift;
    uint32_t len = (uint32_t) ((cend < end ? cend : end) - pos);
    uint32_t coff = (uint32_t) (pos & (st->chunk_size - 1));
    ment_t e = map_get (v, chunk);
    uint32_t p = ME_PHYS1 (e);
    pos += len;
    if (!keep && p == 0)
      continue;                     /* a hole already reads as zeros */
    if (!keep && len == st->chunk_size) {
      /* Unmap the whole chunk: it goes back to the pool.  If no I/O has it
       * pinned (the usual case), this request punches it and frees it
       * before it completes, so the space is usable as soon as the client
       * has the reply; otherwise the last pin does that. */
      int64_t freed = unmap_chunk (v, chunk, e);
      if (freed < 0) {
        r = (int) freed;
        break;
      }
      if (freed == 0)
        continue;
      uint32_t fp = (uint32_t) freed - 1;
      if (chunk_unmap_claim (st, fp)) {
        struct vol_sub *s = sub_add (io, SUB_FREE, NO_CHUNK, (uint64_t) fp << st->chunk_shift,
                                     st->chunk_size, 0);
        s->fmode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        s->freed = fp;
      }
      continue;
    }
    int mode;
    if (p == 0) {
      int64_t q = map_for_write (v, chunk, io->ctx);
      if (q < 0) {
        r = (int) q;
        break;
      }
      p = (uint32_t) q;
      mode = FALLOC_FL_KEEP_SIZE;   /* reserve space; a fresh chunk reads as zeros */
    }
    else if (!atomic_load (&st->zero_range_off))
      /* Part of a chunk in use keeps its blocks, a trim's too: the pool
       * holds the blocks of every chunk in use, so a later write there
       * cannot fail for want of space and is not a write into a hole
       * (which the filesystem allocates holding the file's lock, off
       * io_uring's non-blocking path). */
      mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    else
      /* The filesystem cannot zero a range (tmpfs): punch, and for
       * NO_HOLE allocate again once punched (vol_io_cqe). */
      mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    pin (st, p - 1);
    struct vol_sub *s = sub_add (io, SUB_FALLOC, p - 1,
                                 ((uint64_t) (p - 1) << st->chunk_shift) + coff, len, 0);
    s->fmode = mode;
  }
  pthread_mutex_unlock (&v->lock);
  if (r < 0)
    set_result (io, r);
  io->phase = PH_MAIN;
  for (unsigned i = 0; i < io->nsubs; i++)
    if (sub_submit (io, &io->subs[i], NULL) < 0)
      set_result (io, -EBUSY);
  if (io->pending)
    return 0;
  return finish (io);
}

/* ---- completion ------------------------------------------------------------ */

/* All SQEs of io are done: release pins and buffers, then sync or complete.
 * Does not call io->done; callers decide. */
static void
finish_io (struct vol_io *io)
{
  struct vol_store *st = io->vol->st;
  for (unsigned i = 0; i < io->nsubs; i++)
    if (io->subs[i].phys != NO_CHUNK && io->subs[i].kind != SUB_RMW_READ)
      unpin (st, io->subs[i].phys, io->ctx);
  io->nsubs = 0;
  if (io->op == VOL_OP_READ && io->bounce && io->result == 0 && !io->hole) {
    uint64_t lo = align_down (io->offset, st->dio_align);
    memcpy (io->buf, (char *) io->bounce + (io->offset - lo), io->length);
  }
  if (io->op == VOL_OP_WRITE && io->rmw_hi)
    excl_leave (io);
  if (io->counted) {
    io->counted = false;
    write_done (io->vol, io->offset, io->length);
  }
  free (io->bounce);
  io->bounce = NULL;
  if (io->result == -EOPNOTSUPP)
    io->result = -ENOTSUP;
  bool fua = (io->flags & VOL_F_FUA) && io->op != VOL_OP_READ;
  if (io->result == 0 && fua) {
    io->phase = PH_SYNC;
    sync_enqueue (st, io);
  }
}

/* Returns 1 if io is complete, 0 if it went on to the sync thread. */
static int
finish (struct vol_io *io)
{
  finish_io (io);
  return io->phase == PH_SYNC ? 0 : 1;
}

static const char *
kind_name (int kind)
{
  switch (kind) {
  case SUB_FALLOC: return "fallocate";
  case SUB_WRITE: case SUB_COW_WRITE: return "write";
  default: return "read";
  }
}

/* Submit s again, as its next step, from its own completion.  True if it
 * went: its new SQE counts in io->pending instead of the one that just
 * completed.  False: io fails with -EBUSY, and the caller counts the
 * completed SQE off as usual. */
static bool
sub_resubmit (struct vol_io *io, struct vol_sub *s, void *base)
{
  if (sub_submit (io, s, base) == 0) {
    io->pending--;
    return true;
  }
  set_result (io, -EBUSY);
  return false;
}

void
vol_io_cqe (struct vol_ioctx *ctx, struct io_uring_cqe *cqe)
{
  struct vol_sub *s = (struct vol_sub *) (uintptr_t) (cqe->user_data & ~VOL_UD_TAG_MASK);
  if (s->kind == SUB_RELEASE || s->kind == SUB_AHEAD || s->kind == SUB_DELAY) {
    io_release_cqe (ctx->store, cqe);
    return;
  }
  ctx->inflight--;
  struct vol_io *io = s->io;
  if (__builtin_expect (atomic_load_explicit (&vol_faults_armed, memory_order_relaxed), 0))
    cqe->res = fault_apply (io, sub_op (io, s), cqe->res);
  if (s->kind == SUB_FREE)
    chunk_punched (io->vol->st, s->freed, cqe->res);
  else if (cqe->res < 0 && s->kind == SUB_FALLOC && (s->fmode & FALLOC_FL_ZERO_RANGE)
           && (cqe->res == -EOPNOTSUPP || !keeps_blocks (io))) {
    /* Zeroing part of a chunk failed: punch it instead.  For good where
     * the filesystem cannot zero a range; for a trim, also this once where
     * zeroing needed space (ENOSPC on a full filesystem).  A zero that
     * keeps its blocks allocates them again once punched (below). */
    struct vol_store *st = io->vol->st;
    if (cqe->res == -EOPNOTSUPP && !atomic_exchange (&st->zero_range_off, true))
      log_info ("%s/pool.dat: the filesystem cannot zero a range; zeroing part of a chunk "
                "punches a hole in it (and allocates it again for NO_HOLE)", st->dir);
    s->fmode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    if (sub_resubmit (io, s, NULL))
      return;
  }
  else if (cqe->res >= 0 && s->kind == SUB_FALLOC && (s->fmode & FALLOC_FL_PUNCH_HOLE)
           && keeps_blocks (io)) {
    /* NO_HOLE zeroed by punching: allocate the range again.  A crash in
     * between leaves a hole, which reads as zeros all the same but holds
     * no blocks until written (on a filesystem that keeps the pool across
     * a restart and cannot zero a range: NFS, ext4 without extents). */
    s->fmode = FALLOC_FL_KEEP_SIZE;
    if (sub_resubmit (io, s, NULL))
      return;
  }
  else if (cqe->res < 0) {
    log_error_ratelimited ("volume %s: pool %s failed at pool offset %llu: %s", io->vol->name,
                           kind_name (s->kind), (unsigned long long) s->foff, strerror (-cqe->res));
    set_result (io, cqe->res);
  }
  else if (s->kind != SUB_FALLOC && (uint32_t) cqe->res != s->len)
    set_result (io, -EIO);        /* short transfer inside the pool: never expected */
  if (s->kind == SUB_COW_READ && io->result == 0) {
    /* the old chunk is read: write it to the new one */
    s->kind = SUB_COW_WRITE;
    s->foff = (uint64_t) s->freed << io->vol->st->chunk_shift;
    if (sub_resubmit (io, s, s->cowbuf))
      return;
  }
  if (--io->pending > 0)
    return;
  if (io->phase == PH_COW) {
    cow_done (io);
    return;
  }
  if (io->phase == PH_RMW_READ && io->result == 0) {
    rmw_write (io);
    if (io->pending)
      return;
  }
  if (finish (io))
    io->done (io);
}

static int
io_start (struct vol_io *io)
{
  io->result = 0;
  io->hole = false;
  io->pending = 0;
  io->nsubs = 0;
  io->phase = PH_START;
  io->rmw_hi = 0;
  io->counted = false;
  io->next = NULL;
  if (io->op != VOL_OP_FLUSH) {
    uint64_t size = vol_size (io->vol);
    if (io->offset > size || io->length > size - io->offset) {
      io->result = io->op == VOL_OP_WRITE || io->op == VOL_OP_ZERO ? -ENOSPC : -EINVAL;
      return 1;
    }
  }
  int r;
  switch (io->op) {
  case VOL_OP_FLUSH:
    io->phase = PH_SYNC;
    sync_enqueue (io->vol->st, io);
    return 0;
  case VOL_OP_READ:
    if (io->length == 0)
      return 1;
    r = do_read (io);
    if (r == 0 && io->pending == 0)
      return finish (io);
    break;
  case VOL_OP_WRITE:
    if (io->length == 0)
      return 1;
    r = do_write (io);
    break;
  case VOL_OP_TRIM:
  case VOL_OP_ZERO:
    if (io->length == 0)
      return 1;
    r = do_zero (io);
    break;
  default:
    r = -EINVAL;
  }
  if (r < 0) {
    io->result = r;
    free (io->bounce);
    io->bounce = NULL;
    return 1;
  }
  return r;
}

int
vol_io_submit (struct vol_io *io)
{
  io->cow_whole = 0;
  return io_start (io);
}

void
vol_io_resume (struct vol_io *io)
{
  io->ctx->away--;
  if (io->phase == PH_PARKED) {
    if (vol_io_submit (io) == 1)
      io->done (io);
    return;
  }
  io->done (io);              /* back from the sync thread */
}

void
vol_io_release (struct vol_io *io)
{
  free (io->subs);
  io->subs = NULL;
  io->capsubs = 0;
  free (io->bounce);
  io->bounce = NULL;
}
