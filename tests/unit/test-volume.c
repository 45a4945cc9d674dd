/* tests/unit/test-volume.c — the node-local volume store (volume/).
 *
 * Every test gets a fresh store in a temporary directory on a real
 * filesystem (the pool is opened with O_DIRECT) and its own io_uring, which
 * the test drives the way a blockd loop thread does: CQEs tagged for the
 * store go to vol_io_cqe(), ios handed back through ctx->post (FLUSH/FUA
 * completions from the sync thread, parked unaligned writes) go to
 * vol_io_resume().  Data written is checked byte for byte against an
 * in-memory model of the volume.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <liburing.h>

#include "common/log.h"
#include "volume/volume.h"

#define KiB (1024ULL)
#define MiB (1024ULL * 1024)
#define GiB (1024ULL * 1024 * 1024)
#define TiB (1024ULL * 1024 * 1024 * 1024)

#define T_TAG 1
#define T_TIMEOUT_NS (10LL * 1000000000)

/* ---- the test's store, ring and loop ------------------------------------ */

static char t_dir[200];
static struct vol_store *t_st;
static struct io_uring t_ring;
static bool t_ring_up;
static struct vol_ioctx t_ctx;
/* the context t_turn() drives: t_ctx, or a second one in a test that needs
 * requests parked on a ring that is not running */
static struct vol_ioctx *t_loop = &t_ctx;

/* ios posted back to "our loop thread" (by the sync thread or by the store) */
static pthread_mutex_t t_post_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vol_io *t_posted[1024];
static size_t t_nposted;
static unsigned t_posts;

static void
t_post (struct vol_ioctx *ctx, struct vol_io *io)
{
  if (ctx->post != t_post)           /* runs on the sync thread: no cr_assert here */
    abort ();
  pthread_mutex_lock (&t_post_lock);
  if (t_nposted < sizeof t_posted / sizeof t_posted[0])
    t_posted[t_nposted++] = io;
  t_posts++;
  pthread_mutex_unlock (&t_post_lock);
}

static int64_t
t_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One turn of the loop: hand back posted ios, submit queued SQEs, reap
 * CQEs (waiting at most wait_ms for the first).  Returns how many events
 * (posts + CQEs) were handled. */
static int
t_turn (int wait_ms)
{
  int n = 0;
  for (;;) {
    pthread_mutex_lock (&t_post_lock);
    struct vol_io *io = t_nposted ? t_posted[--t_nposted] : NULL;
    pthread_mutex_unlock (&t_post_lock);
    if (io == NULL)
      break;
    vol_io_resume (io);
    n++;
  }
  io_uring_submit (t_loop->ring);
  struct io_uring_cqe *cqe;
  if (n == 0 && wait_ms > 0) {
    struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = (long long) wait_ms * 1000000 };
    if (io_uring_wait_cqe_timeout (t_loop->ring, &cqe, &ts) != 0)
      return 0;
  }
  while (io_uring_peek_cqe (t_loop->ring, &cqe) == 0) {
    struct io_uring_cqe copy = *cqe;
    io_uring_cqe_seen (t_loop->ring, cqe);
    cr_assert_eq (copy.user_data & VOL_UD_TAG_MASK, T_TAG, "CQE without our tag: %llx",
                  (unsigned long long) copy.user_data);
    vol_io_cqe (t_loop, &copy);
    n++;
  }
  io_uring_submit (t_loop->ring);
  return n;
}

/* Run the loop until nothing is queued, in flight or posted for quiet_ms. */
static void
t_settle (int quiet_ms)
{
  int64_t deadline = t_now_ns () + T_TIMEOUT_NS;
  while (t_turn (quiet_ms) > 0 || io_uring_sq_ready (t_loop->ring) > 0 || t_loop->background)
    cr_assert_lt (t_now_ns (), deadline, "the ring never went quiet");
}

/* A request and its completion count. */
struct t_req {
  struct vol_io io;
  int done;
};

static void
t_done (struct vol_io *io)
{
  struct t_req *r = io->opaque;
  r->done++;
}

static void
t_prep (struct t_req *r, struct volume *v, enum vol_op op, unsigned flags,
        uint64_t off, uint32_t len, void *buf)
{
  void *subs = r->io.subs;          /* keep the private arrays for reuse */
  unsigned capsubs = r->io.capsubs;
  memset (r, 0, sizeof *r);
  r->io.subs = subs;
  r->io.capsubs = capsubs;
  r->io.vol = v;
  r->io.ctx = t_loop;
  r->io.op = op;
  r->io.flags = flags;
  r->io.offset = off;
  r->io.length = len;
  r->io.buf = buf;
  r->io.done = t_done;
  r->io.opaque = r;
}

/* Submit; returns true if vol_io_submit completed it on the spot. */
static bool
t_submit (struct t_req *r)
{
  int s = vol_io_submit (&r->io);
  cr_assert (s == 0 || s == 1, "vol_io_submit returned %d", s);
  if (s == 1)
    r->done = 1;        /* done is NOT called in this case: count it ourselves */
  return s == 1;
}

/* Drive the loop until every request has completed exactly once. */
static void
t_wait (struct t_req **rs, size_t n)
{
  int64_t deadline = t_now_ns () + T_TIMEOUT_NS;
  for (;;) {
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
      cr_assert_leq (rs[i]->done, 1, "done called %d times for request %zu", rs[i]->done, i);
      pending += rs[i]->done == 0;
    }
    if (pending == 0)
      break;
    cr_assert_lt (t_now_ns (), deadline, "%zu requests never completed", pending);
    t_turn (10);
  }
}

/* Run one request to completion.  Returns io->result. */
static int
t_run (struct volume *v, enum vol_op op, unsigned flags, uint64_t off, uint32_t len, void *buf)
{
  struct t_req r = { 0 };
  t_prep (&r, v, op, flags, off, len, buf);
  t_submit (&r);
  struct t_req *rs[1] = { &r };
  t_wait (rs, 1);
  cr_assert_eq (r.done, 1);
  int res = r.io.result;
  vol_io_release (&r.io);
  return res;
}

static void *
t_buf (size_t len)
{
  void *p = NULL;
  cr_assert_eq (posix_memalign (&p, 4096, len ? len : 4096), 0);
  return p;
}

static int
t_write (struct volume *v, uint64_t off, uint32_t len, const void *data)
{
  void *b = t_buf (len);
  memcpy (b, data, len);
  int r = t_run (v, VOL_OP_WRITE, 0, off, len, b);
  free (b);
  return r;
}

static int
t_write_byte (struct volume *v, uint64_t off, uint32_t len, int byte)
{
  void *b = t_buf (len);
  memset (b, byte, len);
  int r = t_run (v, VOL_OP_WRITE, 0, off, len, b);
  free (b);
  return r;
}

/* Read into a malloc'd buffer (pre-filled with 0xa5 so zeros are real). */
static unsigned char *
t_read (struct volume *v, uint64_t off, uint32_t len)
{
  unsigned char *b = t_buf (len);
  memset (b, 0xa5, len);
  int r = t_run (v, VOL_OP_READ, 0, off, len, b);
  cr_assert_eq (r, 0, "read at %llu+%u: %s", (unsigned long long) off, len, strerror (-r));
  return b;
}

static bool
t_all (const unsigned char *p, size_t len, int byte)
{
  for (size_t i = 0; i < len; i++)
    if (p[i] != (unsigned char) byte)
      return false;
  return true;
}

static void
t_expect_bytes (struct volume *v, uint64_t off, uint32_t len, int byte)
{
  unsigned char *b = t_read (v, off, len);
  for (size_t i = 0; i < len; i++)
    if (b[i] != (unsigned char) byte) {
      unsigned got = b[i];
      free (b);
      cr_assert_fail ("byte %llu is 0x%02x, expected 0x%02x",
                      (unsigned long long) (off + i), got, (unsigned) (unsigned char) byte);
    }
  free (b);
}

static void
t_expect_model (struct volume *v, uint64_t off, const unsigned char *model, uint32_t len)
{
  unsigned char *b = t_read (v, off, len);
  for (size_t i = 0; i < len; i++)
    if (b[i] != model[i]) {
      unsigned got = b[i], want = model[i];
      free (b);
      cr_assert_fail ("byte %llu is 0x%02x, expected 0x%02x",
                      (unsigned long long) (off + i), got, want);
    }
  free (b);
}

static void
t_fill_random (unsigned char *p, size_t len, unsigned *seed)
{
  for (size_t i = 0; i < len; i++)
    p[i] = (unsigned char) (rand_r (seed) >> 7);
}

/* ---- store setup --------------------------------------------------------- */

static int
rm_one (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void) sb; (void) flag; (void) ftw;
  return remove (path);
}

static struct vol_store *
t_open_store (uint64_t capacity, uint32_t chunk)
{
  struct vol_store_params p = { .dir = t_dir, .capacity = capacity, .chunk_size = chunk };
  char err[512] = "";
  struct vol_store *st = NULL;
  int r = vol_store_open (&p, &st, err, sizeof err);
  cr_assert_eq (r, 0, "vol_store_open %s: %d %s", t_dir, r, err);
  cr_assert_not_null (st);
  t_st = st;
  t_ctx = (struct vol_ioctx) { .store = st, .ring = &t_ring, .tag = T_TAG, .post = t_post };
  return st;
}

static void
t_close_store (void)
{
  t_settle (20);
  /* a count left over would keep every later read waiting for the batch */
  cr_assert_eq (t_ctx.inflight, 0, "%u pool SQEs still counted in flight", t_ctx.inflight);
  cr_assert_eq (t_ctx.away, 0, "%u requests still counted at the sync thread or parked",
                t_ctx.away);
  vol_store_close (t_st);
  t_st = NULL;
}

static void
setup (void)
{
  const char *base = "build/tmp";
  if (access ("volume/volume.h", F_OK) != 0)
    base = "/work/main/build/tmp";      /* run from elsewhere */
  char tmp[PATH_MAX];
  snprintf (tmp, sizeof tmp, "mkdir -p %s", base);
  cr_assert_eq (system (tmp), 0);
  snprintf (t_dir, sizeof t_dir, "%s/test-volume-XXXXXX", base);
  cr_assert_not_null (mkdtemp (t_dir), "mkdtemp %s: %s", t_dir, strerror (errno));
  int r = io_uring_queue_init (256, &t_ring, 0);
  cr_assert_eq (r, 0, "io_uring_queue_init: %s", strerror (-r));
  t_ring_up = true;
  t_loop = &t_ctx;
  t_nposted = 0;
  t_posts = 0;
  log_level = LOG_WARN;           /* keep the test output readable */
}

