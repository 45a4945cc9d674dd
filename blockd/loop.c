/* blockd/loop.c — the event loops: one thread and one io_uring each.
 *
 * Loop 0 also accepts connections and hands them out round-robin.  Work
 * from other threads (a new connection, a volume request back from the sync
 * thread) arrives in a loop's inbox and an eventfd wakes it.  Every CQE is
 * dispatched on the tag in the low bits of its user_data; replies produced
 * while a batch of CQEs is processed go out together afterwards, one
 * sendmsg per connection.
 *
 * For poll_us after a data-path completion a loop polls its completion
 * queue instead of sleeping (poll_events): the next event (a disk read
 * done, the client's next request) usually follows within tens of
 * microseconds, and on a VM a sleep costs more than that — the waker pays
 * an IPI exit and the sleeper a halt exit.  An idle loop sleeps.  With
 * many small requests of one connection in flight a loop does the
 * opposite: its wait asks for a batch of completions (batch_wait), so that
 * fewer wake-ups and disk notifications serve more requests.
 */
#include "blockd/internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

struct vol_store *blk_store;
struct blk_loop *blk_loops;
unsigned blk_nloops;
struct blk_listener blk_listeners[2];
unsigned blk_nlisteners;
atomic_uint blk_nconns;

#define RING_ENTRIES 2048

/* The kernel's minimum wait (Linux 6.12): liburing 2.3 (Debian 12)
 * predates it, and its io_uring_getevents_arg calls the field "pad";
 * liburing 2.8 on names it and defines the feature flag. */
#ifdef IORING_FEAT_MIN_TIMEOUT
#define GETEVENTS_MIN_WAIT min_wait_usec
#else
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#define GETEVENTS_MIN_WAIT pad
#endif

static struct io_uring_sqe *
get_sqe (struct blk_loop *l)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&l->ring);
  if (sqe == NULL) {
    io_uring_submit (&l->ring);
    sqe = io_uring_get_sqe (&l->ring);
  }
  return sqe;
}

uint64_t
blk_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static inline void
cpu_relax (void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause ();
#elif defined(__aarch64__)
  __asm__ __volatile__ ("yield");
#endif
}

/* Polling pays where the client waits on blockd: at queue depth 1, where
 * it waits for each reply, and with a few large requests, where a client's
 * queue moves in rounds (its requests arrive together, reach the disk
 * together and finish together) and a sleeping loop pays a wake-up for
 * each payload and each completion of a round.
 * With many small requests in flight completions come in a stream, a sleep
 * is short and lets them batch, and a spinning loop takes CPU from the
 * rest of the machine (measured: polling at any depth took server CPU from
 * 0.27 to 0.52 s/s at 4k QD32 for no more IOPS).  Polling with up to 8
 * requests of 64 KiB or more on average, in three A/Bs: 1M QD4 writes
 * +18..24%, 128k QD8 writes +16%, +16% and, with both CPUs nearly busy,
 * +1%; it takes 0.12..0.3 more CPU-s/s while large writes stream
 * (docs/BENCHMARKS.md, fourth pass).  Measured again since, it buys less:
 * at most 4.5% for 128k writes in the eighth pass, and 0..2.4% in the
 * twenty-eighth (1M writes even), for 8..16% more server CPU per write.
 * It stays for the 128k write goal, which is not met; poll-us = 0 turns
 * it off. */
#define POLL_MAX_INFLIGHT 1
#define POLL_MAX_INFLIGHT_LARGE 8
#define LARGE_AVG (64u * 1024)

/* Do the requests in flight average LARGE_AVG or more (a client's queue
 * that moves in rounds)?  Such a loop may poll, and does not wait for a
 * batch (batch_wait). */
static bool
inflight_large (const struct blk_loop *l)
{
  return l->inflight_bytes >= (uint64_t) l->inflight * LARGE_AVG;
}

static bool
poll_depth_pays (const struct blk_loop *l)
{
  return l->inflight <= POLL_MAX_INFLIGHT
         || (l->inflight <= POLL_MAX_INFLIGHT_LARGE && inflight_large (l));
}

