/* nbd/reply.c — transmission reply encoders (simple and structured).
 *
 * Each encoder writes a fixed header into a caller buffer and returns the
 * number of bytes written; payload bytes (read data, extents) are the
 * caller's to append, so data never has to be copied to build a reply.
 */
#include <string.h>

#include "nbd/nbd.h"

size_t
nbd_utf8_clip (const char *s, size_t len, size_t max)
{
  if (len <= max)
    return len;
  /* s[max] is the first byte dropped: if it continues a sequence, back
   * up to that sequence's lead byte and drop the whole character. */
  while (max > 0 && ((unsigned char) s[max] & 0xc0) == 0x80)
    max--;
  return max;
}

size_t
nbd_encode_simple_reply (uint8_t out[NBD_SIMPLE_REPLY_LEN], uint64_t cookie, uint32_t error)
{
  nbd_put32 (out, NBD_SIMPLE_REPLY_MAGIC);
  nbd_put32 (out + 4, error);
  nbd_put64 (out + 8, cookie);
  return NBD_SIMPLE_REPLY_LEN;
}

size_t
nbd_encode_chunk_header (uint8_t out[NBD_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
                         uint64_t cookie, uint32_t length)
{
  nbd_put32 (out, NBD_STRUCTURED_REPLY_MAGIC);
  nbd_put16 (out + 4, flags);
  nbd_put16 (out + 6, type);
  nbd_put64 (out + 8, cookie);
  nbd_put32 (out + 16, length);
  return NBD_CHUNK_HDR_LEN;
}

/* datalen must be at most 2^32 - 9 (the chunk length is 8 + datalen). */
size_t
nbd_encode_read_chunk (uint8_t out[NBD_READ_CHUNK_HDR_LEN], uint64_t cookie, uint64_t offset,
                       uint32_t datalen, bool done)
{
  nbd_encode_chunk_header (out, done ? NBD_REPLY_FLAG_DONE : 0,
                           NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + datalen);
  nbd_put64 (out + NBD_CHUNK_HDR_LEN, offset);
  return NBD_READ_CHUNK_HDR_LEN;
}

size_t
nbd_encode_hole_chunk (uint8_t out[NBD_HOLE_CHUNK_LEN], uint64_t cookie, uint64_t offset,
                       uint32_t len, bool done)
{
  nbd_encode_chunk_header (out, done ? NBD_REPLY_FLAG_DONE : 0,
                           NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
  nbd_put64 (out + NBD_CHUNK_HDR_LEN, offset);
  nbd_put32 (out + NBD_CHUNK_HDR_LEN + 8, len);
  return NBD_CHUNK_HDR_LEN + 12;
}

/* Returns bytes written: 26 + the message length kept, which is cut to
 * fit cap and NBD_MAX_STRING at a UTF-8 character boundary.  Returns 0 if
 * cap is below the 26-byte minimum. */
size_t
nbd_encode_error_chunk (uint8_t *out, size_t cap, uint64_t cookie, uint32_t error,
                        const char *msg)
{
  const size_t fixed = NBD_CHUNK_HDR_LEN + 6;
  size_t msglen = msg ? strlen (msg) : 0, room;

  if (cap < fixed)
    return 0;
  room = cap - fixed;
  if (room > NBD_MAX_STRING)
    room = NBD_MAX_STRING;
  msglen = nbd_utf8_clip (msg, msglen, room);
  nbd_encode_chunk_header (out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
                           (uint32_t) (6 + msglen));
  nbd_put32 (out + NBD_CHUNK_HDR_LEN, error);
  nbd_put16 (out + NBD_CHUNK_HDR_LEN + 4, (uint16_t) msglen);
  if (msglen)
    memcpy (out + fixed, msg, msglen);
  return fixed + msglen;
}

/* ndesc must be below 2^29 (the spec asks for at most 2^20 per chunk). */
size_t
nbd_encode_block_status (uint8_t out[24], uint64_t cookie, uint32_t context_id,
                         uint32_t ndesc, bool done)
{
  nbd_encode_chunk_header (out, done ? NBD_REPLY_FLAG_DONE : 0,
                           NBD_REPLY_TYPE_BLOCK_STATUS, cookie, 4 + 8 * ndesc);
  nbd_put32 (out + NBD_CHUNK_HDR_LEN, context_id);
  return NBD_CHUNK_HDR_LEN + 4;
}

size_t
nbd_encode_extent (uint8_t out[8], uint32_t length, uint32_t flags)
{
  nbd_put32 (out, length);
  nbd_put32 (out + 4, flags);
  return 8;
}