static void
teardown (void)
{
  if (t_st) {
    t_settle (20);
    vol_store_close (t_st);
    t_st = NULL;
  }
  if (t_ring_up) {
    io_uring_queue_exit (&t_ring);
    t_ring_up = false;
  }
  if (t_dir[0])
    nftw (t_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  t_dir[0] = '\0';
}

static int
t_check (const char *dir, char *report, size_t len)
{
  FILE *f = fmemopen (report, len, "w");
  cr_assert_not_null (f);
  int r = vol_store_check (dir, f);
  fclose (f);
  return r;
}

static struct vol_pool_info
t_pool (void)
{
  struct vol_pool_info pi;
  vol_store_pool_info (t_st, &pi);
  return pi;
}

/* Run the loop until the pool has want_free bytes free (chunk releases
 * punch the pool asynchronously on the ring). */
static void
t_wait_free (uint64_t want_free)
{
  int64_t deadline = t_now_ns () + T_TIMEOUT_NS;
  while (t_pool ().free != want_free) {
    cr_assert_lt (t_now_ns (), deadline, "pool free is %llu, expected %llu",
                  (unsigned long long) t_pool ().free, (unsigned long long) want_free);
    t_turn (10);
  }
}

static void
t_create (const char *name, uint64_t size)
{
  char err[256] = "";
  struct vol_info vi;
  int r = vol_create (t_st, name, size, NULL, &vi, err, sizeof err);
  cr_assert_eq (r, 0, "vol_create %s: %d %s", name, r, err);
  cr_assert_str_eq (vi.name, name);
  cr_assert_eq (vi.size, size);
}

static uint64_t
t_allocated (const char *name)
{
  struct vol_info vi;
  char err[256] = "";
  int r = vol_stat (t_st, name, &vi, err, sizeof err);
  cr_assert_eq (r, 0, "vol_stat %s: %s", name, err);
  return vi.allocated;
}

static void t_kick_noop (struct vol_session *s) { (void) s; }

static struct volume *
t_open (const char *name, struct vol_session *s)
{
  s->kick = t_kick_noop;
  struct volume *v = vol_open (t_st, name, s);
  cr_assert_not_null (v, "vol_open %s: %s", name, strerror (errno));
  return v;
}

TestSuite (volume, .init = setup, .fini = teardown, .timeout = 60);

/* ---- store and pool -------------------------------------------------------- */

Test (volume, new_store_pool_info)
{
  t_open_store (64 * MiB, 1 * MiB);
  struct vol_pool_info pi = t_pool ();
  cr_expect_eq (pi.capacity, 64 * MiB);
  cr_expect_eq (pi.free, 64 * MiB);
  cr_expect_eq (pi.allocated, 0);
  cr_expect_eq (pi.chunk_size, 1 * MiB);
  cr_expect_eq (pi.volumes, 0);
  cr_expect_str_eq (pi.dir, t_dir);

  struct vol_info *list = NULL;
  size_t n = 99;
  cr_assert_eq (vol_list (t_st, &list, &n), 0);
  cr_expect_eq (n, 0);
  free (list);
}

Test (volume, default_chunk_size)
{
  t_open_store (16 * MiB, 0);
  cr_expect_eq (t_pool ().chunk_size, VOL_DEFAULT_CHUNK);
  cr_expect_eq (t_pool ().capacity, 16 * MiB);
}

Test (volume, store_open_rejects_bad_parameters)
{
  char err[512];
  struct vol_store *st = NULL;
  static const uint32_t bad_chunks[] = { 3000, 2048, 128u << 20, (1u << 20) + 4096 };
  for (size_t i = 0; i < sizeof bad_chunks / sizeof bad_chunks[0]; i++) {
    char sub[PATH_MAX];
    snprintf (sub, sizeof sub, "%s/c%zu", t_dir, i);
    struct vol_store_params p = { .dir = sub, .capacity = 64 * MiB, .chunk_size = bad_chunks[i] };
    err[0] = '\0';
    int r = vol_store_open (&p, &st, err, sizeof err);
    cr_expect_eq (r, -EINVAL, "chunk size %u: got %d", bad_chunks[i], r);
    cr_expect_neq (err[0], '\0', "chunk size %u: no message", bad_chunks[i]);
  }
  /* capacity below one chunk */
  char sub[PATH_MAX];
  snprintf (sub, sizeof sub, "%s/small", t_dir);
  struct vol_store_params p = { .dir = sub, .capacity = 512 * KiB, .chunk_size = 1 * MiB };
  err[0] = '\0';
  cr_expect_eq (vol_store_open (&p, &st, err, sizeof err), -EINVAL);
  cr_expect_neq (err[0], '\0');
}

Test (volume, store_in_use_is_refused)
{
  t_open_store (16 * MiB, 1 * MiB);
  struct vol_store_params p = { .dir = t_dir, .capacity = 16 * MiB, .chunk_size = 1 * MiB };
  struct vol_store *st2 = NULL;
  char err[512] = "";
  int r = vol_store_open (&p, &st2, err, sizeof err);
  cr_expect_lt (r, 0, "a second open of a live store must fail");
  cr_expect_neq (err[0], '\0');
  /* the first store still works */
  t_create ("still-ok", 1 * MiB);
}

/* ---- volume management ----------------------------------------------------- */

Test (volume, create_name_validation)
{
  t_open_store (64 * MiB, 1 * MiB);
  char long63[64], long64[65];
  memset (long63, 'a', 63); long63[63] = '\0';
  memset (long64, 'b', 64); long64[64] = '\0';
  const char *bad[] = { "", long64, "a/b", "a@b", "a b", ".hidden", "-flag", "tab\tname",
                        "nl\n", "bell\a", "ü", "a:b", "a*" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    struct vol_info vi;
    int r = vol_create (t_st, bad[i], 1 * MiB, NULL, &vi, err, sizeof err);
    cr_expect_eq (r, -EINVAL, "name #%zu \"%s\": got %d", i, bad[i], r);
    cr_expect_neq (err[0], '\0', "name #%zu: no message", i);
    cr_expect_not_null (vol_name_invalid (bad[i]), "name #%zu accepted", i);
  }
  const char *good[] = { "a", long63, "Data_1", "vm-42.disk", "0", "a..b", "x-" };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    cr_expect_null (vol_name_invalid (good[i]), "name %s refused", good[i]);
    t_create (good[i], 1 * MiB);
  }
  cr_expect_eq (t_pool ().volumes, sizeof good / sizeof good[0]);

  /* the message says what was wrong */
  char err[256] = "";
  cr_assert_eq (vol_create (t_st, "a/b", 1 * MiB, NULL, NULL, err, sizeof err), -EINVAL);
  cr_expect (strstr (err, "a/b") != NULL, "message does not name the volume: %s", err);

  /* duplicates */
  err[0] = '\0';
  cr_expect_eq (vol_create (t_st, "a", 2 * MiB, NULL, NULL, err, sizeof err), -EEXIST);
  cr_expect (strstr (err, "already exists") != NULL, "message: %s", err);
  struct vol_info vi;
  cr_assert_eq (vol_stat (t_st, "a", &vi, err, sizeof err), 0);
  cr_expect_eq (vi.size, 1 * MiB, "the duplicate create changed the original");
}

Test (volume, create_type_and_info)
{
  t_open_store (64 * MiB, 1 * MiB);
  char err[256] = "";
  struct vol_info vi;
  time_t before = time (NULL);
  cr_assert_eq (vol_create (t_st, "d1", 8 * MiB, NULL, &vi, err, sizeof err), 0, "%s", err);
  cr_expect_str_eq (vi.type, "standard");
  cr_expect_eq (strlen (vi.id), VOL_ID_LEN);
  cr_expect (vi.created >= before && vi.created <= time (NULL) + 1);
  cr_expect_eq (vi.allocated, 0);
  cr_expect_eq (vi.connections, 0);
  cr_expect_eq (vol_info_status (&vi), VOL_AVAILABLE);

  cr_assert_eq (vol_create (t_st, "d2", 8 * MiB, "premium", &vi, err, sizeof err), 0);
  cr_expect_str_eq (vi.type, "premium");
  cr_expect_eq (vol_create (t_st, "d3", 8 * MiB, "bad type", &vi, err, sizeof err), -EINVAL);
  cr_expect_eq (vol_create (t_st, "d5", 8 * MiB, "gold", &vi, err, sizeof err), -EINVAL);
  cr_expect (strstr (err, "standard, ssd or premium") != NULL, "%s", err);
  char long_type[33];
  memset (long_type, 't', 32); long_type[32] = '\0';
  cr_expect_eq (vol_create (t_st, "d4", 8 * MiB, long_type, &vi, err, sizeof err), -EINVAL);

  /* stat by name and by id */
  struct vol_info a, b;
  cr_assert_eq (vol_stat (t_st, "d1", &a, err, sizeof err), 0);
  cr_assert_eq (vol_stat (t_st, a.id, &b, err, sizeof err), 0);
  cr_expect_str_eq (b.name, "d1");
  err[0] = '\0';
  cr_expect_eq (vol_stat (t_st, "nope", &a, err, sizeof err), -ENOENT);
  cr_expect_neq (err[0], '\0');
}

Test (volume, create_size_validation)
{
  t_open_store (64 * MiB, 1 * MiB);
  static const uint64_t bad[] = { 0, 1000, 511, 1 * MiB + 1, VOL_MAX_SIZE + 512, UINT64_MAX };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    int r = vol_create (t_st, "v", bad[i], NULL, NULL, err, sizeof err);
    cr_expect_eq (r, -EINVAL, "size %llu: got %d", (unsigned long long) bad[i], r);
    cr_expect_neq (err[0], '\0');
    cr_expect_not_null (vol_size_invalid (bad[i]));
  }
  cr_expect_eq (t_pool ().volumes, 0);
  cr_expect_null (vol_size_invalid (512));
  cr_expect_null (vol_size_invalid (VOL_MAX_SIZE));

  /* a 10 TiB thin volume is instant and takes no pool space */
  int64_t t0 = t_now_ns ();
  t_create ("big", 10 * TiB);
  cr_expect_lt (t_now_ns () - t0, 500000000LL, "creating a 10T volume took too long");
  cr_expect_eq (t_pool ().allocated, 0);
  cr_expect_eq (t_allocated ("big"), 0);
  t_create ("max", VOL_MAX_SIZE);
  t_create ("tiny", 512);
  cr_expect_eq (t_pool ().allocated, 0);

  /* ... and takes a chunk only where it is written, far beyond the pool size */
  struct vol_session s;
  struct volume *v = t_open ("big", &s);
  cr_expect_eq (vol_size (v), 10 * TiB);
  cr_assert_eq (t_write_byte (v, 9 * TiB + 4096, 4096, 0x5a), 0);
  cr_expect_eq (t_allocated ("big"), 1 * MiB);
  cr_expect_eq (t_pool ().allocated, 1 * MiB);
  t_expect_bytes (v, 9 * TiB + 4096, 4096, 0x5a);
  t_expect_bytes (v, 9 * TiB, 4096, 0);
  vol_close (v, &s);
}

Test (volume, list_sorted_by_name)
{
  t_open_store (64 * MiB, 1 * MiB);
  const char *names[] = { "zeta", "alpha", "Mid", "beta-2", "beta-10", "0first" };
  for (size_t i = 0; i < 6; i++)
    t_create (names[i], (i + 1) * MiB);
  struct vol_info *list = NULL;
  size_t n = 0;
  cr_assert_eq (vol_list (t_st, &list, &n), 0);
  cr_assert_eq (n, 6);
  const char *want[] = { "0first", "Mid", "alpha", "beta-10", "beta-2", "zeta" };
  for (size_t i = 0; i < n; i++) {
    cr_expect_str_eq (list[i].name, want[i], "position %zu", i);
    for (size_t j = 0; j < 6; j++)
      if (strcmp (names[j], list[i].name) == 0)
        cr_expect_eq (list[i].size, (j + 1) * MiB);
  }
  free (list);
}

/* ---- I/O statistics ------------------------------------------------------- */
struct stats_adder {
  struct volume *v;
  unsigned slot;
};

static void *
stats_add_many (void *arg)
{
  struct stats_adder *a = arg;
  for (unsigned i = 0; i < 10000; i++) {
    vol_stats_add (a->v, a->slot, VOL_STAT_WRITE, 4096, 3, 2, false);
    if (i % 100 == 0)
      vol_stats_add (a->v, a->slot, VOL_STAT_WRITE, 4096, 5, 0, true);
    vol_stats_add (a->v, a->slot, VOL_STAT_READ, 512, 1, 1, false);
  }
  return NULL;
}

/* Threads add to their slots at once (two of them share one: 1 and
 * 1 + VOL_STAT_SLOTS); a reader gets the sums, failures without bytes. */
Test (volume, io_stats_add_up)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("s", 8 * MiB);
  struct vol_session sess;
  struct volume *v = t_open ("s", &sess);
  int64_t before = time (NULL);
  struct vol_info vi;
  struct vol_stats st;
  char err[200];
  cr_assert_eq (vol_stats_get (t_st, "s", &vi, &st, err, sizeof err), 0, "%s", err);
  cr_expect_str_eq (vi.name, "s");
  cr_expect (st.since <= before && st.since >= before - 60);
  for (unsigned k = 0; k < VOL_STAT_KINDS; k++)
    cr_expect (st.kind[k].ops == 0 && st.kind[k].bytes == 0 && st.kind[k].time_ns == 0
               && st.kind[k].storage_ns == 0);

  unsigned slots[] = { 0, 1, 2, 1 + VOL_STAT_SLOTS };
  pthread_t th[4];
  struct stats_adder a[4];
  for (unsigned i = 0; i < 4; i++) {
    a[i] = (struct stats_adder) { v, slots[i] };
    cr_assert_eq (pthread_create (&th[i], NULL, stats_add_many, &a[i]), 0);
  }
  for (unsigned i = 0; i < 4; i++)
    pthread_join (th[i], NULL);
  vol_stats_add (v, 0, VOL_STAT_KINDS, 1, 1, 1, false);   /* no such kind: ignored */

  cr_assert_eq (vol_stats_get (t_st, vi.id, NULL, &st, err, sizeof err), 0, "%s", err);
  cr_expect_eq (st.kind[VOL_STAT_WRITE].ops, 4 * 10100);
  cr_expect_eq (st.kind[VOL_STAT_WRITE].errors, 4 * 100);
  cr_expect_eq (st.kind[VOL_STAT_WRITE].bytes, 4 * 10000 * 4096ULL);
  cr_expect_eq (st.kind[VOL_STAT_WRITE].time_ns, 4 * (10000 * 3 + 100 * 5));
  cr_expect_eq (st.kind[VOL_STAT_WRITE].storage_ns, 4 * 10000 * 2);
  cr_expect_eq (st.kind[VOL_STAT_READ].storage_ns, 4 * 10000);
  cr_expect_eq (st.kind[VOL_STAT_READ].ops, 4 * 10000);
  cr_expect_eq (st.kind[VOL_STAT_READ].bytes, 4 * 10000 * 512ULL);
  cr_expect_eq (st.kind[VOL_STAT_FLUSH].ops, 0);
  cr_expect_str_eq (vol_stat_kind_name (VOL_STAT_ZERO), "zero");

  int64_t since = st.since;
  cr_expect_eq (vol_stats_get (t_st, "nope", &vi, &st, err, sizeof err), -ENOENT);
  cr_expect (strstr (err, "nope") != NULL, "%s", err);

  /* every volume's in one pass, by name, the same counts */
  t_create ("a-idle", 8 * MiB);
  struct vol_info_stats *all = NULL;
  size_t n = 0;
  cr_assert_eq (vol_stats_list (t_st, &all, &n), 0);
  cr_assert_eq (n, 2);
  cr_expect_str_eq (all[0].info.name, "a-idle");
  cr_expect_eq (all[0].stats.kind[VOL_STAT_WRITE].ops, 0);
  cr_expect_str_eq (all[1].info.name, "s");
  cr_expect_eq (all[1].stats.kind[VOL_STAT_WRITE].ops, 4 * 10100);
  cr_expect_eq (all[1].stats.kind[VOL_STAT_READ].bytes, 4 * 10000 * 512ULL);
  cr_expect_eq (all[1].stats.since, since);
  free (all);
  vol_close (v, &sess);
}