/* May the loop poll now?  (Whether it does is poll_mode's choice.) */
static bool
poll_may (const struct blk_loop *l)
{
  uint64_t until = l->last_io_ns + (uint64_t) blk_cfg.poll_us * 1000u;
  return blk_cfg.poll_us > 0 && l->taskrun_flag && l->poll_pays && poll_depth_pays (l)
         && blk_now_ns () < until;
}

/* Whether polling brings an event sooner than sleeping depends on the
 * host, not only on blockd: on one machine polling took 4k QD1 reads from
 * 12.3k to 14.3k IOPS, on another from 8.9k down to 6.1k (the disk's
 * interrupt seems to reach a spinning vCPU late; docs/BENCHMARKS.md,
 * twelfth pass).  So every POLL_TRIAL_EVERY waits where the loop may poll
 * it times POLL_TRIAL waits polling and as many sleeping, from the start
 * of the wait to the first CQE, and polls until the next trial only if
 * polling was the quicker. */
#define POLL_TRIAL 256
#define POLL_TRIAL_EVERY 8192
#define POLL_TRIAL_CAP_NS 1000000u

static bool
poll_mode (struct blk_loop *l, bool *trial)
{
  uint64_t p = l->waits++ % POLL_TRIAL_EVERY;
  *trial = p < 2 * POLL_TRIAL;
  if (*trial)
    return p < POLL_TRIAL;
  if (p == 2 * POLL_TRIAL && l->wait_n[0] && l->wait_n[1]) {
    /* polling must win by a tenth: it costs a CPU while it spins */
    l->poll_wins = l->wait_ns[1] / l->wait_n[1] * 10 < l->wait_ns[0] / l->wait_n[0] * 9;
    log_debug ("loop %d: a wait took %llu ns polling, %llu ns sleeping: %s", l->index,
               (unsigned long long) (l->wait_ns[1] / l->wait_n[1]),
               (unsigned long long) (l->wait_ns[0] / l->wait_n[0]),
               l->poll_wins ? "polling" : "sleeping");
    l->wait_ns[0] = l->wait_ns[1] = l->wait_n[0] = l->wait_n[1] = 0;
  }
  return l->poll_wins;
}

/* Submit what is queued, then poll for completions until poll_us after the
 * last data-path completion.  Completion work the kernel holds for this
 * thread (DEFER_TASKRUN) is announced by IORING_SQ_TASKRUN and run with
 * io_uring_get_events.  Returns true if CQEs are ready, false if the loop
 * should sleep.  The caller has asked poll_may and poll_mode. */
static bool
poll_events (struct blk_loop *l)
{
  uint64_t until = l->last_io_ns + (uint64_t) blk_cfg.poll_us * 1000u;
  io_uring_submit (&l->ring);
  for (unsigned i = 1;; i++) {
    if (io_uring_cq_ready (&l->ring))
      return true;
    if (IO_URING_READ_ONCE (*l->ring.sq.kflags) & IORING_SQ_TASKRUN) {
      io_uring_get_events (&l->ring);
      continue;
    }
    if (i % 32 == 0 && (atomic_load_explicit (&l->stopping, memory_order_relaxed)
                        || blk_now_ns () >= until)) {
      l->poll_pays = false;     /* nothing came: sleep, and see how long for */
      return false;
    }
    cpu_relax ();
  }
}

/* Publish the SQEs prepared since the last submit, as liburing's submit
 * does (the ring's SQ array maps slot i to SQE i from its setup on, which
 * ring_init checks), and return how many the kernel has not taken yet. */
static unsigned
flush_sq (struct io_uring *ring)
{
  struct io_uring_sq *sq = &ring->sq;
  unsigned tail = sq->sqe_tail;
  if (sq->sqe_head != tail) {
    sq->sqe_head = tail;
    io_uring_smp_store_release (sq->ktail, tail);
  }
  return tail - IO_URING_READ_ONCE (*sq->khead);
}

