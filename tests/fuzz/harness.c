/* tests/fuzz/harness.c — see harness.h. */
#include "tests/fuzz/harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockd/internal.h"
#include "common/log.h"

#define STALL_MS 2000           /* nothing moved for this long: a hang */
#define RELEASE_MS 5000         /* a closed connection must be freed by then */

static char fz_dir[512];
static unsigned fz_flags;
static int fz_port;
static char **fz_argv;

void
fz_fail (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  fputs ("fuzz harness: ", stderr);
  vfprintf (stderr, fmt, ap);
  fputc ('\n', stderr);
  va_end (ap);
  abort ();
}

static int64_t
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
rm_one (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void) sb; (void) flag; (void) ftw;
  remove (path);
  return 0;
}

static void
rm_rf (const char *path)
{
  nftw (path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Directories left by fuzzers that crashed (their pid is gone). */
static void
remove_stale (const char *base)
{
  DIR *d = opendir (base);
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir (d)) != NULL) {
    if (strncmp (e->d_name, "blockd-fuzz-", 12) != 0)
      continue;
    const char *dash = strrchr (e->d_name, '-');
    long pid = strtol (dash + 1, NULL, 10);
    if (pid > 0 && (kill ((pid_t) pid, 0) == 0 || errno == EPERM))
      continue;
    char p[768];
    snprintf (p, sizeof p, "%s/%s", base, e->d_name);
    rm_rf (p);
  }
  closedir (d);
}

static void
fz_fini (void)
{
  if (fz_flags & FZ_API)
    blk_api_stop ();
  if (fz_flags & FZ_LOOPS)
    blk_loops_stop ();
  if (blk_store)
    vol_store_close (blk_store);
  blk_store = NULL;
  if (fz_dir[0] && getenv ("FUZZ_KEEP_DIR") == NULL)
    rm_rf (fz_dir);
}

static int
free_port (void)
{
  int s = socket (AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t alen = sizeof a;
  if (s < 0 || bind (s, (struct sockaddr *) &a, sizeof a) < 0
      || getsockname (s, (struct sockaddr *) &a, &alen) < 0)
    fz_fail ("cannot find a free port: %s", strerror (errno));
  close (s);
  return ntohs (a.sin_port);
}

void
fz_default_flags (int *argc, char ***argv)
{
  static const char *const defaults[] = { "-detect_leaks=0", "-timeout=10" };
  const size_t nd = sizeof defaults / sizeof defaults[0];
  char **nv = calloc ((size_t) *argc + nd + 1, sizeof *nv);
  if (nv == NULL)
    return;
  int n = 0;
  nv[n++] = (*argv)[0];
  for (size_t i = 0; i < nd; i++)
    nv[n++] = (char *) defaults[i];   /* later flags override these */
  for (int i = 1; i < *argc; i++)
    nv[n++] = (*argv)[i];
  nv[n] = NULL;
  *argc = n;
  *argv = fz_argv = nv;                /* lives as long as the process */
}

void
fz_init (const char *target, unsigned flags, int max_inflight)
{
  char err[512];
  signal (SIGPIPE, SIG_IGN);
  log_set_level (getenv ("FUZZ_LOG_LEVEL") ? getenv ("FUZZ_LOG_LEVEL") : "error");
  blk_config_defaults (&blk_cfg);
  blk_cfg.threads = 1;
  blk_cfg.handshake_timeout = 2;
  if (max_inflight > 0)
    blk_cfg.max_inflight = max_inflight;
  snprintf (blk_cfg.nbd, sizeof blk_cfg.nbd, "127.0.0.1:10809");

  /* O_DIRECT wants a real filesystem: FUZZ_TMPDIR (the Makefile passes
   * build/tmp), else /var/tmp. */
  const char *base = getenv ("FUZZ_TMPDIR");
  if (base == NULL || *base == '\0')
    base = "/var/tmp";
  mkdir (base, 0755);
  remove_stale (base);
  snprintf (fz_dir, sizeof fz_dir, "%s/blockd-fuzz-%s-%ld", base, target, (long) getpid ());
  rm_rf (fz_dir);
  snprintf (blk_cfg.data_dir, sizeof blk_cfg.data_dir, "%s", fz_dir);
  struct vol_store_params sp = { .dir = fz_dir, .capacity = 64u << 20, .chunk_size = 1u << 20 };
  if (vol_store_open (&sp, &blk_store, err, sizeof err) < 0)
    fz_fail ("vol_store_open %s: %s", fz_dir, err);
  fz_flags = flags;
  atexit (fz_fini);
  struct vol_info vi;
  if (vol_create (blk_store, FZ_VOLUME, FZ_VOLUME_SIZE, NULL, &vi, err, sizeof err) < 0)
    fz_fail ("vol_create: %s", err);
  struct vol_snap_info si;
  if (vol_snapshot_create (blk_store, FZ_VOLUME, FZ_SNAPSHOT, &si, err, sizeof err) < 0)
    fz_fail ("vol_snapshot_create: %s", err);
  if ((flags & FZ_LOOPS) && blk_loops_start (1, err, sizeof err) < 0)
    fz_fail ("blk_loops_start: %s", err);
  if (flags & FZ_API) {
    fz_port = free_port ();
    snprintf (blk_cfg.api, sizeof blk_cfg.api, "127.0.0.1:%d", fz_port);
    if (blk_api_start (blk_cfg.api, err, sizeof err) < 0)
      fz_fail ("blk_api_start: %s", err);
  }
}

int fz_api_port (void) { return fz_port; }

void
fz_renew_snapshot (unsigned n)
{
  static unsigned calls;
  char err[400];
  struct vol_snap_info si;
  if (++calls % n)
    return;
  if (vol_snapshot_delete (blk_store, FZ_VOLUME "@" FZ_SNAPSHOT, true, err, sizeof err) < 0)
    fz_fail ("vol_snapshot_delete: %s", err);
  if (vol_snapshot_create (blk_store, FZ_VOLUME, FZ_SNAPSHOT, &si, err, sizeof err) < 0)
    fz_fail ("vol_snapshot_create: %s", err);
}

int
fz_nbd_connect (void)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    fz_fail ("socketpair: %s", strerror (errno));
  fcntl (sv[0], F_SETFL, fcntl (sv[0], F_GETFL) | O_NONBLOCK);
  blk_loop_adopt (sv[1]);
  return sv[0];
}