/* ---- data path --------------------------------------------------------------- */

Test (volume, read_unwritten_is_zero)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 16 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  uint32_t a = vol_dio_align (v);
  cr_expect (a >= 512 && (a & (a - 1)) == 0, "dio align %u", a);
  cr_expect (!vol_read_only (v));

  unsigned char *b = t_buf (3 * MiB);
  memset (b, 0xff, 3 * MiB);
  cr_assert_eq (t_run (v, VOL_OP_READ, 0, 512 * KiB, 3 * MiB, b), 0);
  cr_expect (t_all (b, 3 * MiB, 0), "a never-written range did not read as zeros");
  memset (b, 0xff, 4096);
  cr_assert_eq (t_run (v, VOL_OP_READ, 0, 12345, 77, b), 0);     /* unaligned */
  cr_expect (t_all (b, 77, 0));
  cr_expect (t_all (b + 77, 4096 - 77, 0xff), "read wrote past its length");
  /* zero-length requests complete at once */
  cr_expect_eq (t_run (v, VOL_OP_READ, 0, 0, 0, b), 0);
  free (b);
  cr_expect_eq (t_pool ().allocated, 0, "reads must not allocate");
  vol_close (v, &s);
}

/* READ with VOL_F_HOLE_OK: a range with no pool chunk at all is reported
 * as a hole and the buffer left alone; one that mixes data and holes is
 * filled, zeros included, whatever the buffer held before. */
Test (volume, read_hole_ok)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 16 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 2 * MiB, 4096, 0x11), 0);          /* chunk 2 */
  cr_assert_eq (t_write_byte (v, 4 * MiB - 4096, 4096, 0x22), 0);   /* chunk 3 */
  cr_assert_eq (t_write_byte (v, 7 * MiB - 4096, 4096, 0x44), 0);   /* chunk 6 */
  unsigned char *b = t_buf (4 * MiB);
  struct t_req r = { 0 };
  struct {
    uint64_t off;
    uint32_t len;
    bool hole;
  } cases[] = {
    { 0, 4096, true },                      /* never written */
    { 5 * MiB + 123, 1000, true },          /* unaligned */
    { 0, 2 * MiB, true },                   /* two whole chunks */
    { 2 * MiB + 4096, 8192, false },        /* a chunk with data: its zeros are read */
    { 1 * MiB, 3 * MiB, false },            /* hole, data, data: holes around and inside */
    { 3 * MiB, 4 * MiB, false },            /* data, hole, hole, data: holes between reads */
    { 2 * MiB - 100, 5000, false },         /* unaligned across hole and data */
    { 4 * MiB - 6000, 9000, false },        /* data, then the hole after it */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memset (b, 0xa5, 4 * MiB);
    t_prep (&r, v, VOL_OP_READ, VOL_F_HOLE_OK, cases[i].off, cases[i].len, b);
    t_submit (&r);
    struct t_req *rs[1] = { &r };
    t_wait (rs, 1);
    cr_assert_eq (r.io.result, 0, "case %zu", i);
    cr_expect_eq (r.io.hole, cases[i].hole, "case %zu: hole %d", i, r.io.hole);
    if (r.io.hole) {
      cr_expect (t_all (b, 4 * MiB, 0xa5), "case %zu: a hole read wrote the buffer", i);
      continue;
    }
    for (uint32_t k = 0; k < cases[i].len; k++) {
      uint64_t at = cases[i].off + k;
      int want = at >= 2 * MiB && at < 2 * MiB + 4096 ? 0x11
                 : at >= 4 * MiB - 4096 && at < 4 * MiB ? 0x22
                 : at >= 7 * MiB - 4096 && at < 7 * MiB ? 0x44 : 0;
      cr_assert_eq (b[k], want, "case %zu: byte %llu is 0x%02x, want 0x%02x", i,
                    (unsigned long long) at, b[k], want);
    }
    cr_expect (t_all (b + cases[i].len, 4 * MiB - cases[i].len, 0xa5), "case %zu: wrote past", i);
  }
  vol_io_release (&r.io);
  /* without the flag the zeros are always written */
  memset (b, 0xa5, 4096);
  cr_assert_eq (t_run (v, VOL_OP_READ, 0, 0, 4096, b), 0);
  cr_expect (t_all (b, 4096, 0));
  free (b);
  vol_close (v, &s);
}

/* An aligned write that covers a frozen chunk whole does not copy it: its
 * own data goes to the new chunk (no pool read), the snapshot keeps the old
 * one, and chunks the write only touches are copied as before. */
Test (volume, cow_whole_chunk_write)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 16 * MiB);
  struct vol_session s, ss;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 1 * MiB, 2 * MiB, 0x11), 0);       /* chunks 1, 2 */
  cr_assert_eq (t_write_byte (v, 6 * MiB, 1 * MiB, 0x66), 0);       /* chunk 6 */
  struct vol_snap_info si;
  char err[256] = "";
  cr_assert_eq (vol_snapshot_create (t_st, "v", "s1", &si, err, sizeof err), 0, "%s", err);

  /* chunk 1 whole, with FUA: no read of the old chunk (a read fault stays armed) */
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, EIO, 1), 0);
  unsigned char *b = t_buf (3 * MiB);
  memset (b, 0x33, 1 * MiB);
  cr_assert_eq (t_run (v, VOL_OP_WRITE, VOL_F_FUA, 1 * MiB, 1 * MiB, b), 0);
  /* chunk 2 whole and chunk 3 (never written) whole, in one write */
  memset (b, 0x44, 2 * MiB);
  cr_assert_eq (t_run (v, VOL_OP_WRITE, 0, 2 * MiB, 2 * MiB, b), 0);
  cr_expect_eq (t_run (v, VOL_OP_READ, 0, 1 * MiB, 4096, b), -EIO, "the fault was taken by a write");
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, 0, 0), 0);
  /* chunk 6 only in part (and chunk 5, a hole, whole): chunk 6 is copied */
  memset (b, 0x77, 1 * MiB + 8192);
  cr_assert_eq (t_run (v, VOL_OP_WRITE, 0, 5 * MiB, 1 * MiB + 8192, b), 0);
  free (b);

  t_expect_bytes (v, 1 * MiB, 1 * MiB, 0x33);
  t_expect_bytes (v, 2 * MiB, 2 * MiB, 0x44);
  t_expect_bytes (v, 5 * MiB, 1 * MiB + 8192, 0x77);
  t_expect_bytes (v, 6 * MiB + 8192, 1 * MiB - 8192, 0x66);
  struct volume *sv = t_open ("v@s1", &ss);
  t_expect_bytes (sv, 1 * MiB, 2 * MiB, 0x11);
  t_expect_bytes (sv, 3 * MiB, 3 * MiB, 0);
  t_expect_bytes (sv, 6 * MiB, 1 * MiB, 0x66);
  vol_close (sv, &ss);
  /* the volume's 1, 2, 3, 5, 6 and the snapshot's 1, 2, 6 */
  cr_expect_eq (t_pool ().allocated, 8 * MiB, "allocated %llu",
                (unsigned long long) t_pool ().allocated);

  /* frozen again: a write that covers chunk 1 whole from 512K into the
   * request, and chunks 0 and 2 in part (copied) */
  cr_assert_eq (vol_snapshot_create (t_st, "v", "s2", &si, err, sizeof err), 0, "%s", err);
  cr_assert_eq (t_write_byte (v, 0, 1 * MiB, 0x55), 0);        /* chunk 0: own data, then frozen */
  cr_assert_eq (vol_snapshot_create (t_st, "v", "s3", &si, err, sizeof err), 0, "%s", err);
  cr_assert_eq (t_write_byte (v, 512 * KiB, 1536 * KiB + 8192, 0x88), 0);
  t_expect_bytes (v, 0, 512 * KiB, 0x55);
  t_expect_bytes (v, 512 * KiB, 1536 * KiB + 8192, 0x88);
  t_expect_bytes (v, 2 * MiB + 8192, 2 * MiB - 8192, 0x44);
  sv = t_open ("v@s3", &ss);
  t_expect_bytes (sv, 0, 1 * MiB, 0x55);
  t_expect_bytes (sv, 1 * MiB, 1 * MiB, 0x33);
  t_expect_bytes (sv, 2 * MiB, 2 * MiB, 0x44);
  vol_close (sv, &ss);

  /* a whole-chunk write that fails on the disk changes nothing and keeps no chunk */
  uint64_t before = t_pool ().allocated;
  b = t_buf (1 * MiB);
  memset (b, 0x99, 1 * MiB);
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_WRITE, EIO, 1), 0);
  cr_expect_eq (t_run (v, VOL_OP_WRITE, 0, 3 * MiB, 1 * MiB, b), -EIO);
  t_expect_bytes (v, 3 * MiB, 1 * MiB, 0x44);
  /* one from an unaligned buffer is copied first (here the copy's read fails) */
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, EIO, 1), 0);
  unsigned char *odd = t_buf (1 * MiB + 1);
  memset (odd + 1, 0x99, 1 * MiB);
  cr_expect_eq (t_run (v, VOL_OP_WRITE, 0, 3 * MiB, 1 * MiB, odd + 1), -EIO);
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, 0, 0), 0);
  t_expect_bytes (v, 3 * MiB, 1 * MiB, 0x44);
  t_wait_free (t_pool ().capacity - before);
  free (odd);
  free (b);
  vol_close (v, &s);
  t_close_store ();
  char report[4096] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "check: %s", report);
  cr_expect (strstr (report, "(stopped cleanly)") != NULL, "check: %s", report);
}

/* A context's own buffers for a chunk's copy (vol_ioctx.buf_get): every
 * one taken is given back, after a copy, a failed copy and a buffer the
 * context handed out unaligned (the copy then takes the heap's). */
static unsigned t_bufs_got, t_bufs_put, t_bufs_odd;

static void *
t_ctx_buf_get (struct vol_ioctx *ctx, size_t len, size_t *cap)
{
  (void) ctx;
  char *b = t_buf (len + 4096);
  t_bufs_got++;
  *cap = len + 4096;
  if (t_bufs_odd) {                 /* not aligned for O_DIRECT */
    t_bufs_odd--;
    return b + 512 + 1;
  }
  return b;
}

static void
t_ctx_buf_put (struct vol_ioctx *ctx, void *buf, size_t cap)
{
  (void) ctx;
  cr_assert_eq (cap % 4096, 0);
  t_bufs_put++;
  uintptr_t p = (uintptr_t) buf;
  free ((void *) (p & ~(uintptr_t) 4095));
}