/* With many small requests in flight, a wait asks for a batch: a quarter
 * of them (at most BATCH_MAX) completions.  Completions then come in fewer
 * wake-ups, each round submits more disk operations per notification, and
 * more replies share a sendmsg; with the disk and the client's queue full
 * the wait costs little throughput.  At 4k QD32 (5 rounds): IOPS +10%
 * reads, +20% writes, IOs per server CPU-second +21% and +52%.
 *
 * The batch may be the disk's completions alone: when the loop has at
 * least that many pool operations in flight, and none of its requests is
 * at the sync thread or parked (those come back through the inbox), the
 * wait asks for the batch and for nothing sooner.  Otherwise it takes
 * what has come after batch_us (the kernel's minimum wait,
 * IORING_ENTER_EXT_ARG's min_wait_usec, Linux 6.12), or, if nothing has,
 * the first to come, since the rest may be the client's next requests or
 * a flush coming back.  The minimum wait costs a timer due in 50 µs,
 * armed and cancelled at each wait that sleeps, and on a VM programming
 * the timer is a VM exit each time.  With the disk's completions ending
 * the wait, 4k QD32 writes made 1.21x the IOs per server CPU-second in 12
 * of 12 rounds; reads were even (docs/BENCHMARKS.md, twenty-sixth pass).
 * Meanwhile a new request, a connection handed over, or a stop waits for
 * the batch too: for a few disk completions on a healthy disk, and at most
 * BATCH_BACKSTOP_NS if the operations in flight are slow (a copy for a
 * snapshot, an injected delay) or the disk stops answering.  The backstop
 * is due after the scheduler's next tick (every 4 ms at HZ=250), so its
 * timer is seldom the one the hardware is programmed for.
 *
 * It is for one busy connection: where several share the loop, their
 * requests and completions already come together, and the wait only
 * delays one client's requests for another's completions (4 connections
 * over 2 loops: -4% IOPS and fewer IOs per CPU-second with it, +3% and +7%
 * IOPS once it stood aside; docs/BENCHMARKS.md, fourteenth and fifteenth
 * passes).  Large requests come in rounds (inflight_large) and are not
 * held back.  liburing 2.3 (Debian 12) has no call that passes a minimum
 * wait, so this one makes the io_uring_enter itself. */
#define BATCH_MIN_INFLIGHT 8
#define BATCH_MAX 8
#define BATCH_BACKSTOP_NS (10 * 1000 * 1000)

static bool
batch_may (const struct blk_loop *l)
{
  return blk_cfg.batch_us > 0 && l->min_timeout && l->inflight >= BATCH_MIN_INFLIGHT
         && l->busy_conns == 1 && !inflight_large (l);
}

static int
batch_wait (struct blk_loop *l)
{
  unsigned nr = l->inflight / 4 < BATCH_MAX ? l->inflight / 4 : BATCH_MAX;
  bool disk_only = l->vctx.inflight >= nr && l->vctx.away == 0;
  struct __kernel_timespec ts = { .tv_sec = 1 };   /* then -ETIME: the loop goes round */
  struct io_uring_getevents_arg arg = { .sigmask_sz = _NSIG / 8,
                                        .ts = (uint64_t) (uintptr_t) &ts };
  if (disk_only)
    ts = (struct __kernel_timespec) { .tv_nsec = BATCH_BACKSTOP_NS };
  else
    arg.GETEVENTS_MIN_WAIT = (unsigned) blk_cfg.batch_us;
  int r = io_uring_enter2 ((unsigned) l->ring.ring_fd, flush_sq (&l->ring), nr,
                           IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *) &arg,
                           sizeof arg);
  if (r == -EINVAL) {
    log_error ("loop %d: the kernel refused a batched wait; waiting for each completion",
               l->index);
    l->min_timeout = false;
    r = io_uring_submit_and_wait (&l->ring, 1);
  }
  return r;
}

/* Sleep until a completion.  If it came within poll_us, polling would have
 * caught it: poll next time.  A client that thinks between requests, or a
 * machine too busy to run it promptly, makes the gaps longer and the loop
 * sleeps instead of spinning. */