void
fz_exchange (int fd, const uint8_t *data, size_t len, bool until_eof,
             fz_sink sink, bool (*done) (void *opaque), void *opaque)
{
  static uint8_t buf[256 * 1024];
  size_t sent = 0;
  bool shut = false;
  int64_t last = now_ms ();

  for (;;) {
    if (sent == len && !until_eof && (done == NULL || done (opaque)))
      return;
    if (sent == len && until_eof && !shut) {
      shutdown (fd, SHUT_WR);
      shut = true;
    }
    struct pollfd p = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
    int r = poll (&p, 1, 100);
    if (r < 0 && errno != EINTR)
      fz_fail ("poll: %s", strerror (errno));
    bool moved = false;
    if (sent < len && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = send (fd, data + sent, len - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += (size_t) n;
        moved = true;
      }
      else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        /* The server closed on us (a protocol error ends the stream):
         * the rest of the input is not wanted. */
        sent = len;
        moved = true;
      }
    }
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      ssize_t n = recv (fd, buf, sizeof buf, 0);
      if (n > 0) {
        if (sink)
          sink (opaque, buf, (size_t) n);
        moved = true;
      }
      else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (until_eof || (done && done (opaque)))
          return;
        fz_fail ("the server closed the connection during the harness's own handshake");
      }
    }
    int64_t t = now_ms ();
    if (moved)
      last = t;
    else if (t - last > STALL_MS)
      fz_fail ("hang: nothing moved for %d ms (sent %zu of %zu bytes%s)", STALL_MS, sent, len,
               shut ? ", write side shut" : "");
  }
}

void
fz_nbd_close (int fd)
{
  close (fd);
  int64_t t0 = now_ms ();
  while (atomic_load (&blk_nconns) != 0) {
    if (now_ms () - t0 > RELEASE_MS)
      fz_fail ("connection leak: %u connection(s) still held %d ms after the peer closed",
               atomic_load (&blk_nconns), RELEASE_MS);
    usleep (200);
  }
}

/* ---- the server's bytes ------------------------------------------------------ */
enum { P_GREETING, P_OPT_HDR, P_OPT_DATA, P_REPLY_HDR, P_REPLY_DATA, P_OFF };

