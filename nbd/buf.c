/* nbd/buf.c — the growable output buffer the handshake appends replies to.
 *
 * The caller owns struct nbd_buf and its data; nbd_buf_consume drops bytes
 * from the front once they have been written to the socket.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/nbd.h"

void
nbd_buf_free (struct nbd_buf *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Make room for n more bytes.  Returns 0 or -ENOMEM. */
int
nbd_buf_reserve (struct nbd_buf *b, size_t n)
{
  size_t want, cap;
  uint8_t *p;

  if (n > SIZE_MAX - b->len)
    return -ENOMEM;
  want = b->len + n;
  if (want <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < want)
    cap = cap > SIZE_MAX / 2 ? want : cap * 2;
  p = realloc (b->data, cap);
  if (p == NULL)
    return -ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int
nbd_buf_append (struct nbd_buf *b, const void *p, size_t n)
{
  int r;

  if (n == 0)
    return 0;
  r = nbd_buf_reserve (b, n);
  if (r < 0)
    return r;
  memcpy (b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* Drop the first n bytes (after they were sent).  n larger than the
 * buffered length empties it. */
void
nbd_buf_consume (struct nbd_buf *b, size_t n)
{
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove (b->data, b->data + n, b->len - n);
  b->len -= n;
}
