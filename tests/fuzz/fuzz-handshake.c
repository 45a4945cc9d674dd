/* tests/fuzz/fuzz-handshake.c — the input is everything a client sends
 * from the first byte after the server's greeting: client flags, options,
 * and whatever follows a successful NBD_OPT_GO / NBD_OPT_EXPORT_NAME.
 *
 * Beyond the sanitizers it checks the greeting and every option reply up
 * to the ACK of NBD_OPT_GO (magic, type, length), the transmission replies
 * after it when structured replies were negotiated, that the connection
 * ends when the client's stream does, and that it is released. */
#include <stdbool.h>
#include <string.h>

#include "nbd/nbd.h"
#include "tests/fuzz/harness.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fz_default_flags (argc, argv);
  fz_init ("handshake", FZ_LOOPS, 0);
  return 0;
}

/* Does the client ask for structured replies before its first GO?  (The
 * reply checker must know whether replies after the GO are framed.) */
static bool
asks_structured (const uint8_t *p, size_t n)
{
  size_t pos = 4;
  while (n >= pos + NBD_OPTION_HDR_LEN && nbd_get64 (p + pos) == NBD_OPT_MAGIC) {
    uint32_t opt = nbd_get32 (p + pos + 8), len = nbd_get32 (p + pos + 12);
    if (opt == NBD_OPT_STRUCTURED_REPLY && len == 0)
      return true;
    if (opt == NBD_OPT_GO || opt == NBD_OPT_EXPORT_NAME || len > NBD_MAX_OPTION_LEN)
      return false;
    pos += NBD_OPTION_HDR_LEN + len;
  }
  return false;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  fz_renew_snapshot (64);
  int fd = fz_nbd_connect ();
  struct fz_replies r;
  fz_replies_init (&r, asks_structured (data, size));
  fz_exchange (fd, data, size, true, fz_replies_feed, NULL, &r);
  fz_nbd_close (fd);
  return 0;
}