static bool
valid_nbd_error (uint32_t e)
{
  switch (e) {
  case NBD_EPERM: case NBD_EIO: case NBD_ENOMEM: case NBD_EINVAL: case NBD_ENOSPC:
  case NBD_EOVERFLOW: case NBD_ENOTSUP: case NBD_ESHUTDOWN:
    return true;
  default:
    return false;
  }
}

void
fz_replies_init (struct fz_replies *r, bool structured)
{
  memset (r, 0, sizeof *r);
  r->phase = P_GREETING;
  r->want = NBD_GREETING_LEN;
  r->structured = structured;
}

void
fz_replies_init_transmission (struct fz_replies *r)
{
  memset (r, 0, sizeof *r);
  r->phase = P_REPLY_HDR;
  r->want = 4;
  r->structured = true;
  r->go_acked = true;
}

/* A complete header r->hdr[0..r->want) is there: check it, and set what
 * comes next. */
static void
header_done (struct fz_replies *r)
{
  const uint8_t *h = r->hdr;
  switch (r->phase) {
  case P_GREETING:
    if (nbd_get64 (h) != NBD_MAGIC || nbd_get64 (h + 8) != NBD_OPT_MAGIC
        || nbd_get16 (h + 16) != (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
      fz_fail ("bad greeting");
    r->phase = P_OPT_HDR;
    r->want = NBD_OPTION_REPLY_LEN;
    break;
  case P_OPT_HDR: {
    if (nbd_get64 (h) != NBD_REP_MAGIC) {
      /* NBD_OPT_EXPORT_NAME's reply has no header, and the transmission
       * phase may follow it: we cannot frame the rest. */
      r->phase = P_OFF;
      return;
    }
    uint32_t opt = nbd_get32 (h + 8), type = nbd_get32 (h + 12), len = nbd_get32 (h + 16);
    r->option_replies++;
    if (len > NBD_MAX_STRING + 64 && type != NBD_REP_SERVER)
      fz_fail ("option reply of %u bytes (type 0x%x to option %u)", len, type, opt);
    if (type == NBD_REP_ACK && len != 0)
      fz_fail ("NBD_REP_ACK with %u bytes of data", len);
    if ((type & NBD_REP_FLAG_ERROR)
        && !(type >= NBD_REP_ERR_UNSUP && type <= NBD_REP_ERR_TOO_BIG))
      fz_fail ("option error reply of unknown type 0x%x", type);
    if (!(type & NBD_REP_FLAG_ERROR) && type != NBD_REP_ACK && type != NBD_REP_SERVER
        && type != NBD_REP_INFO && type != NBD_REP_META_CONTEXT)
      fz_fail ("option reply of unknown type 0x%x", type);
    if (type == NBD_REP_ACK && opt == NBD_OPT_GO) {
      r->go_acked = true;
      r->phase = r->structured ? P_REPLY_HDR : P_OFF;
      r->want = 4;
      return;
    }
    r->skip = len;
    r->phase = len ? P_OPT_DATA : P_OPT_HDR;
    r->want = NBD_OPTION_REPLY_LEN;
    break;
  }
  case P_REPLY_HDR: {
    uint32_t magic = nbd_get32 (h);
    if (r->want == 4) {
      if (magic == NBD_SIMPLE_REPLY_MAGIC)
        r->want = NBD_SIMPLE_REPLY_LEN;
      else if (magic == NBD_STRUCTURED_REPLY_MAGIC)
        r->want = NBD_CHUNK_HDR_LEN;
      else
        fz_fail ("reply with bad magic 0x%08x", magic);
      return;
    }
    if (magic == NBD_SIMPLE_REPLY_MAGIC) {
      uint32_t e = nbd_get32 (h + 4);
      if (e != 0 && !valid_nbd_error (e))
        fz_fail ("simple reply with error %u", e);
      r->finals++;
      r->want = 4;
      return;
    }
    uint16_t flags = nbd_get16 (h + 4), type = nbd_get16 (h + 6);
    uint32_t len = nbd_get32 (h + 16);
    if (flags & ~NBD_REPLY_FLAG_DONE)
      fz_fail ("reply chunk with unknown flags 0x%x", flags);
    switch (type) {
    case NBD_REPLY_TYPE_NONE:
      if (len != 0 || !(flags & NBD_REPLY_FLAG_DONE))
        fz_fail ("NBD_REPLY_TYPE_NONE with length %u flags 0x%x", len, flags);
      break;
    case NBD_REPLY_TYPE_OFFSET_DATA:
      if (len <= 8 || len > 8 + NBD_MAX_PAYLOAD)
        fz_fail ("OFFSET_DATA chunk of %u bytes", len);
      break;
    case NBD_REPLY_TYPE_OFFSET_HOLE:
      if (len != 12)
        fz_fail ("OFFSET_HOLE chunk of %u bytes", len);
      break;
    case NBD_REPLY_TYPE_BLOCK_STATUS:
      if (len < 12 || (len - 4) % 8 != 0)
        fz_fail ("BLOCK_STATUS chunk of %u bytes", len);
      break;
    case NBD_REPLY_TYPE_ERROR:
    case NBD_REPLY_TYPE_ERROR_OFFSET:
      if (len < 6 || len > 6 + NBD_MAX_STRING + 8)
        fz_fail ("error chunk of %u bytes", len);
      if (r->want == NBD_CHUNK_HDR_LEN) {
        r->want = NBD_CHUNK_HDR_LEN + 6;   /* the error and the message length too */
        return;
      }
      {
        uint32_t e = nbd_get32 (h + 20);
        uint16_t mlen = nbd_get16 (h + 24);
        if (!valid_nbd_error (e))
          fz_fail ("error chunk with error %u", e);
        if ((uint32_t) mlen + 6 + (type == NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0) != len)
          fz_fail ("error chunk of %u bytes with a message of %u", len, mlen);
      }
      len -= 6;
      break;
    default:
      fz_fail ("reply chunk of unknown type %u", type);
    }
    if (flags & NBD_REPLY_FLAG_DONE)
      r->finals++;
    r->skip = len;
    r->phase = len ? P_REPLY_DATA : P_REPLY_HDR;
    r->want = 4;
    break;
  }
  default:
    break;
  }
}

void
fz_replies_feed (void *opaque, const uint8_t *p, size_t n)
{
  struct fz_replies *r = opaque;
  while (n && r->phase != P_OFF) {
    if (r->phase == P_OPT_DATA || r->phase == P_REPLY_DATA) {
      size_t k = n < r->skip ? n : (size_t) r->skip;
      p += k;
      n -= k;
      r->skip -= k;
      if (r->skip == 0) {
        r->phase = r->phase == P_OPT_DATA ? P_OPT_HDR : P_REPLY_HDR;
        r->hlen = 0;
      }
      continue;
    }
    size_t k = r->want - r->hlen;
    if (k > n)
      k = n;
    memcpy (r->hdr + r->hlen, p, k);
    r->hlen += k;
    p += k;
    n -= k;
    if (r->hlen < r->want)
      continue;
    size_t before = r->want;
    int phase = r->phase;
    header_done (r);
    /* a header that grew (4 -> 16/20, 20 -> 26) keeps its bytes */
    if (!(r->phase == phase && r->want > before))
      r->hlen = 0;
  }
}

unsigned
fz_count_requests (const uint8_t *p, size_t n, bool *clean, unsigned *max)
{
  unsigned count = 0;
  size_t pos = 0;
  *clean = true;
  *max = 0;
  while (n - pos >= NBD_REQUEST_LEN) {
    struct nbd_request rq;
    if (nbd_request_decode (p + pos, &rq) < 0) {
      *clean = false;
      break;
    }
    pos += NBD_REQUEST_LEN;
    if (rq.type == NBD_CMD_DISC)
      break;
    if (rq.type == NBD_CMD_WRITE) {
      if (rq.length > NBD_MAX_PAYLOAD) {
        *clean = false;
        break;
      }
      if (n - pos < rq.length) {
        /* a refused WRITE may be answered before its payload is in */
        *clean = false;
        *max = count + 1;
        return count;
      }
      pos += rq.length;
    }
    count++;
  }
  /* a partial header at the end is just the end of the stream */
  *max = count;
  return count;
}

bool
fz_replies_at_boundary (const struct fz_replies *r)
{
  return r->phase == P_REPLY_HDR && r->hlen == 0;
}