static int
sleep_events (struct blk_loop *l)
{
  if (batch_may (l))
    return batch_wait (l);        /* (not timed: it waits for a batch on purpose) */
  if (blk_cfg.poll_us <= 0 || !l->taskrun_flag)
    return io_uring_submit_and_wait (&l->ring, 1);
  uint64_t t0 = blk_now_ns ();
  int r = io_uring_submit_and_wait (&l->ring, 1);
  l->poll_pays = blk_now_ns () - t0 < (uint64_t) blk_cfg.poll_us * 1000u;
  return r;
}

static void
arm_accept (struct blk_loop *l, struct blk_listener *ls)
{
  struct io_uring_sqe *sqe = get_sqe (l);
  if (sqe == NULL) {
    log_error ("no submission slot to accept on %s", ls->desc);
    return;
  }
  io_uring_prep_accept (sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) ls | TAG_ACCEPT);
}

static void
arm_wake (struct blk_loop *l)
{
  struct io_uring_sqe *sqe = get_sqe (l);
  if (sqe == NULL)
    return;
  io_uring_prep_read (sqe, l->efd, &l->efd_buf, sizeof l->efd_buf, 0);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) l | TAG_WAKE);
}

static void
arm_timer (struct blk_loop *l)
{
  struct io_uring_sqe *sqe = get_sqe (l);
  if (sqe == NULL)
    return;
  l->tick.tv_sec = 1;
  l->tick.tv_nsec = 0;
  io_uring_prep_timeout (sqe, &l->tick, 0, 0);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) l | TAG_TIMER);
}

void
blk_loop_wake (struct blk_loop *l)
{
  uint64_t one = 1;
  if (write (l->efd, &one, sizeof one) < 0 && errno != EAGAIN)
    log_error ("waking loop %d: %s", l->index, strerror (errno));
}

/* ---- data buffers ------------------------------------------------------------ */
static bool
in_arena (struct blk_loop *l, void *buf)
{
  uintptr_t a = (uintptr_t) buf, base = (uintptr_t) l->arena;
  return l->arena && a >= base && a < base + l->arena_len;
}

void *
blk_buf_get (struct blk_loop *l, size_t len, size_t *cap)
{
  unsigned c = 0;
  while (c < BLK_BUF_CLASSES && ((size_t) 1 << (BLK_BUF_MIN_SHIFT + c)) < len)
    c++;
  if (c < BLK_BUF_CLASSES && l->arena) {
    size_t size = (size_t) 1 << (BLK_BUF_MIN_SHIFT + c);
    void *b = l->buf_free[c];
    if (b) {
      memcpy (&l->buf_free[c], b, sizeof (void *));
      *cap = size;
      return b;
    }
    if (l->arena_len - l->arena_used >= size) {
      b = l->arena + l->arena_used;
      l->arena_used += size;
      *cap = size;
      return b;
    }
  }
  /* Outside the arena a buffer of 2 MiB or more gets huge pages too, for
   * the arena's reason (below): 4M reads 2.07x, 4M writes 1.15-1.18x
   * (docs/BENCHMARKS.md, ninth pass). */
  size_t size = len < 4096 ? 4096 : (len + 4095) & ~(size_t) 4095;
  size_t align = size >= BLK_ARENA_ALIGN ? BLK_ARENA_ALIGN : 4096;
  void *b;
  if (posix_memalign (&b, align, size) != 0)
    return NULL;
#ifdef MADV_HUGEPAGE
  if (align == BLK_ARENA_ALIGN)
    madvise (b, size & ~(size_t) (BLK_ARENA_ALIGN - 1), MADV_HUGEPAGE);
#endif
  *cap = size;
  return b;
}

void
blk_buf_put (struct blk_loop *l, void *buf, size_t cap)
{
  if (buf == NULL)
    return;
  if (!in_arena (l, buf)) {
    free (buf);
    return;
  }
  unsigned c = 0;
  while (((size_t) 1 << (BLK_BUF_MIN_SHIFT + c)) < cap)
    c++;
  memcpy (buf, &l->buf_free[c], sizeof (void *));
  l->buf_free[c] = buf;
}