Test (volume, cow_buffers_from_context)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_ctx.buf_get = t_ctx_buf_get;
  t_ctx.buf_put = t_ctx_buf_put;
  t_create ("v", 8 * MiB);
  struct vol_session s, ss;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 4 * MiB, 0x11), 0);
  struct vol_snap_info si;
  char err[256] = "";
  cr_assert_eq (vol_snapshot_create (t_st, "v", "s1", &si, err, sizeof err), 0, "%s", err);
  /* two chunks copied, in one write */
  cr_assert_eq (t_write_byte (v, 1 * MiB - 4096, 8192, 0x22), 0);
  cr_expect_eq (t_bufs_got, 2);
  cr_expect_eq (t_bufs_put, 2);
  /* a copy whose read fails */
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, EIO, 1), 0);
  cr_expect_eq (t_write_byte (v, 2 * MiB, 4096, 0x33), -EIO);
  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, 0, 0), 0);
  cr_expect_eq (t_bufs_got, 3);
  cr_expect_eq (t_bufs_put, 3);
  /* the context hands out an unaligned buffer: given back, the heap's used */
  t_bufs_odd = 1;
  cr_assert_eq (t_write_byte (v, 3 * MiB + 4096, 4096, 0x44), 0);
  cr_expect_eq (t_bufs_got, 4);
  cr_expect_eq (t_bufs_put, 4);
  t_expect_bytes (v, 0, 1 * MiB - 4096, 0x11);
  t_expect_bytes (v, 1 * MiB - 4096, 8192, 0x22);
  t_expect_bytes (v, 1 * MiB + 4096, 2 * MiB, 0x11);
  t_expect_bytes (v, 3 * MiB + 4096, 4096, 0x44);
  t_expect_bytes (v, 3 * MiB + 8192, 1 * MiB - 8192, 0x11);
  struct volume *sv = t_open ("v@s1", &ss);
  t_expect_bytes (sv, 0, 4 * MiB, 0x11);
  vol_close (sv, &ss);
  vol_close (v, &s);
  t_close_store ();
}

/* The bytes of blocks the filesystem holds for the pool file. */
static uint64_t
t_pool_file_bytes (void)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/pool.dat", t_dir);
  struct stat sb;
  cr_assert_eq (stat (path, &sb), 0);
  return (uint64_t) sb.st_blocks * 512;
}

/* The allocator has the filesystem allocate the chunks it hands out next
 * (store.c, "allocating ahead"): after one 4 KiB write to a new store the
 * pool file holds the blocks of the first two groups of 256 MiB, which
 * read as zeros, and no more; a chunk from the second group asks for the
 * third. */
Test (volume, pool_allocated_ahead)
{
  t_open_store (1024 * MiB, 1 * MiB);
  t_create ("v", 512 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_expect_lt (t_pool_file_bytes (), 1 * MiB, "a new pool holds no blocks");
  cr_assert_eq (t_write_byte (v, 400 * MiB, 4096, 0x5a), 0);
  t_settle (20);                    /* the allocation ahead included */
  uint64_t held = t_pool_file_bytes ();
  bool ahead = held >= 4 * MiB;
  if (!ahead)
    cr_log_warn ("the filesystem under %s did not allocate ahead", t_dir);
  else {
    cr_expect_geq (held, 512 * MiB, "pool file holds %llu bytes", (unsigned long long) held);
    cr_expect_lt (held, 514 * MiB, "pool file holds %llu bytes", (unsigned long long) held);
  }
  t_expect_bytes (v, 0, 4 * MiB, 0);
  t_expect_bytes (v, 400 * MiB, 4096, 0x5a);
  t_expect_bytes (v, 400 * MiB + 4096, 1 * MiB - 4096, 0);
  for (unsigned i = 0; i < 256; i++)   /* pool chunks 1 to 256: into the second group */
    cr_assert_eq (t_write_byte (v, (uint64_t) i * MiB, 4096, 0x11), 0);
  t_settle (20);
  if (ahead)
    cr_expect_geq (t_pool_file_bytes (), 768 * MiB, "pool file holds %llu bytes",
                   (unsigned long long) t_pool_file_bytes ());
  t_expect_bytes (v, 255 * MiB, 4096, 0x11);
  t_expect_bytes (v, 255 * MiB + 4096, 1 * MiB - 4096, 0);
  vol_close (v, &s);
  t_close_store ();
  char report[4096] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "check: %s", report);
}

Test (volume, aligned_write_read_and_allocation)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 16 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  unsigned seed = 1;

  /* 4K at the start of chunk 0 */
  unsigned char *d = t_buf (4 * MiB);
  t_fill_random (d, 4096, &seed);
  cr_assert_eq (t_write (v, 0, 4096, d), 0);
  cr_expect_eq (t_allocated ("v"), 1 * MiB);
  cr_expect_eq (t_pool ().free, 63 * MiB);
  t_expect_model (v, 0, d, 4096);
  t_expect_bytes (v, 4096, 1 * MiB - 4096, 0);   /* rest of the fresh chunk */

  /* a second 4K in the same chunk allocates nothing */
  t_fill_random (d, 4096, &seed);
  cr_assert_eq (t_write (v, 512 * KiB, 4096, d), 0);
  cr_expect_eq (t_allocated ("v"), 1 * MiB);
  t_expect_model (v, 512 * KiB, d, 4096);

  /* 1M across the boundary of chunks 2 and 3 */
  t_fill_random (d, 1 * MiB, &seed);
  cr_assert_eq (t_write (v, 2 * MiB + 512 * KiB, 1 * MiB, d), 0);
  cr_expect_eq (t_allocated ("v"), 3 * MiB);
  cr_expect_eq (t_pool ().allocated, 3 * MiB);
  t_expect_model (v, 2 * MiB + 512 * KiB, d, 1 * MiB);
  t_expect_bytes (v, 2 * MiB, 512 * KiB, 0);
  t_expect_bytes (v, 3 * MiB + 512 * KiB, 512 * KiB, 0);
  t_expect_bytes (v, 1 * MiB, 1 * MiB, 0);       /* chunk 1 untouched */

  /* 4M spanning four chunks, two of them new, then overwrite the middle */
  t_fill_random (d, 4 * MiB, &seed);
  cr_assert_eq (t_write (v, 2 * MiB, 4 * MiB, d), 0);
  cr_expect_eq (t_allocated ("v"), 5 * MiB);
  t_expect_model (v, 2 * MiB, d, 4 * MiB);
  unsigned char *m = t_buf (64 * KiB);
  t_fill_random (m, 64 * KiB, &seed);
  cr_assert_eq (t_write (v, 4 * MiB - 32 * KiB, 64 * KiB, m), 0);
  memcpy (d + 2 * MiB - 32 * KiB, m, 64 * KiB);
  t_expect_model (v, 2 * MiB, d, 4 * MiB);
  cr_expect_eq (t_allocated ("v"), 5 * MiB);

  /* the last bytes of the volume */
  cr_assert_eq (t_write_byte (v, 16 * MiB - 4096, 4096, 0xee), 0);
  t_expect_bytes (v, 16 * MiB - 4096, 4096, 0xee);
  cr_expect_eq (t_allocated ("v"), 6 * MiB);
  free (m);
  free (d);
  vol_close (v, &s);
}

Test (volume, unaligned_writes_match_model)
{
  t_open_store (64 * MiB, 1 * MiB);
  const uint64_t size = 4 * MiB;
  t_create ("v", size);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  unsigned char *model = calloc (1, size);
  unsigned seed = 7;

  /* background so that read-modify-write has something to preserve */
  unsigned char *bg = t_buf (1 * MiB);
  t_fill_random (bg, 1 * MiB, &seed);
  cr_assert_eq (t_write (v, 0, 1 * MiB, bg), 0);
  memcpy (model, bg, 1 * MiB);
  free (bg);

  struct { uint64_t off; uint32_t len; } w[] = {
    { 1, 1 }, { 513, 1 }, { 4095, 1 }, { 4097, 1 },      /* single bytes at odd offsets */
    { 512 - 50, 100 }, { 4096 - 50, 100 }, { 8192 - 1, 2 },   /* across 512 and 4096 */
    { 1 * MiB - 3, 7 }, { 2 * MiB - 4000, 9000 },        /* across chunk boundaries */
    { 1 * MiB + 1, 1 }, { 3 * MiB + 777, 4096 },          /* into fresh chunks */
    { 4095, 4098 }, { 100, 1 * MiB + 100 },              /* aligned middle, both edges */
    { size - 1, 1 }, { 0, 1 },
  };
  unsigned char *d = t_buf (2 * MiB);
  for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
    t_fill_random (d, w[i].len, &seed);
    int r = t_write (v, w[i].off, w[i].len, d);
    cr_assert_eq (r, 0, "write #%zu at %llu+%u: %s", i, (unsigned long long) w[i].off,
                  w[i].len, strerror (-r));
    memcpy (model + w[i].off, d, w[i].len);
    /* the neighbourhood reads back exactly, through aligned and unaligned reads */
    uint64_t lo = w[i].off > 5000 ? w[i].off - 5000 : 0;
    uint64_t hi = w[i].off + w[i].len + 5000 < size ? w[i].off + w[i].len + 5000 : size;
    t_expect_model (v, lo, model + lo, (uint32_t) (hi - lo));
    t_expect_model (v, w[i].off, model + w[i].off, w[i].len);
  }
  t_expect_model (v, 0, model, (uint32_t) size);
  cr_expect_eq (t_allocated ("v"), 4 * MiB);

  /* an aligned range from an unaligned buffer */
  t_fill_random (d, 8192 + 1, &seed);
  cr_assert_eq (t_run (v, VOL_OP_WRITE, 0, 16384, 8192, d + 1), 0);
  memcpy (model + 16384, d + 1, 8192);
  unsigned char *rb = t_buf (8192 + 1);
  cr_assert_eq (t_run (v, VOL_OP_READ, 0, 16384, 8192, rb + 1), 0);
  cr_expect_eq (memcmp (rb + 1, model + 16384, 8192), 0);
  free (rb);
  t_expect_model (v, 0, model, (uint32_t) size);
  free (d);
  free (model);
  vol_close (v, &s);
}

/* Unaligned writes to the same block, all submitted before any completes:
 * read-modify-write must serialise them, or one undoes another. */
Test (volume, concurrent_unaligned_writes_same_block)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  unsigned char *model = calloc (1, 64 * KiB);
  unsigned seed = 3;
  /* an existing background in the first rounds; a fresh chunk in the last */
  for (int round = 0; round < 3; round++) {
    uint64_t base = round == 2 ? 5 * MiB : 0;
    if (round == 0) {
      unsigned char *bg = t_buf (64 * KiB);
      t_fill_random (bg, 64 * KiB, &seed);
      cr_assert_eq (t_write (v, base, 64 * KiB, bg), 0);
      memcpy (model, bg, 64 * KiB);
      free (bg);
    }
    else if (round == 2)
      memset (model, 0, 64 * KiB);

    enum { N = 8 };
    struct t_req reqs[N];
    struct t_req *rs[N];
    unsigned char *bufs[N];
    /* byte ranges are disjoint but share 4K blocks 0 and 1 (and 512-byte
     * sectors, for a pool with 512-byte alignment) */
    static const struct { uint32_t off, len; } w[N] = {
      { 10, 20 }, { 100, 1 }, { 511, 2 }, { 1000, 3000 },
      { 4090, 12 }, { 4102, 100 }, { 6000, 2192 }, { 0, 5 },
    };
    memset (reqs, 0, sizeof reqs);
    for (int i = 0; i < N; i++) {
      bufs[i] = t_buf (w[i].len);
      t_fill_random (bufs[i], w[i].len, &seed);
      t_prep (&reqs[i], v, VOL_OP_WRITE, 0, base + w[i].off, w[i].len, bufs[i]);
      rs[i] = &reqs[i];
    }
    for (int i = 0; i < N; i++) {
      bool now = t_submit (&reqs[i]);
      cr_expect (!now, "write %d completed before the ring ran", i);
    }
    t_wait (rs, N);
    for (int i = 0; i < N; i++) {
      cr_expect_eq (reqs[i].io.result, 0, "write %d: %s", i, strerror (-reqs[i].io.result));
      memcpy (model + w[i].off, bufs[i], w[i].len);
      vol_io_release (&reqs[i].io);
      free (bufs[i]);
    }
    t_expect_model (v, base, model, 64 * KiB);
  }
  free (model);
  vol_close (v, &s);
}

/* Many unaligned writes to different places in flight at once. */
Test (volume, concurrent_unaligned_writes_spread)
{
  t_open_store (64 * MiB, 1 * MiB);
  const uint64_t size = 4 * MiB;
  t_create ("v", size);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  unsigned char *model = calloc (1, size);
  unsigned seed = 11;
  enum { N = 64 };
  struct t_req reqs[N];
  struct t_req *rs[N];
  unsigned char *bufs[N];
  memset (reqs, 0, sizeof reqs);
  /* non-overlapping: writer i owns bytes [i*64K + x, i*64K + x + len) */
  for (int i = 0; i < N; i++) {
    uint64_t off = (uint64_t) i * 64 * KiB + (unsigned) rand_r (&seed) % 4096;
    uint32_t len = 1 + (unsigned) rand_r (&seed) % 20000;
    bufs[i] = t_buf (len);
    t_fill_random (bufs[i], len, &seed);
    memcpy (model + off, bufs[i], len);
    t_prep (&reqs[i], v, VOL_OP_WRITE, 0, off, len, bufs[i]);
    rs[i] = &reqs[i];
  }
  for (int i = 0; i < N; i++)
    t_submit (&reqs[i]);
  t_wait (rs, N);
  for (int i = 0; i < N; i++) {
    cr_expect_eq (reqs[i].io.result, 0, "write %d: %s", i, strerror (-reqs[i].io.result));
    vol_io_release (&reqs[i].io);
    free (bufs[i]);
  }
  t_expect_model (v, 0, model, (uint32_t) size);
  free (model);
  vol_close (v, &s);
}

