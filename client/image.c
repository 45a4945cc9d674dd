/* client/image.c — the copy engine behind "blockctl volume import" and
 * "volume export": copy bytes [0, total) from a source to a destination,
 * each either a local file or an NBD server (blockd, or qemu-nbd opening a
 * qcow2 image), sparsely and with several requests in flight.
 *
 *   source extents     holes/zeros reported by SEEK_DATA/SEEK_HOLE or NBD
 *                      base:allocation are skipped without reading
 *   read               a file with pread; NBD with nbd_aio_pread
 *   zero check         each block of the data read is checked; all-zero
 *                      blocks are not written (the destination is fresh
 *                      and reads zeros)
 *   write              NBD with nbd_aio_pwrite; a file with pwrite
 *
 * IMG_REQUESTS slots, each with a buffer of one request, cycle through
 * FREE -> READING -> READ -> WRITING -> FREE.  One thread drives both
 * libnbd handles with poll(); libnbd's completion callbacks only record
 * the outcome in their slot, the loop acts on it. */
#include "client/blockctl.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define IMG_REQUESTS      16              /* slots: requests in flight */
#define IMG_REQUEST_SIZE  (2u << 20)      /* bytes per request */
#define IMG_EXTENTS_SPAN  (1u << 30)      /* bytes of block status asked at once */
#define IMG_ALIGN         512u            /* every request is a multiple of this */
/* Zero check granularity: a file's block for a file, so that the output
 * is as sparse as the filesystem allows; a qcow2 cluster for NBD, since
 * blockd allocates whole chunks (1 MiB) and qcow2 whole clusters anyway,
 * and fewer, larger writes go faster. */
#define IMG_ZERO_FILE     4096u
#define IMG_ZERO_NBD      (64u << 10)
#define IMG_PROGRESS_NS   200000000LL     /* progress line refresh */
#define IMG_POLL_MS       200             /* longest wait, so signals are seen */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ, SLOT_WRITING };

/* One request's buffer and its way through read and write.  The buffer
 * belongs to the slot; libnbd borrows it from nbd_aio_pread/pwrite until
 * the command's completion callback, or until the handle is closed. */
struct slot {
  uint8_t *buf;                 /* IMG_REQUEST_SIZE bytes, page aligned */
  uint64_t offset;              /* where buf belongs in the image */
  uint32_t len;                 /* bytes of the range, a multiple of IMG_ALIGN */
  enum slot_state state;
  unsigned writes;              /* NBD writes in flight */
  int err;                      /* errno of the first failed command, or 0 */
  bool err_write;               /* ... which was a write (else a read) */
};

struct extent {
  uint64_t offset, length;
  bool zero;
};

struct copy {
  struct ctl_img_end *src, *dst;
  uint64_t total;               /* copy [0, total) */
  uint64_t next;                /* first byte not yet given to a slot */
  uint32_t request_size;
  uint32_t zero_block;
  bool src_extents;             /* false after SEEK_DATA turned out unsupported */
  struct extent *ext;           /* the source's extents from the last query */
  size_t n_ext, cap_ext, cur_ext;
  struct slot slots[IMG_REQUESTS];
  struct ctl_img_stats *st;
  bool progress;
  int64_t start_ns, shown_ns;
  struct ctl_img_error *err;
};

static volatile sig_atomic_t interrupted;
static const int caught[3] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction caught_old[3];

static void
on_signal (int sig)
{
  interrupted = sig;
}

void
ctl_img_signals_catch (void)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset (&sa.sa_mask);
  interrupted = 0;
  for (int i = 0; i < 3; i++)
    sigaction (caught[i], &sa, &caught_old[i]);
}

void
ctl_img_signals_restore (void)
{
  for (int i = 0; i < 3; i++)
    sigaction (caught[i], &caught_old[i], NULL);
}

int
ctl_img_interrupted (void)
{
  return interrupted;
}