/* The arena, registered with the ring with the pool file.  Without it (no
 * memory, or a locked-memory limit) buffers come from the heap and pool I/O
 * goes the ordinary way.
 *
 * It is 2 MiB aligned and asks for transparent huge pages, so that a buffer
 * is physically contiguous: a 1 MiB write from 4 KiB pages is 256 segments,
 * more than the virtio disk takes in one request (254), and went to the
 * disk as two; 128k sequential reads, once contiguous, merge into 1 MiB
 * disk requests instead of 512 KiB ones.  Where huge pages are off the
 * advice does nothing. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_OFF 1
#endif
#endif

static void
arena_init (struct blk_loop *l)
{
#ifdef ARENA_OFF
  /* under ASan every request buffer is its own heap block, so that an
   * overrun is caught; the pool file is still registered */
  vol_ioctx_register (&l->vctx, NULL, 0);
  return;
#endif
  void *a;
  if (posix_memalign (&a, BLK_ARENA_ALIGN, BLK_ARENA_SIZE) != 0)
    return;
#ifdef MADV_HUGEPAGE
  madvise (a, BLK_ARENA_SIZE, MADV_HUGEPAGE);
#endif
  int r = vol_ioctx_register (&l->vctx, a, BLK_ARENA_SIZE);
  if (r < 0) {
    log_info ("loop %d: pool I/O without registered buffers: %s", l->index, strerror (-r));
    free (a);
    vol_ioctx_register (&l->vctx, NULL, 0);
    return;
  }
  l->arena = a;
  l->arena_len = BLK_ARENA_SIZE;
}

/* vol_ioctx.buf_get and buf_put: buffers for the store's own pool I/O (a
 * chunk's copy).  One of BLK_HUGE_MIN or more is a whole number of huge
 * pages from the heap (blk_buf_get's path for 2 MiB and more), so that the
 * disk takes it in one request (see vol_ioctx.buf_get), and copies do not
 * carve the arena that requests use into large pieces.  Under ASan it is
 * exactly as long as asked, so that an overrun is caught. */
static void *
vctx_buf_get (struct vol_ioctx *ctx, size_t len, size_t *cap)
{
  struct blk_loop *l = ctx->opaque;
#ifndef ARENA_OFF
  if (len >= BLK_HUGE_MIN)
    len = (len + BLK_ARENA_ALIGN - 1) & ~(size_t) (BLK_ARENA_ALIGN - 1);
#endif
  /* a kept one of the same size: no fresh pages to fault in and zero
   * (4k writes at QD1 right after a snapshot: p99 0.82-0.95 ms without,
   * 0.43-0.72 ms with; docs/BENCHMARKS.md, twelfth pass) */
  for (unsigned i = 0; i < l->ncopy_free; i++)
    if (l->copy_cap[i] == len) {
      void *b = l->copy_free[i];
      *cap = len;
      l->ncopy_free--;
      l->copy_free[i] = l->copy_free[l->ncopy_free];
      l->copy_cap[i] = l->copy_cap[l->ncopy_free];
      return b;
    }
  return blk_buf_get (l, len, cap);
}

static void
vctx_buf_put (struct vol_ioctx *ctx, void *buf, size_t cap)
{
  struct blk_loop *l = ctx->opaque;
  if (l->ncopy_free < BLK_COPY_KEEP && !in_arena (l, buf)) {
    l->copy_free[l->ncopy_free] = buf;
    l->copy_cap[l->ncopy_free++] = cap;
    return;
  }
  blk_buf_put (l, buf, cap);
}

/* vol_ioctx.post: called from any thread. */
static void
post_io (struct vol_ioctx *ctx, struct vol_io *io)
{
  struct blk_loop *l = ctx->opaque;
  pthread_mutex_lock (&l->inbox_lock);
  io->next = l->inbox_ios;
  l->inbox_ios = io;
  pthread_mutex_unlock (&l->inbox_lock);
  blk_loop_wake (l);
}

/* Hand connection fd (already counted in blk_nconns) to loop l, which owns
 * it from here and closes it.  Any thread. */