/* ---- trim and write-zeroes ------------------------------------------------------ */

/* Read-ahead's marks (vol_write_mark): a write, trim or write-zeroes makes
 * what was read ahead of it stale, in the same 1 MiB region or across two;
 * writes elsewhere leave it current; one in flight allows no mark. */
Test (volume, write_marks_follow_regions)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 16 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  const uint64_t at = 4 * MiB + 256 * KiB, span = 10 * MiB - 64 * KiB;   /* regions 4; 9, 10 */
  uint64_t m = vol_write_mark (v, at, 128 * KiB), m2 = vol_write_mark (v, span, 128 * KiB);
  cr_assert_neq (m, 0);
  cr_assert_neq (m2, 0);
  cr_assert_eq (t_write_byte (v, 8 * MiB, 64 * KiB, 0x11), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 6 * MiB, 1 * MiB, NULL), 0);
  cr_assert_eq (t_run (v, VOL_OP_ZERO, 0, 2 * MiB, 4096, NULL), 0);
  cr_expect (!vol_written_since (v, at, 128 * KiB, m), "writes in other regions");
  cr_expect (!vol_written_since (v, span, 128 * KiB, m2), "writes in other regions");

  /* in the range's region, though not in the range */
  cr_assert_eq (t_write_byte (v, 4 * MiB + 900 * KiB, 100, 0x22), 0);
  cr_expect (vol_written_since (v, at, 128 * KiB, m));
  cr_expect (!vol_written_since (v, span, 128 * KiB, m2));
  m = vol_write_mark (v, at, 128 * KiB);
  cr_expect (!vol_written_since (v, at, 128 * KiB, m));
  /* a range across two regions: a write-zeroes across both, a trim in one */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, 0, 10 * MiB - 4096, 8192, NULL), 0);
  cr_expect (vol_written_since (v, span, 128 * KiB, m2));
  cr_expect (!vol_written_since (v, at, 128 * KiB, m));
  m2 = vol_write_mark (v, span, 128 * KiB);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 9 * MiB, 4096, NULL), 0);
  cr_expect (vol_written_since (v, span, 128 * KiB, m2), "a trim in the first region");
  m2 = vol_write_mark (v, span, 128 * KiB);
  cr_assert_eq (t_write_byte (v, 10 * MiB + 4096, 4096, 0x44), 0);
  cr_expect (vol_written_since (v, span, 128 * KiB, m2), "a write in the second region");

  /* a write in flight: no mark for its region, marks for others */
  void *b = t_buf (4096);
  memset (b, 0x33, 4096);
  struct t_req r = { 0 };
  t_prep (&r, v, VOL_OP_WRITE, 0, 4 * MiB, 4096, b);
  cr_assert (!t_submit (&r), "the write completed before the ring ran");
  cr_expect_eq (vol_write_mark (v, at, 128 * KiB), 0);
  cr_expect_neq (vol_write_mark (v, span, 128 * KiB), 0);
  m = vol_write_mark (v, 12 * MiB, 128 * KiB);
  cr_expect_neq (m, 0);
  struct t_req *rs[1] = { &r };
  t_wait (rs, 1);
  cr_assert_eq (r.io.result, 0);
  vol_io_release (&r.io);
  free (b);
  cr_expect_neq (vol_write_mark (v, at, 128 * KiB), 0);
  cr_expect (!vol_written_since (v, 12 * MiB, 128 * KiB, m));
  cr_expect (vol_written_since (v, 12 * MiB, 128 * KiB, 0), "no mark is never current");

  /* a trim of the whole volume reaches every region */
  m = vol_write_mark (v, 15 * MiB, 4096);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 0, 16 * MiB, NULL), 0);
  cr_expect (vol_written_since (v, 15 * MiB, 4096, m));
  vol_close (v, &s);
}

/* Fault injection's delay: a write waits before it starts, in flight all
 * the while (read-ahead makes no mark for its region), then succeeds. */
Test (volume, fault_delay_holds_a_write)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (vol_fault_delay ("v", VOL_OP_WRITE, 0, 1), -EINVAL);
  cr_assert_eq (vol_fault_delay ("v", VOL_OP_FLUSH, 10, 1), -EINVAL);
  cr_assert_eq (vol_fault_delay ("v", VOL_OP_WRITE, 300, 2), 0);
  enum { N = 2 };
  struct t_req reqs[N] = { 0 };
  struct t_req *rs[N];
  void *bufs[N];
  int64_t t0 = t_now_ns ();
  for (int i = 0; i < N; i++) {
    bufs[i] = t_buf (4096);
    memset (bufs[i], 0x5a + i, 4096);
    t_prep (&reqs[i], v, VOL_OP_WRITE, 0, (uint64_t) (2 + i) * MiB, 4096, bufs[i]);
    rs[i] = &reqs[i];
    cr_assert (!t_submit (&reqs[i]));
  }
  for (int i = 0; i < 5; i++)
    t_turn (10);
  cr_expect_eq (reqs[0].done + reqs[1].done, 0, "a delayed write is done already");
  cr_expect_eq (vol_write_mark (v, 2 * MiB, 4096), 0);
  t_wait (rs, N);
  cr_expect_geq (t_now_ns () - t0, 300 * 1000000LL, "the writes did not wait");
  for (int i = 0; i < N; i++) {
    cr_assert_eq (reqs[i].io.result, 0, "write %d: %s", i, strerror (-reqs[i].io.result));
    vol_io_release (&reqs[i].io);
    free (bufs[i]);
  }
  t_settle (10);
  t_expect_bytes (v, 2 * MiB, 4096, 0x5a);
  t_expect_bytes (v, 3 * MiB, 4096, 0x5b);
  cr_expect_neq (vol_write_mark (v, 2 * MiB, 4096), 0);
  /* the two were the ones delayed: the next write is not, and does not fail */
  cr_assert_eq (t_write_byte (v, 4 * MiB, 4096, 0x66), 0);
  t_expect_bytes (v, 4 * MiB, 4096, 0x66);
  vol_close (v, &s);
}

Test (volume, trim_whole_chunk_frees_it)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 3 * MiB, 0x11), 0);
  cr_expect_eq (t_pool ().free, 61 * MiB);
  cr_expect_eq (t_allocated ("v"), 3 * MiB);

  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 1 * MiB, 1 * MiB, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 2 * MiB, "the trimmed chunk is still mapped");
  t_wait_free (62 * MiB);
  t_expect_bytes (v, 1 * MiB, 1 * MiB, 0);
  t_expect_bytes (v, 0, 1 * MiB, 0x11);
  t_expect_bytes (v, 2 * MiB, 1 * MiB, 0x11);

  /* trimming a hole, or a whole range with holes, is fine */
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 1 * MiB, 1 * MiB, NULL), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 0, 8 * MiB, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 0);
  t_wait_free (64 * MiB);
  t_expect_bytes (v, 0, 4 * MiB, 0);

  /* a freed chunk is reused and reads as zeros except what was written */
  cr_assert_eq (t_write_byte (v, 7 * MiB + 4096, 4096, 0x22), 0);
  t_expect_bytes (v, 7 * MiB, 4096, 0);
  t_expect_bytes (v, 7 * MiB + 8192, 1 * MiB - 8192, 0);
  t_expect_bytes (v, 7 * MiB + 4096, 4096, 0x22);
  vol_close (v, &s);
}

Test (volume, trim_partial_keeps_the_rest)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 4 * MiB, 0x33), 0);

  /* aligned inside a chunk, unaligned, and across a chunk boundary */
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 64 * KiB, 64 * KiB, NULL), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 1 * MiB + 1000, 3000, NULL), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 3 * MiB - 5000, 10000, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 4 * MiB, "a partial trim must not unmap the chunk");
  cr_expect_eq (t_pool ().free, 60 * MiB);

  t_expect_bytes (v, 0, 64 * KiB, 0x33);
  t_expect_bytes (v, 64 * KiB, 64 * KiB, 0);
  t_expect_bytes (v, 128 * KiB, 1 * MiB - 128 * KiB + 1000, 0x33);
  t_expect_bytes (v, 1 * MiB + 1000, 3000, 0);
  t_expect_bytes (v, 1 * MiB + 4000, 2 * MiB - 4000 - 5000, 0x33);
  t_expect_bytes (v, 3 * MiB - 5000, 10000, 0);
  t_expect_bytes (v, 3 * MiB + 5000, 1 * MiB - 5000, 0x33);

  /* a trim covering one whole chunk and parts of two unmaps only the whole one */
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 512 * KiB, 2 * MiB, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 3 * MiB);
  t_wait_free (61 * MiB);
  t_expect_bytes (v, 0, 64 * KiB, 0x33);
  t_expect_bytes (v, 512 * KiB, 2 * MiB, 0);
  t_expect_bytes (v, 3 * MiB + 5000, 1 * MiB - 5000, 0x33);
  vol_close (v, &s);
}

/* Can the test directory's filesystem zero a range (tmpfs cannot)? */
static bool
t_zeroes_range (void)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/zero-probe", t_dir);
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  cr_assert_geq (fd, 0);
  bool zeroes = fallocate (fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
  close (fd);
  unlink (path);
  return zeroes;
}

/* A trim of part of a chunk in use zeroes the range and keeps its blocks
 * in the pool file.  Where zeroing fails for want of space it punches that
 * once; where the filesystem cannot zero a range it punches, then and for
 * every partial trim after (both failures made up here with faults). */
Test (volume, trim_partial_keeps_blocks)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 2 * MiB, 0x55), 0);
  t_settle (10);
  uint64_t held = t_pool_file_bytes ();
  if (!t_zeroes_range ()) {
    cr_log_warn ("%s cannot zero a range: partial trims punch there, nothing to check", t_dir);
    vol_close (v, &s);
    return;
  }

  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 64 * KiB, 64 * KiB, NULL), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 1 * MiB + 1000, 3000, NULL), 0);
  /* (the filesystem's own extent blocks may add a block or two) */
  cr_expect_geq (t_pool_file_bytes (), held, "a partial trim gave blocks back");
  t_expect_bytes (v, 0, 64 * KiB, 0x55);
  t_expect_bytes (v, 64 * KiB, 64 * KiB, 0);
  t_expect_bytes (v, 128 * KiB, 1 * MiB - 128 * KiB + 1000, 0x55);
  t_expect_bytes (v, 1 * MiB + 1000, 3000, 0);
  t_expect_bytes (v, 1 * MiB + 4000, 1 * MiB - 4000, 0x55);

  /* zeroing that fails for want of space punches this one trim */
  cr_assert_eq (vol_fault_set ("v", VOL_OP_TRIM, ENOSPC, 1), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 768 * KiB, 64 * KiB, NULL), 0);
  held = t_pool_file_bytes ();
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 832 * KiB, 64 * KiB, NULL), 0);
  cr_expect_geq (t_pool_file_bytes (), held, "a failed zeroing made later trims punch");
  t_expect_bytes (v, 768 * KiB, 128 * KiB, 0);
  t_expect_bytes (v, 896 * KiB, 128 * KiB, 0x55);

  cr_assert_eq (vol_fault_set ("v", VOL_OP_TRIM, EOPNOTSUPP, 1), 0);
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 256 * KiB, 64 * KiB, NULL), 0);
  uint64_t punched = t_pool_file_bytes ();
  cr_expect_lt (punched, held - 32 * KiB, "the fallback did not punch");
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 512 * KiB, 64 * KiB, NULL), 0);
  cr_expect_lt (t_pool_file_bytes (), punched - 32 * KiB, "later partial trims did not punch");
  t_expect_bytes (v, 192 * KiB, 64 * KiB, 0x55);
  t_expect_bytes (v, 256 * KiB, 64 * KiB, 0);
  t_expect_bytes (v, 320 * KiB, 192 * KiB, 0x55);
  t_expect_bytes (v, 512 * KiB, 64 * KiB, 0);
  t_expect_bytes (v, 576 * KiB, 192 * KiB, 0x55);

  cr_assert_eq (vol_fault_set (NULL, VOL_OP_READ, 0, 0), 0);
  vol_close (v, &s);
}