static int64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t
min_u64 (uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

static uint64_t
align_up (uint64_t n)
{
  return (n + IMG_ALIGN - 1) / IMG_ALIGN * IMG_ALIGN;
}

int
ctl_img_fail (struct ctl_img_error *err, bool at_offset, uint64_t offset,
              const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  err->at_offset = at_offset;
  err->offset = offset;
  return -1;
}

const char *
ctl_img_nbd_error (void)
{
  const char *e = nbd_get_error ();
  return e ? e : "unknown NBD error";
}

char *
ctl_img_human (uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  if (bytes < 1024) {
    snprintf (buf, len, "%llu bytes", (unsigned long long) bytes);
    return buf;
  }
  double v = (double) bytes / 1024;
  int u = 0;
  while (v >= 1023.5 && u < 5) {       /* what "%.0f" would print as 1024 */
    v /= 1024;
    u++;
  }
  if (v < 9.95)
    snprintf (buf, len, "%.1f %s", v, units[u]);
  else
    snprintf (buf, len, "%.0f %s", v, units[u]);
  return buf;
}

/* ---- the source's extents ---------------------------------------------- */
static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t n, int *error)
{
  struct copy *c = opaque;
  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (size_t i = 0; i + 1 < n; i += 2) {
    if (c->n_ext == c->cap_ext) {
      size_t cap = c->cap_ext ? 2 * c->cap_ext : 256;
      struct extent *p = realloc (c->ext, cap * sizeof *p);
      if (p == NULL) {
        *error = ENOMEM;
        return -1;
      }
      c->ext = p;
      c->cap_ext = cap;
    }
    c->ext[c->n_ext++] = (struct extent) {
      offset, entries[i], (entries[i + 1] & LIBNBD_STATE_ZERO) != 0
    };
    offset += entries[i];
  }
  return 0;
}

/* The extent at OFF (< c->total): its length from OFF (> 0) and whether it
 * reads as zeros.  Returns 0 or -1 (error set). */
static int
get_extent (struct copy *c, uint64_t off, uint64_t *len, bool *zero)
{
  struct ctl_img_end *s = c->src;
  *zero = false;
  *len = c->total - off;
  if (!c->src_extents)
    return 0;

  if (s->nbd == NULL) {
    off_t d = lseek (s->fd, (off_t) off, SEEK_DATA);
    if (d == -1 && errno == ENXIO) {       /* nothing but a hole from here */
      *zero = true;
      return 0;
    }
    if (d == -1 && (errno == EINVAL || errno == EOPNOTSUPP)) {
      c->src_extents = false;              /* no SEEK_DATA here: read it all */
      return 0;
    }
    if (d == -1)
      return ctl_img_fail (c->err, true, off, "reading \"%s\": %s", s->name,
                        strerror (errno));
    if ((uint64_t) d > off) {
      *zero = true;
      *len = (uint64_t) d - off;
      return 0;
    }
    off_t h = lseek (s->fd, (off_t) off, SEEK_HOLE);
    if (h == -1)
      return ctl_img_fail (c->err, true, off, "reading \"%s\": %s", s->name,
                        strerror (errno));
    if ((uint64_t) h > off)
      *len = (uint64_t) h - off;
    return 0;
  }

  for (int tries = 0; tries < 2; tries++) {
    for (; c->cur_ext < c->n_ext; c->cur_ext++) {
      struct extent *x = &c->ext[c->cur_ext];
      if (off < x->offset)
        break;
      if (off < x->offset + x->length && x->length > 0) {
        *len = x->offset + x->length - off;
        *zero = x->zero;
        return 0;
      }
    }
    if (tries == 1 || off >= s->size)
      break;
    c->n_ext = c->cur_ext = 0;
    uint64_t count = min_u64 (IMG_EXTENTS_SPAN, s->size - off);
    nbd_extent_callback cb = { .callback = extent_cb, .user_data = c };
    if (nbd_block_status (s->nbd, count, off, cb, 0) == -1)
      return ctl_img_fail (c->err, true, off, "block status of %s: %s", s->name,
                        ctl_img_nbd_error ());
  }
  /* No extent covers OFF (beyond the source's end, or a server that
   * answered with less than asked): read it. */
  *len = min_u64 (*len, c->request_size);
  return 0;
}

/* The next range to copy, skipping holes and zero extents: sets *off and
 * *len (a multiple of IMG_ALIGN, at most one request).  Returns 1, 0 when
 * all is given out, or -1 (error set). */