void
blk_loop_post_fd (struct blk_loop *l, int fd)
{
  pthread_mutex_lock (&l->inbox_lock);
  if (l->ninbox_fds == l->capinbox_fds) {
    size_t cap = l->capinbox_fds ? 2 * l->capinbox_fds : 16;
    int *n = realloc (l->inbox_fds, cap * sizeof *n);
    if (n == NULL) {
      pthread_mutex_unlock (&l->inbox_lock);
      log_error ("out of memory handing over a connection");
      close (fd);
      atomic_fetch_sub (&blk_nconns, 1);
      return;
    }
    l->inbox_fds = n;
    l->capinbox_fds = cap;
  }
  l->inbox_fds[l->ninbox_fds++] = fd;
  pthread_mutex_unlock (&l->inbox_lock);
  blk_loop_wake (l);
}

static void
drain_inbox (struct blk_loop *l)
{
  pthread_mutex_lock (&l->inbox_lock);
  struct vol_io *ios = l->inbox_ios;
  l->inbox_ios = NULL;
  size_t nfds = l->ninbox_fds;
  int fds[64];
  if (nfds > 64)
    nfds = 64;
  if (nfds) {
    memcpy (fds, l->inbox_fds, nfds * sizeof *fds);
    memmove (l->inbox_fds, l->inbox_fds + nfds, (l->ninbox_fds - nfds) * sizeof *fds);
    l->ninbox_fds -= nfds;
  }
  bool more = l->ninbox_fds > 0;
  pthread_mutex_unlock (&l->inbox_lock);
  if (more)
    blk_loop_wake (l);
  /* reverse to process in posting order */
  struct vol_io *rev = NULL;
  while (ios) {
    struct vol_io *n = ios->next;
    ios->next = rev;
    rev = ios;
    ios = n;
  }
  while (rev) {
    struct vol_io *n = rev->next;
    rev->next = NULL;
    vol_io_resume (rev);
    rev = n;
  }
  for (size_t i = 0; i < nfds; i++) {
    if (atomic_load (&l->stopping)) {
      close (fds[i]);
      atomic_fetch_sub (&blk_nconns, 1);
    }
    else
      blk_conn_start (l, fds[i]);
  }
}

