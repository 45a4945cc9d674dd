/* tests/fuzz/fuzz-requests.c — the transmission phase: the harness
 * negotiates like a modern client (fixed newstyle, structured replies,
 * base:allocation, NBD_OPT_GO "disk"), then the input is the stream of
 * requests (and WRITE payloads) the client sends.
 *
 * Beyond the sanitizers it checks that every reply is well framed, and
 * that when the stream ends cleanly (at a request boundary, or with
 * NBD_CMD_DISC) every request read before got exactly one final reply —
 * NBD_CMD_DISC obliges the server to answer everything sent before it.
 * max-inflight is 4 here so that the request limit is exercised too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbd/nbd.h"
#include "tests/fuzz/harness.h"

static uint8_t hello[256];
static bool lenient;
static size_t hello_len;

static void
put_option (uint32_t opt, const void *data, uint32_t len)
{
  nbd_put64 (hello + hello_len, NBD_OPT_MAGIC);
  nbd_put32 (hello + hello_len + 8, opt);
  nbd_put32 (hello + hello_len + 12, len);
  if (len)
    memcpy (hello + hello_len + 16, data, len);
  hello_len += 16 + len;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fz_default_flags (argc, argv);
  fz_init ("requests", FZ_LOOPS, 4);
  lenient = getenv ("FUZZ_LENIENT") && strcmp (getenv ("FUZZ_LENIENT"), "1") == 0;
  const char *name = FZ_VOLUME, *ctx = "base:allocation";
  uint32_t nl = (uint32_t) strlen (name), cl = (uint32_t) strlen (ctx);
  uint8_t d[128];

  nbd_put32 (hello, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
  hello_len = 4;
  put_option (NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  nbd_put32 (d, nl);
  memcpy (d + 4, name, nl);
  nbd_put32 (d + 4 + nl, 1);
  nbd_put32 (d + 8 + nl, cl);
  memcpy (d + 12 + nl, ctx, cl);
  put_option (NBD_OPT_SET_META_CONTEXT, d, 12 + nl + cl);
  nbd_put32 (d, nl);
  memcpy (d + 4, name, nl);
  nbd_put16 (d + 4 + nl, 0);
  put_option (NBD_OPT_GO, d, 6 + nl);
  return 0;
}

static bool
go_acked (void *opaque)
{
  return ((struct fz_replies *) opaque)->go_acked;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  fz_renew_snapshot (64);
  int fd = fz_nbd_connect ();
  struct fz_replies hs;
  fz_replies_init (&hs, true);
  fz_exchange (fd, hello, hello_len, false, fz_replies_feed, go_acked, &hs);

  struct fz_replies r;
  fz_replies_init_transmission (&r);
  /* bytes of the GO's replies after its ACK cannot exist: the ACK is last */
  fz_exchange (fd, data, size, true, fz_replies_feed, NULL, &r);
  bool clean;
  unsigned max;
  unsigned want = fz_count_requests (data, size, &clean, &max);
  if (r.finals > max)
    fz_fail ("%u final replies to %u requests", r.finals, max);
  /* FUZZ_LENIENT=1 tolerates lost replies, to look for other bugs while
   * that one is open. */
  if (clean && r.finals != want && !lenient)
    fz_fail ("%u requests, then a clean end of stream (or NBD_CMD_DISC), but %u final replies",
             want, r.finals);
  if (clean && !fz_replies_at_boundary (&r))
    fz_fail ("the server closed in the middle of a reply");
  fz_nbd_close (fd);
  return 0;
}