/* WRITE_ZEROES with NO_HOLE where the filesystem cannot zero a range (made
 * up with a fault): the range is punched and allocated again, so it reads
 * zeros and keeps its blocks, with or without FAST_ZERO; the first such
 * zero, and every later one, succeeds. */
Test (volume, zero_no_hole_without_zero_range)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 2 * MiB, 0x66), 0);
  t_settle (10);
  uint64_t held = t_pool_file_bytes ();

  /* (where the filesystem really cannot zero, the fault is not needed:
   * it would hit the punch that follows) */
  if (t_zeroes_range ())
    cr_assert_eq (vol_fault_set ("v", VOL_OP_ZERO, EOPNOTSUPP, 1), 0);
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE, 64 * KiB, 64 * KiB, NULL), 0);
  cr_expect_eq (vol_fault_set (NULL, VOL_OP_READ, 0, 0), 0);
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE | VOL_F_FAST_ZERO, 1 * MiB + 1000,
                       3000, NULL), 0);
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE | VOL_F_FUA, 512 * KiB, 128 * KiB,
                       NULL), 0);
  cr_expect_geq (t_pool_file_bytes (), held, "a NO_HOLE zero left a hole");
  t_expect_bytes (v, 0, 64 * KiB, 0x66);
  t_expect_bytes (v, 64 * KiB, 64 * KiB, 0);
  t_expect_bytes (v, 128 * KiB, 384 * KiB, 0x66);
  t_expect_bytes (v, 512 * KiB, 128 * KiB, 0);
  t_expect_bytes (v, 640 * KiB, 384 * KiB + 1000, 0x66);
  t_expect_bytes (v, 1 * MiB + 1000, 3000, 0);
  t_expect_bytes (v, 1 * MiB + 4000, 1 * MiB - 4000, 0x66);

  /* a zero without NO_HOLE punches, and the blocks go */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, 0, 1 * MiB + 256 * KiB, 256 * KiB, NULL), 0);
  cr_expect_lt (t_pool_file_bytes (), held - 128 * KiB, "a zero without NO_HOLE kept blocks");
  t_expect_bytes (v, 1 * MiB + 256 * KiB, 256 * KiB, 0);
  t_expect_bytes (v, 1 * MiB + 512 * KiB, 512 * KiB, 0x66);
  vol_close (v, &s);
}

Test (volume, write_zeroes)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 4 * MiB, 0x44), 0);
  cr_expect_eq (t_pool ().free, 60 * MiB);

  /* NO_HOLE: a whole chunk stays allocated and reads zeros */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE, 0, 1 * MiB, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 4 * MiB);
  t_settle (10);
  cr_expect_eq (t_pool ().free, 60 * MiB);
  t_expect_bytes (v, 0, 1 * MiB, 0);
  t_expect_bytes (v, 1 * MiB, 1 * MiB, 0x44);

  /* NO_HOLE, partial and unaligned */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE, 1 * MiB + 3, 5000, NULL), 0);
  t_expect_bytes (v, 1 * MiB, 3, 0x44);
  t_expect_bytes (v, 1 * MiB + 3, 5000, 0);
  t_expect_bytes (v, 1 * MiB + 5003, 4096, 0x44);

  /* NO_HOLE on a hole allocates it (the space is reserved) and reads zeros */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE, 6 * MiB, 1 * MiB, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 5 * MiB);
  t_expect_bytes (v, 6 * MiB, 1 * MiB, 0);

  /* without NO_HOLE, a whole chunk is unmapped */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, 0, 2 * MiB, 1 * MiB, NULL), 0);
  cr_expect_eq (t_allocated ("v"), 4 * MiB);
  t_wait_free (60 * MiB);
  t_expect_bytes (v, 2 * MiB, 1 * MiB, 0);
  t_expect_bytes (v, 3 * MiB, 1 * MiB, 0x44);

  /* FAST_ZERO succeeds: zeroing never writes data here */
  cr_assert_eq (t_run (v, VOL_OP_ZERO, VOL_F_FAST_ZERO, 3 * MiB + 4096, 8192, NULL), 0);
  t_expect_bytes (v, 3 * MiB + 4096, 8192, 0);
  t_expect_bytes (v, 3 * MiB, 4096, 0x44);
  t_expect_bytes (v, 3 * MiB + 12288, 4096, 0x44);
  vol_close (v, &s);
}

/* ---- out of space ------------------------------------------------------------- */

Test (volume, enospc_and_recovery)
{
  t_open_store (4 * MiB, 1 * MiB);
  cr_assert_eq (t_pool ().capacity, 4 * MiB);
  t_create ("a", 8 * MiB);
  t_create ("b", 8 * MiB);
  struct vol_session sa, sb;
  struct volume *a = t_open ("a", &sa);
  struct volume *b = t_open ("b", &sb);
  cr_assert_eq (t_write_byte (a, 0, 1 * MiB, 0xa1), 0);
  cr_assert_eq (t_write_byte (a, 1 * MiB, 1 * MiB, 0xa2), 0);
  cr_assert_eq (t_write_byte (b, 0, 1 * MiB, 0xb1), 0);
  cr_assert_eq (t_write_byte (b, 5 * MiB, 4096, 0xb2), 0);
  cr_expect_eq (t_pool ().free, 0);

  /* a fifth chunk: aligned, unaligned, and write-zeroes that must allocate */
  cr_expect_eq (t_write_byte (a, 2 * MiB, 4096, 0xa3), -ENOSPC);
  cr_expect_eq (t_write_byte (a, 3 * MiB + 1, 10, 0xa3), -ENOSPC);
  cr_expect_eq (t_run (a, VOL_OP_ZERO, VOL_F_NO_HOLE, 4 * MiB, 4096, NULL), -ENOSPC);
  cr_expect_eq (t_write_byte (b, 7 * MiB, 1 * MiB, 0xb3), -ENOSPC);
  cr_expect_eq (t_allocated ("a"), 2 * MiB);
  cr_expect_eq (t_allocated ("b"), 2 * MiB);

  /* writes to allocated chunks and all reads still work */
  cr_assert_eq (t_write_byte (a, 1 * MiB + 4096, 4096, 0xa4), 0);
  t_expect_bytes (a, 0, 1 * MiB, 0xa1);
  t_expect_bytes (a, 1 * MiB + 4096, 4096, 0xa4);
  t_expect_bytes (a, 2 * MiB, 1 * MiB, 0);
  t_expect_bytes (b, 0, 1 * MiB, 0xb1);
  t_expect_bytes (b, 5 * MiB, 4096, 0xb2);

  /* a trim gives a chunk back; then the write succeeds */
  cr_assert_eq (t_run (b, VOL_OP_TRIM, 0, 0, 1 * MiB, NULL), 0);
  t_wait_free (1 * MiB);
  cr_assert_eq (t_write_byte (a, 2 * MiB, 4096, 0xa3), 0);
  cr_expect_eq (t_pool ().free, 0);
  t_expect_bytes (a, 2 * MiB, 4096, 0xa3);
  t_expect_bytes (a, 2 * MiB + 4096, 4096, 0);   /* the reused chunk has no old data */
  t_expect_bytes (b, 0, 1 * MiB, 0);
  vol_close (a, &sa);
  vol_close (b, &sb);
}

/* ---- extents -------------------------------------------------------------------- */

struct t_ext { uint64_t off, len; bool alloc; };
struct t_exts { struct t_ext e[64]; unsigned n; unsigned stop_after; };

static int
t_ext_cb (void *opaque, uint64_t offset, uint64_t length, bool allocated)
{
  struct t_exts *x = opaque;
  cr_assert_lt (x->n, 64);
  x->e[x->n++] = (struct t_ext) { offset, length, allocated };
  return x->stop_after && x->n >= x->stop_after;
}

static void
t_expect_exts (const struct t_exts *x, const struct t_ext *want, unsigned n)
{
  cr_expect_eq (x->n, n, "%u extents, expected %u", x->n, n);
  for (unsigned i = 0; i < n && i < x->n; i++) {
    cr_expect_eq (x->e[i].off, want[i].off, "extent %u offset %llu", i,
                  (unsigned long long) x->e[i].off);
    cr_expect_eq (x->e[i].len, want[i].len, "extent %u length %llu", i,
                  (unsigned long long) x->e[i].len);
    cr_expect_eq (x->e[i].alloc, want[i].alloc, "extent %u allocated", i);
  }
}

Test (volume, extents_coalesced)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 10 * MiB - 512 * KiB);     /* the last chunk is partial */
  struct vol_session s;
  struct volume *v = t_open ("v", &s);

  struct t_exts x = { 0 };
  cr_assert_eq (vol_extents (v, 0, vol_size (v), 100, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) { { 0, 10 * MiB - 512 * KiB, false } }, 1);

  cr_assert_eq (t_write_byte (v, 0, 4096, 1), 0);
  cr_assert_eq (t_write_byte (v, 1 * MiB + 5, 1, 1), 0);
  cr_assert_eq (t_write_byte (v, 3 * MiB, 4096, 1), 0);
  cr_assert_eq (t_write_byte (v, 9 * MiB, 4096, 1), 0);

  memset (&x, 0, sizeof x);
  cr_assert_eq (vol_extents (v, 0, vol_size (v), 100, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) {
    { 0, 2 * MiB, true }, { 2 * MiB, 1 * MiB, false }, { 3 * MiB, 1 * MiB, true },
    { 4 * MiB, 5 * MiB, false }, { 9 * MiB, 512 * KiB, true } }, 5);

  /* an unaligned window */
  memset (&x, 0, sizeof x);
  cr_assert_eq (vol_extents (v, 512 * KiB, 3 * MiB, 100, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) {
    { 512 * KiB, 1536 * KiB, true }, { 2 * MiB, 1 * MiB, false },
    { 3 * MiB, 512 * KiB, true } }, 3);

  /* inside one chunk */
  memset (&x, 0, sizeof x);
  cr_assert_eq (vol_extents (v, 2 * MiB + 10, 100, 100, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) { { 2 * MiB + 10, 100, false } }, 1);

  /* max_extents, and the callback stopping the walk */
  memset (&x, 0, sizeof x);
  cr_assert_eq (vol_extents (v, 0, vol_size (v), 2, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) { { 0, 2 * MiB, true }, { 2 * MiB, 1 * MiB, false } }, 2);
  memset (&x, 0, sizeof x);
  x.stop_after = 3;
  cr_assert_eq (vol_extents (v, 0, vol_size (v), 100, t_ext_cb, &x), 0);
  cr_expect_eq (x.n, 3);

  /* a range past the end is clipped to the volume */
  memset (&x, 0, sizeof x);
  cr_assert_eq (vol_extents (v, 9 * MiB, 4 * MiB, 100, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) { { 9 * MiB, 512 * KiB, true } }, 1);

  /* after a trim the runs merge again */
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 3 * MiB, 1 * MiB, NULL), 0);
  memset (&x, 0, sizeof x);
  cr_assert_eq (vol_extents (v, 0, vol_size (v), 100, t_ext_cb, &x), 0);
  t_expect_exts (&x, (struct t_ext[]) {
    { 0, 2 * MiB, true }, { 2 * MiB, 7 * MiB, false }, { 9 * MiB, 512 * KiB, true } }, 3);
  vol_close (v, &s);
}

/* ---- flush and FUA --------------------------------------------------------------- */