static void
on_accept (struct blk_loop *l, struct blk_listener *ls, int res)
{
  static unsigned next_loop;
  if (l->listeners_closed) {
    if (res >= 0)
      close (res);
    return;
  }
  if (res < 0) {
    if (res != -EINTR && res != -ECANCELED)
      log_error_ratelimited ("accept on %s: %s", ls->desc, strerror (-res));
    if (res == -EMFILE || res == -ENFILE || res == -ENOMEM) {
      /* out of descriptors: retry on the next tick rather than spin */
      return;
    }
    arm_accept (l, ls);
    return;
  }
  arm_accept (l, ls);
  int fd = res;
  if (atomic_fetch_add (&blk_nconns, 1) >= (unsigned) blk_cfg.max_connections) {
    atomic_fetch_sub (&blk_nconns, 1);
    log_error_ratelimited ("refusing a connection on %s: max-connections (%lld) reached",
                           ls->desc, (long long) blk_cfg.max_connections);
    close (fd);
    return;
  }
  if (!ls->is_unix) {
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  struct blk_loop *target = &blk_loops[next_loop++ % blk_nloops];
  if (target == l)
    blk_conn_start (l, fd);
  else
    blk_loop_post_fd (target, fd);
}

static void
begin_stop (struct blk_loop *l)
{
  if (l->index == 0 && !l->listeners_closed) {
    l->listeners_closed = true;
    for (unsigned i = 0; i < blk_nlisteners; i++)
      shutdown (blk_listeners[i].fd, SHUT_RDWR);
  }
  for (struct blk_conn *c = l->conns; c;) {
    struct blk_conn *n = blk_conn_next (c);
    blk_conn_stop (c);
    c = n;
  }
}

static void *
loop_main (void *arg)
{
  struct blk_loop *l = arg;
  if (l->index == 0)
    for (unsigned i = 0; i < blk_nlisteners; i++)
      arm_accept (l, &blk_listeners[i]);
  arm_wake (l);
  arm_timer (l);
  l->turn_ns = blk_now_ns ();
  bool stop_begun = false;

  for (;;) {
    int r = 0;
    if (poll_may (l)) {
      bool trial, polled = poll_mode (l, &trial);
      uint64_t t0 = trial ? blk_now_ns () : 0;
      if (!polled || !poll_events (l))
        r = sleep_events (l);
      if (trial) {                /* a client's pause is not the host's answer */
        uint64_t t = blk_now_ns () - t0;
        l->wait_ns[polled] += t < POLL_TRIAL_CAP_NS ? t : POLL_TRIAL_CAP_NS;
        l->wait_n[polled]++;
      }
    }
    else
      r = sleep_events (l);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
      log_error ("loop %d: waiting for completions: %s", l->index, strerror (-r));
      break;
    }
    l->turn_ns = blk_now_ns ();
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    bool io_seen = false;
    io_uring_for_each_cqe (&l->ring, head, cqe) {
      n++;
      uint64_t ud = cqe->user_data;
      void *p = (void *) (uintptr_t) (ud & ~TAG_MASK);
      switch (ud & TAG_MASK) {
      case TAG_VOL:    vol_io_cqe (&l->vctx, cqe); io_seen = true; break;
      case TAG_ACCEPT: on_accept (l, p, cqe->res); break;
      case TAG_RECV:   blk_conn_recv_done (p, cqe->res, false); io_seen = true; break;
      case TAG_RECV_NEXT: blk_conn_recv_done (p, cqe->res, true); io_seen = true; break;
      case TAG_SEND:   blk_conn_send_done (p, cqe->res); io_seen = true; break;
      case TAG_WAKE:
        drain_inbox (l);
        arm_wake (l);
        break;
      case TAG_TIMER: {
        struct timespec ts;
        clock_gettime (CLOCK_MONOTONIC, &ts);
        for (struct blk_conn *c = l->conns; c;) {
          struct blk_conn *next = blk_conn_next (c);
          blk_conn_tick (c, ts.tv_sec);
          c = next;
        }
        arm_timer (l);
        break;
      }
      default:
        break;   /* nop SQEs (user_data 0) */
      }
      if (n % 64 == 0)
        blk_loop_flush_dirty (l);
    }
    io_uring_cq_advance (&l->ring, n);
    blk_loop_flush_dirty (l);
    if (io_seen && blk_cfg.poll_us > 0)
      l->last_io_ns = blk_now_ns ();

    if (atomic_load (&l->stopping)) {
      if (!stop_begun) {
        stop_begun = true;
        begin_stop (l);
        blk_loop_flush_dirty (l);
      }
      if (l->conns == NULL && l->vctx.background == 0)
        break;
    }
  }
  return NULL;
}

/* batch_wait's flush_sq publishes SQEs as liburing 2.3 does, which
 * relies on the SQ array mapping slot i to SQE i (set up by liburing). */
static bool
sq_array_identity (const struct io_uring *ring)
{
  if (ring->sq.array == NULL)
    return true;
  for (unsigned i = 0; i < ring->sq.ring_entries; i++)
    if (ring->sq.array[i] != i)
      return false;
  return true;
}

/* Each loop creates its own ring, on its own thread: with SINGLE_ISSUER the
 * kernel ties the ring to the thread that made it, and DEFER_TASKRUN runs
 * completion work only when that thread asks for events, in batches,
 * instead of interrupting it.  (On this VM the difference is within the
 * noise: a profile shows the server's CPU going to the virtio disk kick and
 * TCP, not to io_uring's task work.)  TASKRUN_FLAG lets poll_events see
 * pending completion work without a system call.  Older kernels fall back
 * to COOP_TASKRUN, then to no flags (and no polling). */