static int
next_range (struct copy *c, uint64_t *off, uint32_t *len)
{
  while (c->next < c->total) {
    uint64_t elen, end;
    bool zero;
    if (get_extent (c, c->next, &elen, &zero) < 0)
      return -1;
    end = min_u64 (c->next + elen, c->total);
    if (zero) {
      /* Skip whole aligned blocks only; a partial one is read. */
      uint64_t zend = end == c->total ? end : end / IMG_ALIGN * IMG_ALIGN;
      if (zend > c->next) {
        c->st->done += zend - c->next;
        c->st->zero += zend - c->next;
        c->next = zend;
        continue;
      }
      end = c->next + IMG_ALIGN;
    }
    /* Requests end on multiples of the request size once they can, so
     * that they line up with the destination's chunks and clusters. */
    uint64_t n = min_u64 (end - c->next, c->request_size - c->next % c->request_size);
    uint64_t rend = min_u64 (align_up (c->next + n), c->total);
    *off = c->next;
    *len = (uint32_t) (rend - c->next);
    c->next = rend;
    return 1;
  }
  return 0;
}

/* ---- reads and writes --------------------------------------------------- */
static int
read_done (void *opaque, int *error)
{
  struct slot *s = opaque;
  if (*error && !s->err)
    s->err = *error;
  s->state = SLOT_READ;
  return 1;                      /* retire the command */
}

static int
write_done (void *opaque, int *error)
{
  struct slot *s = opaque;
  if (*error && !s->err) {
    s->err = *error;
    s->err_write = true;
  }
  s->writes--;
  return 1;
}

/* Give slot S the next range and start reading it.  Returns 1 (started),
 * 0 (nothing left) or -1. */
static int
start_read (struct copy *c, struct slot *s)
{
  int r = next_range (c, &s->offset, &s->len);
  if (r <= 0)
    return r;
  struct ctl_img_end *src = c->src;
  /* The source may end inside the last aligned block: the rest is zeros. */
  size_t n = (size_t) min_u64 (s->len, src->size > s->offset ? src->size - s->offset : 0);
  if (n < s->len)
    memset (s->buf + n, 0, s->len - n);
  s->err = 0;
  s->err_write = false;
  if (src->nbd) {
    s->state = SLOT_READING;
    nbd_completion_callback cb = { .callback = read_done, .user_data = s };
    if (n > 0 && nbd_aio_pread (src->nbd, s->buf, n, s->offset, cb, 0) == -1)
      return ctl_img_fail (c->err, true, s->offset, "reading %s: %s", src->name,
                        ctl_img_nbd_error ());
    if (n == 0)
      s->state = SLOT_READ;
    return 1;
  }
  size_t got = 0;
  while (got < n) {
    ssize_t k = pread (src->fd, s->buf + got, n - got, (off_t) (s->offset + got));
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return ctl_img_fail (c->err, true, s->offset + got, "reading \"%s\": %s",
                        src->name, strerror (errno));
    if (k == 0) {                /* the file shrank under us: zeros */
      memset (s->buf + got, 0, n - got);
      break;
    }
    got += (size_t) k;
  }
  s->state = SLOT_READ;
  return 1;
}

/* Is P[0..n) all zero?  As nbdkit's is_zero: a few bytes by hand, then
 * memcmp, which is vectorised, of the buffer against itself shifted. */
static bool
is_zero (const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < 16 && i < n; i++)
    if (p[i])
      return false;
  return n <= 16 || memcmp (p, p + 16, n - 16) == 0;
}