Test (volume, flush_and_fua)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);

  /* FLUSH completes later, through the sync thread and post */
  struct t_req r = { 0 };
  t_prep (&r, v, VOL_OP_FLUSH, 0, 0, 0, NULL);
  cr_expect (!t_submit (&r), "FLUSH completed synchronously");
  struct t_req *rs[1] = { &r };
  t_wait (rs, 1);
  cr_expect_eq (r.io.result, 0);
  cr_expect_geq (t_posts, 1, "the flush did not come back through post");
  vol_io_release (&r.io);

  /* FUA writes: aligned, unaligned, and FUA trim / zero */
  unsigned posts = t_posts;
  cr_assert_eq (t_run (v, VOL_OP_WRITE, VOL_F_FUA, 0, 0, NULL), 0);   /* length 0 */
  unsigned char *b = t_buf (8192);
  memset (b, 0x66, 8192);
  cr_expect_eq (t_run (v, VOL_OP_WRITE, VOL_F_FUA, 1 * MiB, 8192, b), 0);
  cr_expect_eq (t_run (v, VOL_OP_WRITE, VOL_F_FUA, 2 * MiB + 3, 100, b), 0);
  cr_expect_eq (t_run (v, VOL_OP_TRIM, VOL_F_FUA, 1 * MiB + 4096, 4096, NULL), 0);
  cr_expect_eq (t_run (v, VOL_OP_ZERO, VOL_F_FUA | VOL_F_NO_HOLE, 3 * MiB, 4096, NULL), 0);
  cr_expect_geq (t_posts, posts + 4, "FUA completions did not go through the sync thread");
  t_expect_bytes (v, 1 * MiB, 4096, 0x66);
  t_expect_bytes (v, 1 * MiB + 4096, 4096, 0);
  t_expect_bytes (v, 2 * MiB + 3, 100, 0x66);
  t_expect_bytes (v, 2 * MiB, 3, 0);

  /* many flushes and FUA writes in flight together (group commit) */
  enum { N = 16 };
  struct t_req reqs[N];
  struct t_req *rp[N];
  memset (reqs, 0, sizeof reqs);
  for (int i = 0; i < N; i++) {
    if (i % 2)
      t_prep (&reqs[i], v, VOL_OP_FLUSH, 0, 0, 0, NULL);
    else
      t_prep (&reqs[i], v, VOL_OP_WRITE, VOL_F_FUA, 4 * MiB + (uint64_t) (i / 2) * 4096, 4096, b);
    rp[i] = &reqs[i];
  }
  for (int i = 0; i < N; i++)
    t_submit (&reqs[i]);
  t_wait (rp, N);
  for (int i = 0; i < N; i++) {
    cr_expect_eq (reqs[i].io.result, 0, "request %d: %s", i, strerror (-reqs[i].io.result));
    vol_io_release (&reqs[i].io);
  }
  t_expect_bytes (v, 4 * MiB, N / 2 * 4096, 0x66);

  cr_expect_eq (vol_store_sync (t_st), 0);
  free (b);
  vol_close (v, &s);
}

/* ---- persistence and check -------------------------------------------------------- */

Test (volume, persistence_across_reopen)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("alpha", 8 * MiB);
  t_create ("beta", 3 * MiB + 512);
  t_create ("empty", 1 * GiB);
  struct vol_info alpha0;
  char err[256];
  cr_assert_eq (vol_stat (t_st, "alpha", &alpha0, err, sizeof err), 0);

  struct vol_session sa, sb;
  struct volume *a = t_open ("alpha", &sa);
  struct volume *b = t_open ("beta", &sb);
  unsigned seed = 5;
  unsigned char *model = calloc (1, 8 * MiB);
  unsigned char *d = t_buf (2 * MiB);
  t_fill_random (d, 2 * MiB, &seed);
  cr_assert_eq (t_write (a, 512 * KiB, 2 * MiB, d), 0);
  memcpy (model + 512 * KiB, d, 2 * MiB);
  t_fill_random (d, 333, &seed);
  cr_assert_eq (t_write (a, 6 * MiB + 17, 333, d), 0);
  memcpy (model + 6 * MiB + 17, d, 333);
  cr_assert_eq (t_write_byte (b, 3 * MiB, 512, 0xbb), 0);   /* the last sector */
  cr_assert_eq (t_run (a, VOL_OP_FLUSH, 0, 0, 0, NULL), 0);
  /* an unflushed write also survives a clean close */
  t_fill_random (d, 4096, &seed);
  cr_assert_eq (t_write (a, 7 * MiB, 4096, d), 0);
  memcpy (model + 7 * MiB, d, 4096);
  /* a chunk written and trimmed again leaves nothing behind */
  cr_assert_eq (t_write_byte (b, 0, 1 * MiB, 0xcc), 0);
  cr_assert_eq (t_run (b, VOL_OP_TRIM, 0, 0, 1 * MiB, NULL), 0);
  t_settle (10);
  uint64_t alloc_a = t_allocated ("alpha"), alloc_b = t_allocated ("beta");
  cr_expect_eq (alloc_a, 5 * MiB);
  cr_expect_eq (alloc_b, 1 * MiB);
  struct vol_pool_info pi0 = t_pool ();
  cr_expect_eq (pi0.allocated, 6 * MiB);
  vol_close (a, &sa);
  vol_close (b, &sb);
  t_close_store ();

  /* closed: the check is clean */
  char report[4096] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "check: %s", report);
  cr_expect (strstr (report, "consistent") != NULL, "report: %s", report);

  /* reopen with capacity 0 (keep) and a different chunk size (ignored) */
  t_open_store (0, 4 * MiB);
  struct vol_pool_info pi = t_pool ();
  cr_expect_eq (pi.capacity, 64 * MiB);
  cr_expect_eq (pi.chunk_size, 1 * MiB);
  cr_expect_eq (pi.free, pi0.free);
  cr_expect_eq (pi.volumes, 3);

  struct vol_info *list = NULL;
  size_t n = 0;
  cr_assert_eq (vol_list (t_st, &list, &n), 0);
  cr_assert_eq (n, 3);
  cr_expect_str_eq (list[0].name, "alpha");
  cr_expect_eq (list[0].size, 8 * MiB);
  cr_expect_str_eq (list[0].id, alpha0.id);
  cr_expect_str_eq (list[0].type, alpha0.type);
  cr_expect_eq (list[0].created, alpha0.created);
  cr_expect_eq (list[0].allocated, alloc_a);
  cr_expect_str_eq (list[1].name, "beta");
  cr_expect_eq (list[1].size, 3 * MiB + 512);
  cr_expect_eq (list[1].allocated, alloc_b);
  cr_expect_str_eq (list[2].name, "empty");
  cr_expect_eq (list[2].size, 1 * GiB);
  cr_expect_eq (list[2].allocated, 0);
  free (list);

  a = t_open ("alpha", &sa);
  b = t_open ("beta", &sb);
  cr_expect_eq (vol_size (b), 3 * MiB + 512);
  t_expect_model (a, 0, model, 8 * MiB);
  t_expect_bytes (b, 3 * MiB, 512, 0xbb);
  t_expect_bytes (b, 0, 3 * MiB, 0);

  /* still writable, and a resize persists too */
  cr_assert_eq (vol_resize (t_st, "beta", 5 * MiB, NULL, err, sizeof err), 0, "%s", err);
  cr_assert_eq (t_write_byte (b, 4 * MiB, 4096, 0xbe), 0);
  vol_close (a, &sa);
  vol_close (b, &sb);

  /* a check on a live store opens it read-only and sees the same */
  report[0] = '\0';
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "live check: %s", report);
  t_close_store ();
  report[0] = '\0';
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "check: %s", report);

  t_open_store (0, 0);
  struct vol_info vi;
  cr_assert_eq (vol_stat (t_st, "beta", &vi, err, sizeof err), 0);
  cr_expect_eq (vi.size, 5 * MiB);
  cr_expect_eq (vi.allocated, 2 * MiB);
  b = t_open ("beta", &sb);
  t_expect_bytes (b, 4 * MiB, 4096, 0xbe);
  t_expect_bytes (b, 3 * MiB, 512, 0xbb);
  vol_close (b, &sb);
  free (d);
  free (model);
}

Test (volume, check_without_store)
{
  char report[1024] = "";
  int r = t_check (t_dir, report, sizeof report);
  cr_expect_lt (r, 0, "check of an empty directory returned %d", r);
  cr_expect_neq (report[0], '\0');
}

Test (volume, pool_grows_on_reopen)
{
  t_open_store (8 * MiB, 1 * MiB);
  t_create ("v", 4 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 4096, 0x77), 0);
  vol_close (v, &s);
  t_close_store ();
  t_open_store (16 * MiB, 0);
  cr_expect_eq (t_pool ().capacity, 16 * MiB);
  cr_expect_eq (t_pool ().free, 15 * MiB);
  t_close_store ();
  t_open_store (4 * MiB, 0);      /* pools cannot shrink */
  cr_expect_eq (t_pool ().capacity, 16 * MiB);
  v = t_open ("v", &s);
  t_expect_bytes (v, 0, 4096, 0x77);
  vol_close (v, &s);
}

/* A chunk trimmed while a read of it is in flight is not given back (and
 * so cannot be reused) until the read completes; the read sees the old
 * data.  The read is parked on a second ring that does not run while the
 * trim completes on the first. */
Test (volume, trim_during_read_waits_for_the_read)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 2 * MiB, 0x21), 0);
  cr_expect_eq (t_pool ().free, 62 * MiB);

  struct io_uring ring2;
  cr_assert_eq (io_uring_queue_init (16, &ring2, 0), 0);
  struct vol_ioctx ctx2 = { .store = t_st, .ring = &ring2, .tag = T_TAG, .post = t_post };

  unsigned char *b = t_buf (1 * MiB);
  memset (b, 0xff, 1 * MiB);
  struct t_req rd = { 0 };
  t_loop = &ctx2;
  t_prep (&rd, v, VOL_OP_READ, 0, 0, 1 * MiB, b);
  cr_assert (!t_submit (&rd));                  /* queued on ring2, not running */
  t_loop = &t_ctx;
  cr_assert_eq (t_run (v, VOL_OP_TRIM, 0, 0, 2 * MiB, NULL), 0);
  t_settle (20);
  cr_expect_eq (t_allocated ("v"), 0);
  cr_expect_eq (t_pool ().free, 63 * MiB,
                "free %llu: only the chunk without I/O in flight may be free yet",
                (unsigned long long) t_pool ().free);
  /* a write now must not get the pinned chunk */
  struct vol_session s2;
  t_create ("w", 8 * MiB);
  struct volume *w = t_open ("w", &s2);
  cr_assert_eq (t_write_byte (w, 0, 1 * MiB, 0x22), 0);
  cr_expect_eq (t_pool ().free, 62 * MiB);

  t_loop = &ctx2;
  struct t_req *rs[1] = { &rd };
  t_wait (rs, 1);
  cr_expect_eq (rd.io.result, 0);
  cr_expect (t_all (b, 1 * MiB, 0x21), "the in-flight read saw the chunk after it was freed");
  vol_io_release (&rd.io);
  t_wait_free (63 * MiB);                       /* the last pin released it */
  t_settle (20);
  t_loop = &t_ctx;
  io_uring_queue_exit (&ring2);
  t_expect_bytes (v, 0, 2 * MiB, 0);
  t_expect_bytes (w, 0, 1 * MiB, 0x22);
  free (b);
  vol_close (v, &s);
  vol_close (w, &s2);
}

/* Write cache semantics: a completed write survives the death of the
 * process even without a FLUSH. */
Test (volume, completed_writes_survive_sigkill)
{
  unsigned seed = 9;
  unsigned char *model = calloc (1, 4 * MiB);
  unsigned char *d = t_buf (1 * MiB);
  t_fill_random (d, 1 * MiB, &seed);
  memcpy (model + 512 * KiB, d, 1 * MiB);
  memcpy (model + 3 * MiB + 5, d, 1000);
  memset (model + 2 * MiB, 0x31, 1 * MiB);

  pid_t pid = fork ();
  cr_assert_neq (pid, -1);
  if (pid == 0) {
    /* a fresh ring: the parent's is shared memory */
    if (io_uring_queue_init (64, &t_ring, 0) != 0)
      _exit (2);
    t_open_store (64 * MiB, 1 * MiB);
    t_create ("v", 4 * MiB);
    t_create ("gone", 4 * MiB);
    struct vol_session s;
    struct volume *v = t_open ("v", &s);
    if (t_write (v, 512 * KiB, 1 * MiB, d) != 0 || t_write (v, 3 * MiB + 5, 1000, d) != 0
        || t_write_byte (v, 2 * MiB, 1 * MiB, 0x31) != 0
        || t_write_byte (v, 0, 4096, 0x32) != 0
        || t_run (v, VOL_OP_TRIM, 0, 0, 4096, NULL) != 0)
      _exit (3);
    char err[256];
    if (vol_delete (t_st, "gone", false, err, sizeof err) != 0)
      _exit (4);
    kill (getpid (), SIGKILL);
    _exit (5);
  }
  int status = 0;
  cr_assert_eq (waitpid (pid, &status, 0), pid);
  cr_assert (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL,
             "child did not run to the kill (status 0x%x)", status);

  char report[2048] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "%s", report);
  t_open_store (0, 0);
  cr_expect_eq (t_pool ().volumes, 1);
  cr_expect_eq (t_allocated ("v"), 4 * MiB);
  cr_expect_eq (t_pool ().free, 60 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  t_expect_model (v, 0, model, 4 * MiB);
  vol_close (v, &s);
  free (d);
  free (model);
}

/* ---- resize ------------------------------------------------------------------------ */