static int
ring_init (struct blk_loop *l)
{
  static const unsigned tries[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_COOP_TASKRUN,
    0,
  };
  int r = -EINVAL;
  for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++) {
    struct io_uring_params p = { 0 };
    p.cq_entries = RING_ENTRIES * 4;
    p.flags = IORING_SETUP_CQSIZE | tries[i];
    r = io_uring_queue_init_params (RING_ENTRIES, &l->ring, &p);
    if (r == 0) {
      l->taskrun_flag = (p.flags & IORING_SETUP_TASKRUN_FLAG) != 0;
      l->min_timeout = (p.features & IORING_FEAT_MIN_TIMEOUT) && sq_array_identity (&l->ring);
      if (l->index == 0)
        log_debug ("io_uring set up with flags 0x%x%s", p.flags,
                   l->min_timeout ? ", completions batched" : "");
      return 0;
    }
    if (r != -EINVAL)
      break;
  }
  return r;
}

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static unsigned started;
static int start_error;

static void *
loop_thread (void *arg)
{
  struct blk_loop *l = arg;
  int r = ring_init (l);
  if (r == 0)
    arena_init (l);
  pthread_mutex_lock (&start_lock);
  if (r < 0 && start_error == 0)
    start_error = r;
  started++;
  pthread_cond_broadcast (&start_cond);
  /* run only once every loop has its ring: loop 0 hands out connections */
  while (started < blk_nloops && start_error == 0)
    pthread_cond_wait (&start_cond, &start_lock);
  int err = start_error;
  pthread_mutex_unlock (&start_lock);
  if (r < 0 || err)
    return NULL;
  return loop_main (l);
}

int
blk_loops_start (unsigned n, char *err, size_t errlen)
{
  blk_loops = calloc (n, sizeof *blk_loops);
  if (blk_loops == NULL)
    return -ENOMEM;
  blk_nloops = n;
  for (unsigned i = 0; i < n; i++) {
    struct blk_loop *l = &blk_loops[i];
    l->index = (int) i;
    pthread_mutex_init (&l->inbox_lock, NULL);
    l->efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->efd < 0) {
      snprintf (err, errlen, "cannot create an eventfd: %s", strerror (errno));
      return -errno;
    }
    l->vctx = (struct vol_ioctx) { .store = blk_store, .ring = &l->ring, .tag = TAG_VOL,
                                   .post = post_io, .opaque = l,
                                   .buf_get = vctx_buf_get, .buf_put = vctx_buf_put };
  }
  for (unsigned i = 0; i < n; i++) {
    int r = pthread_create (&blk_loops[i].thread, NULL, loop_thread, &blk_loops[i]);
    if (r) {
      snprintf (err, errlen, "cannot start loop thread: %s", strerror (r));
      return -r;
    }
  }
  pthread_mutex_lock (&start_lock);
  while (started < n && start_error == 0)
    pthread_cond_wait (&start_cond, &start_lock);
  int r = start_error;
  pthread_mutex_unlock (&start_lock);
  if (r < 0) {
    snprintf (err, errlen, "cannot set up io_uring: %s", strerror (-r));
    for (unsigned i = 0; i < n; i++)
      pthread_join (blk_loops[i].thread, NULL);
    blk_nloops = 0;
    return r;
  }
  return 0;
}

void
blk_loops_stop (void)
{
  for (unsigned i = 0; i < blk_nloops; i++) {
    atomic_store (&blk_loops[i].stopping, true);
    blk_loop_wake (&blk_loops[i]);
  }
  for (unsigned i = 0; i < blk_nloops; i++)
    pthread_join (blk_loops[i].thread, NULL);
  for (unsigned i = 0; i < blk_nloops; i++) {
    struct blk_loop *l = &blk_loops[i];
    /* a last look at the inbox: connections handed over during the stop */
    for (size_t j = 0; j < l->ninbox_fds; j++)
      close (l->inbox_fds[j]);
    free (l->inbox_fds);
    io_uring_queue_exit (&l->ring);
    while (l->ncopy_free)
      free (l->copy_free[--l->ncopy_free]);
    free (l->arena);
    close (l->efd);
    pthread_mutex_destroy (&l->inbox_lock);
  }
  free (blk_loops);
  blk_loops = NULL;
  blk_nloops = 0;
}