/* Write the non-zero blocks of read slot S to the destination. */
static int
write_slot (struct copy *c, struct slot *s)
{
  struct ctl_img_end *dst = c->dst;
  uint32_t zb = c->zero_block;
  s->state = SLOT_WRITING;
  s->writes = 0;
  for (uint32_t i = 0; i < s->len; ) {
    /* blocks are aligned to zb in the image, not in the buffer */
    uint32_t bl = (uint32_t) min_u64 (zb - (s->offset + i) % zb, s->len - i);
    if (is_zero (s->buf + i, bl)) {
      c->st->zero += bl;
      i += bl;
      continue;
    }
    uint32_t j = i + bl;
    while (j < s->len) {
      uint32_t b2 = (uint32_t) min_u64 (zb - (s->offset + j) % zb, s->len - j);
      if (is_zero (s->buf + j, b2))
        break;
      j += b2;
    }
    uint64_t off = s->offset + i;
    if (dst->nbd) {
      nbd_completion_callback cb = { .callback = write_done, .user_data = s };
      s->writes++;               /* before: the callback may come at once */
      if (nbd_aio_pwrite (dst->nbd, s->buf + i, j - i, off, cb, 0) == -1) {
        s->writes--;
        return ctl_img_fail (c->err, true, off, "writing to %s: %s", dst->name,
                          ctl_img_nbd_error ());
      }
    }
    else {
      for (uint32_t k = i; k < j; ) {
        ssize_t w = pwrite (dst->fd, s->buf + k, j - k, (off_t) (s->offset + k));
        if (w < 0 && errno == EINTR)
          continue;
        if (w <= 0)
          return ctl_img_fail (c->err, true, s->offset + k, "writing \"%s\": %s",
                            dst->name, w < 0 ? strerror (errno) : "nothing written");
        k += (uint32_t) w;
      }
    }
    c->st->written += j - i;
    i = j;
  }
  return 0;
}

/* A slot whose command failed: the error, at its range. */
static int
slot_failed (struct copy *c, struct slot *s)
{
  struct ctl_img_end *e = s->err_write ? c->dst : c->src;
  return ctl_img_fail (c->err, true, s->offset, "%s %s: %s",
                    s->err_write ? "writing to" : "reading", e->name,
                    strerror (s->err));
}

/* ---- the loop ------------------------------------------------------------ */
static void
show_progress (struct copy *c)
{
  if (!c->progress)
    return;
  int64_t now = now_ns ();
  if (now - c->shown_ns < IMG_PROGRESS_NS)
    return;
  c->shown_ns = now;
  char done[32], total[32], zero[32];
  double secs = (double) (now - c->start_ns) / 1e9;
  uint64_t d = c->st->done;
  fprintf (stderr, "\r%3u%%  %s / %s  %.0f MiB/s  %s zero\033[K",
           c->total ? (unsigned) (d * 100 / c->total) : 100u,
           ctl_img_human (d, done, sizeof done),
           ctl_img_human (c->total, total, sizeof total),
           secs > 0 ? (double) d / secs / (1 << 20) : 0.0,
           ctl_img_human (c->st->zero, zero, sizeof zero));
  fflush (stderr);
}

/* The lowest offset still in a slot: where a dead connection failed. */
static uint64_t
oldest (struct copy *c)
{
  uint64_t o = c->next;
  for (int i = 0; i < IMG_REQUESTS; i++)
    if (c->slots[i].state != SLOT_FREE && c->slots[i].offset < o)
      o = c->slots[i].offset;
  return o;
}

/* Wait up to TIMEOUT ms for the NBD handles with commands in flight, and
 * let libnbd read or write what it can.  Returns 0 or -1 (error set). */