Test (volume, resize)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 2 * MiB + 512);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 2 * MiB + 512, 0x12), 0);

  char err[256] = "";
  struct vol_info vi;
  cr_assert_eq (vol_resize (t_st, "v", 64 * GiB, &vi, err, sizeof err), 0, "%s", err);
  cr_expect_eq (vi.size, 64 * GiB);
  cr_expect_eq (vol_size (v), 64 * GiB);
  cr_expect_eq (vi.allocated, 3 * MiB);
  t_expect_bytes (v, 2 * MiB + 512, 1 * MiB - 512, 0);   /* the old tail chunk */
  t_expect_bytes (v, 3 * MiB, 1 * MiB, 0);
  t_expect_bytes (v, 64 * GiB - 1 * MiB, 1 * MiB, 0);
  t_expect_bytes (v, 0, 2 * MiB + 512, 0x12);

  cr_assert_eq (t_write_byte (v, 40 * GiB + 3, 5000, 0x13), 0);
  cr_assert_eq (t_write_byte (v, 64 * GiB - 4096, 4096, 0x14), 0);
  t_expect_bytes (v, 40 * GiB + 3, 5000, 0x13);
  t_expect_bytes (v, 64 * GiB - 4096, 4096, 0x14);
  cr_expect_eq (t_allocated ("v"), 5 * MiB);
  /* across the boundary of two chunk-map leaves (4096 chunks each) */
  cr_assert_eq (t_write_byte (v, 4 * GiB - 100, 200, 0x15), 0);
  t_expect_bytes (v, 4 * GiB - 100, 200, 0x15);
  t_expect_bytes (v, 4 * GiB - 4196, 4096, 0);
  t_expect_bytes (v, 4 * GiB + 100, 4096, 0);
  cr_expect_eq (t_allocated ("v"), 7 * MiB);

  /* same size is a no-op; shrinking and bad sizes are refused */
  cr_expect_eq (vol_resize (t_st, "v", 64 * GiB, NULL, err, sizeof err), 0);
  err[0] = '\0';
  cr_expect_eq (vol_resize (t_st, "v", 1 * MiB, NULL, err, sizeof err), -EINVAL);
  cr_expect (strstr (err, "grow") != NULL || strstr (err, "smaller") != NULL, "message: %s", err);
  cr_expect_eq (vol_resize (t_st, "v", 64 * GiB + 1, NULL, err, sizeof err), -EINVAL);
  cr_expect_eq (vol_resize (t_st, "v", VOL_MAX_SIZE + 512, NULL, err, sizeof err), -EINVAL);
  cr_expect_eq (vol_resize (t_st, "v", 0, NULL, err, sizeof err), -EINVAL);
  cr_expect_eq (vol_resize (t_st, "nope", 128 * GiB, NULL, err, sizeof err), -ENOENT);
  cr_expect_eq (vol_size (v), 64 * GiB);
  vol_close (v, &s);
}

/* ---- delete and sessions ------------------------------------------------------------ */

struct t_session {
  struct vol_session s;
  int kicked;
};

static void
t_kick (struct vol_session *s)
{
  ((struct t_session *) s)->kicked++;
}

Test (volume, delete_idle)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  cr_assert_eq (t_write_byte (v, 0, 3 * MiB, 1), 0);
  vol_close (v, &s);
  cr_expect_eq (t_pool ().free, 61 * MiB);
  char err[256] = "";
  cr_assert_eq (vol_delete (t_st, "v", false, err, sizeof err), 0, "%s", err);
  cr_expect_eq (t_pool ().free, 64 * MiB);
  cr_expect_eq (t_pool ().volumes, 0);
  struct vol_info vi;
  cr_expect_eq (vol_stat (t_st, "v", &vi, err, sizeof err), -ENOENT);
  cr_expect_eq (vol_delete (t_st, "v", false, err, sizeof err), -ENOENT);
  errno = 0;
  cr_expect_null (vol_open (t_st, "v", &s));
  cr_expect_eq (errno, ENOENT);
  /* the name can be used again, and the new volume starts empty */
  t_create ("v", 8 * MiB);
  v = t_open ("v", &s);
  t_expect_bytes (v, 0, 3 * MiB, 0);
  vol_close (v, &s);
  /* delete by id */
  cr_assert_eq (vol_stat (t_st, "v", &vi, err, sizeof err), 0);
  cr_expect_eq (vol_delete (t_st, vi.id, false, err, sizeof err), 0);
  cr_expect_eq (t_pool ().volumes, 0);
}

Test (volume, delete_busy_and_force)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 8 * MiB);
  t_create ("other", 8 * MiB);
  struct t_session s1 = { .s.kick = t_kick }, s2 = { .s.kick = t_kick };
  struct volume *v = vol_open (t_st, "v", &s1.s);
  cr_assert_not_null (v);
  struct volume *v2 = vol_open (t_st, "v", &s2.s);
  cr_assert_eq (v2, v);
  cr_assert_eq (t_write_byte (v, 0, 2 * MiB, 1), 0);
  cr_assert_eq (t_write_byte (v, 5 * MiB, 1, 1), 0);
  cr_expect_eq (t_pool ().free, 61 * MiB);

  struct vol_info vi;
  char err[256] = "";
  cr_assert_eq (vol_stat (t_st, "v", &vi, err, sizeof err), 0);
  cr_expect_eq (vi.connections, 2);
  cr_expect_eq (vol_info_status (&vi), VOL_IN_USE);
  cr_expect_str_eq (vol_status_name (vol_info_status (&vi)), "in-use");
  cr_expect_str_eq (vol_status_name (VOL_AVAILABLE), "available");

  /* one session closes; the other keeps it busy */
  vol_close (v2, &s2.s);
  cr_assert_eq (vol_stat (t_st, "v", &vi, err, sizeof err), 0);
  cr_expect_eq (vi.connections, 1);

  err[0] = '\0';
  cr_expect_eq (vol_delete (t_st, "v", false, err, sizeof err), -EBUSY);
  cr_expect (strstr (err, "in use") != NULL, "message: %s", err);
  cr_expect_eq (s1.kicked, 0);
  cr_expect_eq (vol_stat (t_st, "v", &vi, err, sizeof err), 0, "a refused delete removed it");

  cr_assert_eq (vol_delete (t_st, "v", true, err, sizeof err), 0, "%s", err);
  cr_expect_eq (s1.kicked, 1);
  cr_expect_eq (s2.kicked, 0, "a closed session was kicked");
  cr_expect_eq (vol_stat (t_st, "v", &vi, err, sizeof err), -ENOENT);
  cr_expect_eq (t_pool ().volumes, 1);
  cr_expect_null (vol_open (t_st, "v", &s2.s));

  /* the space goes back at once; the kicked session can neither read what
   * was freed (another volume may get it) nor take new space */
  t_settle (10);
  cr_expect_eq (t_pool ().free, 64 * MiB);
  void *rbuf = t_buf (4096);
  cr_expect_eq (t_run (v, VOL_OP_READ, 0, 0, 4096, rbuf), -ESHUTDOWN,
                "a read of a deleted volume was served");
  free (rbuf);
  int r = t_write_byte (v, 3 * MiB, 4096, 2);
  cr_expect_lt (r, 0, "a write to a deleted volume allocated a chunk");
  cr_expect_eq (t_pool ().free, 64 * MiB);

  vol_close (v, &s1.s);
  t_settle (10);
  cr_expect_eq (t_pool ().free, 64 * MiB);
  cr_expect_eq (t_pool ().allocated, 0);

  /* the other volume is untouched; the store is consistent after reopen */
  struct vol_session so;
  struct volume *o = t_open ("other", &so);
  cr_assert_eq (t_write_byte (o, 0, 4096, 9), 0);
  vol_close (o, &so);
  t_close_store ();
  char report[2048] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "%s", report);
  t_open_store (0, 0);
  cr_expect_eq (t_pool ().volumes, 1);
  cr_expect_eq (t_pool ().free, 63 * MiB);
}

/* ---- requests outside the volume ------------------------------------------------------ */

/* The store must not map chunks past the end of a volume: recovery deletes
 * such entries ("entry beyond the end of its volume") and check reports
 * them, so accepting the write would lose it silently. */
Test (volume, write_beyond_end_is_refused)
{
  t_open_store (64 * MiB, 1 * MiB);
  t_create ("v", 2 * MiB);
  struct vol_session s;
  struct volume *v = t_open ("v", &s);
  int r = t_write_byte (v, 2 * MiB, 4096, 0x99);
  cr_expect_lt (r, 0, "a write entirely past the end succeeded");
  r = t_write_byte (v, 2 * MiB - 4096, 8192, 0x99);
  cr_expect_lt (r, 0, "a write crossing the end succeeded");
  r = t_run (v, VOL_OP_ZERO, VOL_F_NO_HOLE, 3 * MiB, 4096, NULL);
  cr_expect_lt (r, 0, "write-zeroes past the end succeeded");
  cr_expect_eq (t_allocated ("v"), 0);
  cr_expect_eq (t_pool ().allocated, 0, "pool space was taken for data past the end");
  vol_close (v, &s);
  t_close_store ();
  char report[2048] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "%s", report);
}

Test (volume, attachments)
{
  t_open_store (64 * MiB, 1 * MiB);
  char err[1200];
  struct vol_info vi;
  cr_assert_eq (vol_create_from (t_st, "shared", 8 * MiB, NULL, NULL, VOL_CREATE_MULTI_ATTACH,
                                 &vi, err, sizeof err), 0, "%s", err);
  cr_assert (vi.multi_attach);
  t_create ("boot", 8 * MiB);

  /* a multi-attach volume takes up to VOL_ATTACH_MAX instances */
  for (int i = 0; i < VOL_ATTACH_MAX; i++) {
    char inst[16];
    snprintf (inst, sizeof inst, "vm%d", i);
    cr_assert_eq (vol_attach (t_st, "shared", inst, VOL_ROLE_DATA, &vi, err, sizeof err), 0, "%s", err);
  }
  cr_expect_eq (vol_attach (t_st, "shared", "vm99", VOL_ROLE_DATA, NULL, err, sizeof err), -EBUSY);
  cr_expect (strstr (err, "8 instances") != NULL, "%s", err);
  cr_expect_eq (vol_detach (t_st, "shared", NULL, NULL, err, sizeof err), -EBUSY);
  cr_expect_eq (vol_detach (t_st, "shared", "vm3", &vi, err, sizeof err), 0, "%s", err);
  cr_expect_eq (vi.nattach, VOL_ATTACH_MAX - 1);
  cr_expect_str_eq (vi.attach[3].instance, "vm4");    /* order kept */
  /* a system disk is one instance's, multi-attach or not */
  cr_expect_eq (vol_attach (t_st, "shared", "vm3", VOL_ROLE_SYSTEM, NULL, err, sizeof err), -EBUSY);
  cr_expect (strstr (err, "system disk") != NULL, "%s", err);

  /* a snapshot and a rollback keep the attachment; delete does not go through */
  cr_assert_eq (vol_attach (t_st, "boot", "vm0", VOL_ROLE_SYSTEM, NULL, err, sizeof err), 0, "%s", err);
  struct vol_snap_info si;
  cr_assert_eq (vol_snapshot_create (t_st, "boot", "s1", &si, err, sizeof err), 0, "%s", err);
  cr_assert_eq (vol_rollback (t_st, "boot", "s1", &vi, err, sizeof err), 0, "%s", err);
  cr_expect_eq (vi.nattach, 1);
  cr_expect_eq (vi.attach[0].role, VOL_ROLE_SYSTEM);
  cr_expect_eq (vol_delete (t_st, "boot", true, err, sizeof err), -EBUSY);
  cr_expect_eq (vol_attach (t_st, "boot", "bad/name", VOL_ROLE_DATA, NULL, err, sizeof err), -EINVAL);
  cr_expect_eq (vol_attach (t_st, "nosuch", "vm0", VOL_ROLE_DATA, NULL, err, sizeof err), -ENOENT);

  /* all of it survives a reopen, and the store checks clean */
  t_close_store ();
  char report[4096] = "";
  cr_expect_eq (t_check (t_dir, report, sizeof report), 0, "check: %s", report);
  t_open_store (0, 0);
  cr_assert_eq (vol_stat (t_st, "shared", &vi, err, sizeof err), 0);
  cr_expect (vi.multi_attach);
  cr_expect_eq (vi.nattach, VOL_ATTACH_MAX - 1);
  cr_expect_str_eq (vi.attach[0].instance, "vm0");
  cr_assert_eq (vol_stat (t_st, "boot", &vi, err, sizeof err), 0);
  cr_expect_eq (vi.nattach, 1);
  cr_expect_str_eq (vi.attach[0].instance, "vm0");
  cr_expect_eq (vi.attach[0].role, VOL_ROLE_SYSTEM);
  cr_expect (vi.attach[0].since > 0);
  cr_expect_eq (vol_detach (t_st, "boot", "vm0", NULL, err, sizeof err), 0, "%s", err);
  cr_expect_eq (vol_delete (t_st, "boot", false, err, sizeof err), 0, "%s", err);
}