static int
wait_io (struct copy *c, int timeout)
{
  struct ctl_img_end *ends[2] = { c->src, c->dst }, *polled[2];
  struct pollfd fds[2];
  unsigned dirs[2];
  int n = 0;

  for (int i = 0; i < 2; i++) {
    struct nbd_handle *h = ends[i]->nbd;
    if (h == NULL || nbd_aio_in_flight (h) <= 0)
      continue;
    dirs[n] = nbd_aio_get_direction (h);
    fds[n].fd = nbd_aio_get_fd (h);
    fds[n].events = (short) (((dirs[n] & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
                             | ((dirs[n] & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
    fds[n].revents = 0;
    polled[n++] = ends[i];
  }
  if (n == 0)
    return 0;
  if (poll (fds, (nfds_t) n, timeout) == -1) {
    if (errno == EINTR)
      return 0;
    return ctl_img_fail (c->err, true, oldest (c), "poll: %s", strerror (errno));
  }
  for (int i = 0; i < n; i++) {
    struct nbd_handle *h = polled[i]->nbd;
    int r = 0;
    if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR))
        && (dirs[i] & LIBNBD_AIO_DIRECTION_READ))
      r = nbd_aio_notify_read (h);
    else if (fds[i].revents & POLLOUT)
      r = nbd_aio_notify_write (h);
    if (r == -1)
      return ctl_img_fail (c->err, true, oldest (c), "connection to %s: %s",
                        polled[i]->name, ctl_img_nbd_error ());
  }
  return 0;
}

static int
run (struct copy *c)
{
  bool more = true;              /* next_range may have more */
  for (;;) {
    if (interrupted)
      return ctl_img_fail (c->err, true, oldest (c), "interrupted by signal %d",
                        (int) interrupted);
    bool busy = false;
    struct slot *free_slot = NULL;
    for (int i = 0; i < IMG_REQUESTS; i++) {
      struct slot *s = &c->slots[i];
      if (s->err && s->state != SLOT_READING)
        return slot_failed (c, s);
      if (s->state == SLOT_READ && write_slot (c, s) < 0)
        return -1;
      if (s->state == SLOT_WRITING && s->writes == 0) {
        c->st->done += s->len;
        s->state = SLOT_FREE;
      }
      if (s->state == SLOT_FREE)
        free_slot = free_slot ? free_slot : s;
      else
        busy = true;
    }
    /* An NBD source gets all free slots at once (its reads do not block);
     * a file source one pread per round, so that the sockets move in
     * between. */
    bool started = false;
    while (more && free_slot) {
      int r = start_read (c, free_slot);
      if (r < 0)
        return -1;
      more = r > 0;
      started |= more;
      busy |= more;
      if (!more || c->src->nbd == NULL)
        break;
      free_slot = NULL;
      for (int i = 0; i < IMG_REQUESTS && !free_slot; i++)
        if (c->slots[i].state == SLOT_FREE)
          free_slot = &c->slots[i];
    }
    show_progress (c);
    if (!busy && !more)
      return 0;
    if (wait_io (c, started && c->src->nbd == NULL ? 0 : IMG_POLL_MS) < 0)
      return -1;
  }
}

int
ctl_img_copy (struct ctl_img_end *src, struct ctl_img_end *dst, uint64_t total,
              bool progress, struct ctl_img_stats *st, struct ctl_img_error *err)
{
  struct copy c = {
    .src = src, .dst = dst, .total = total, .st = st, .err = err,
    .request_size = IMG_REQUEST_SIZE, .src_extents = src->extents,
    .zero_block = dst->nbd ? IMG_ZERO_NBD : IMG_ZERO_FILE,
    .progress = progress,
  };
  int r = -1;

  memset (st, 0, sizeof *st);
  for (int i = 0; i < 2; i++) {
    uint32_t m = (i ? dst : src)->max_request / IMG_ALIGN * IMG_ALIGN;
    if (m >= IMG_ALIGN && m < c.request_size)
      c.request_size = m;
  }
  for (int i = 0; i < IMG_REQUESTS; i++) {
    if (posix_memalign ((void **) &c.slots[i].buf, 4096, IMG_REQUEST_SIZE) != 0) {
      c.slots[i].buf = NULL;
      ctl_img_fail (err, false, 0, "out of memory");
      goto out;
    }
  }
  c.start_ns = now_ns ();
  r = run (&c);
  if (r < 0 && interrupted)      /* whatever broke after a ^C, that is why */
    ctl_img_fail (err, true, err->offset, "interrupted by signal %d",
               (int) interrupted);
  st->seconds = (double) (now_ns () - c.start_ns) / 1e9;
  if (progress)
    fputs ("\r\033[K", stderr);

 out:
  if (r < 0) {
    /* Commands may still hold slot buffers: close the connections (libnbd
     * then drops them without calling back) before freeing the buffers. */
    struct ctl_img_error ignored;
    ctl_img_end_close (src, false, &ignored);
    ctl_img_end_close (dst, false, &ignored);
  }
  for (int i = 0; i < IMG_REQUESTS; i++)
    free (c.slots[i].buf);
  free (c.ext);
  return r;
}
