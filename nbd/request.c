/* nbd/request.c — transmission requests: decoding, validation, error mapping.
 *
 * Validation follows doc/proto.md "Error values" and the per-command rules.
 * A request that breaks a rule gets an NBD error reply and the connection
 * lives on; only a WRITE whose payload we refuse to buffer ends it (the
 * spec allows a hard disconnect for payloads beyond 32 MiB).
 */
#include <errno.h>
#include <stdlib.h>

#include "nbd/nbd.h"

#define KNOWN_CMD_FLAGS (NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF \
                         | NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FAST_ZERO)

void
nbd_session_from_handshake (struct nbd_session *s, const struct nbd_handshake *hs)
{
  s->size = hs->info.size;
  s->tflags = hs->info.tflags;
  s->structured = hs->structured;
  s->meta_base_allocation = hs->meta_base_allocation && hs->structured;
  s->max_payload = NBD_MAX_PAYLOAD;
}

/* Returns 0, or -EPROTO if the magic is wrong. */
int
nbd_request_decode (const uint8_t hdr[NBD_REQUEST_LEN], struct nbd_request *req)
{
  if (nbd_get32 (hdr) != NBD_REQUEST_MAGIC)
    return -EPROTO;
  req->flags = nbd_get16 (hdr + 4);
  req->type = nbd_get16 (hdr + 6);
  req->cookie = nbd_get64 (hdr + 8);
  req->offset = nbd_get64 (hdr + 16);
  req->length = nbd_get32 (hdr + 24);
  return 0;
}

static int
fail (const char **why, const char *msg, int err)
{
  if (why)
    *why = msg;
  return err;
}

/* Returns 0, a positive NBD_E* error with *why set, or -EPROTO. */
int
nbd_request_validate (const struct nbd_session *s, const struct nbd_request *r,
                      const char **why)
{
  const uint16_t tf = s->tflags;
  const uint16_t fl = r->flags;
  bool writes = false, ranged = true;

  if (why)
    *why = NULL;

  switch (r->type) {
  case NBD_CMD_DISC:
    return 0;                   /* no reply possible; the caller closes */
  case NBD_CMD_WRITE:
    /* First: any other answer would oblige the caller to swallow the
     * payload it has refused to buffer. */
    if (r->length > s->max_payload)
      return fail (why, "write payload larger than the maximum payload", -EPROTO);
    writes = true;
    break;
  case NBD_CMD_READ:
    break;
  case NBD_CMD_FLUSH:
    if (!(tf & NBD_FLAG_SEND_FLUSH))
      return fail (why, "flush not negotiated", NBD_EINVAL);
    ranged = false;
    break;
  case NBD_CMD_TRIM:
    if (!(tf & NBD_FLAG_SEND_TRIM))
      return fail (why, "trim not negotiated", NBD_EINVAL);
    writes = true;
    break;
  case NBD_CMD_CACHE:
    if (!(tf & NBD_FLAG_SEND_CACHE))
      return fail (why, "cache not negotiated", NBD_EINVAL);
    break;
  case NBD_CMD_WRITE_ZEROES:
    if (!(tf & NBD_FLAG_SEND_WRITE_ZEROES))
      return fail (why, "write zeroes not negotiated", NBD_EINVAL);
    writes = true;
    break;
  case NBD_CMD_BLOCK_STATUS:
    if (!s->structured || !s->meta_base_allocation)
      return fail (why, "block status without a selected metadata context",
                   NBD_EINVAL);
    break;
  default:
    return fail (why, "unknown command", NBD_EINVAL);
  }

  /* Command flags. */
  if (fl & ~KNOWN_CMD_FLAGS)
    return fail (why, "unknown command flags", NBD_EINVAL);
  /* FUA: the spec says it "is valid for all commands, provided
   * NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST
   * accept all commands with this bit set", so only negotiation counts. */
  if ((fl & NBD_CMD_FLAG_FUA) && !(tf & NBD_FLAG_SEND_FUA))
    return fail (why, "FUA flag not negotiated", NBD_EINVAL);
  if ((fl & NBD_CMD_FLAG_NO_HOLE) && r->type != NBD_CMD_WRITE_ZEROES)
    return fail (why, "NO_HOLE flag is only valid on write zeroes", NBD_EINVAL);
  if (fl & NBD_CMD_FLAG_FAST_ZERO) {
    if (r->type != NBD_CMD_WRITE_ZEROES)
      return fail (why, "FAST_ZERO flag is only valid on write zeroes", NBD_EINVAL);
    if (!(tf & NBD_FLAG_SEND_FAST_ZERO))
      return fail (why, "FAST_ZERO flag not negotiated", NBD_EINVAL);
  }
  if (fl & NBD_CMD_FLAG_DF) {
    if (r->type != NBD_CMD_READ)
      return fail (why, "DF flag is only valid on read", NBD_EINVAL);
    if (!s->structured || !(tf & NBD_FLAG_SEND_DF))
      return fail (why, "DF flag not negotiated", NBD_EINVAL);
  }
  if ((fl & NBD_CMD_FLAG_REQ_ONE) && r->type != NBD_CMD_BLOCK_STATUS)
    return fail (why, "REQ_ONE flag is only valid on block status", NBD_EINVAL);

  if (writes && (tf & NBD_FLAG_READ_ONLY))
    return fail (why, "export is read-only", NBD_EPERM);

  if (!ranged) {
    if (r->offset != 0 || r->length != 0)
      return fail (why, "flush with nonzero offset or length", NBD_EINVAL);
    return 0;
  }

  if (r->type == NBD_CMD_READ && r->length > s->max_payload)
    return fail (why, "read longer than the maximum payload", NBD_EINVAL);

  /* Written so that offset + length cannot overflow. */
  if (r->offset > s->size || r->length > s->size - r->offset) {
    if (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES)
      return fail (why, "request beyond end of export", NBD_ENOSPC);
    return fail (why, "request beyond end of export", NBD_EINVAL);
  }
  return 0;
}

/* Map a positive errno (a negative one is accepted too) to the wire. */
uint32_t
nbd_errno_to_wire (int err)
{
  if (err < 0)
    err = -err;
  if (err == 0)
    return 0;
  /* ENOTSUP and EOPNOTSUPP are one value on Linux, so no switch. */
  if (err == ENOTSUP || err == EOPNOTSUPP)
    return NBD_ENOTSUP;
  switch (err) {
  case EPERM:
  case EROFS:
    return NBD_EPERM;
  case EIO:
    return NBD_EIO;
  case ENOMEM:
    return NBD_ENOMEM;
  case EINVAL:
    return NBD_EINVAL;
  case ENOSPC:
  case EDQUOT:
  case EFBIG:
    return NBD_ENOSPC;
  case EOVERFLOW:
    return NBD_EOVERFLOW;
  case ESHUTDOWN:
    return NBD_ESHUTDOWN;
  default:
    return NBD_EIO;
  }
}

const char *
nbd_cmd_name (uint16_t type)
{
  switch (type) {
  case NBD_CMD_READ:         return "NBD_CMD_READ";
  case NBD_CMD_WRITE:        return "NBD_CMD_WRITE";
  case NBD_CMD_DISC:         return "NBD_CMD_DISC";
  case NBD_CMD_FLUSH:        return "NBD_CMD_FLUSH";
  case NBD_CMD_TRIM:         return "NBD_CMD_TRIM";
  case NBD_CMD_CACHE:        return "NBD_CMD_CACHE";
  case NBD_CMD_WRITE_ZEROES: return "NBD_CMD_WRITE_ZEROES";
  case NBD_CMD_BLOCK_STATUS: return "NBD_CMD_BLOCK_STATUS";
  case NBD_CMD_RESIZE:       return "NBD_CMD_RESIZE";
  default:                   return "unknown command";
  }
}

const char *
nbd_opt_name (uint32_t opt)
{
  switch (opt) {
  case NBD_OPT_EXPORT_NAME:       return "NBD_OPT_EXPORT_NAME";
  case NBD_OPT_ABORT:             return "NBD_OPT_ABORT";
  case NBD_OPT_LIST:              return "NBD_OPT_LIST";
  case NBD_OPT_PEEK_EXPORT:       return "NBD_OPT_PEEK_EXPORT";
  case NBD_OPT_STARTTLS:          return "NBD_OPT_STARTTLS";
  case NBD_OPT_INFO:              return "NBD_OPT_INFO";
  case NBD_OPT_GO:                return "NBD_OPT_GO";
  case NBD_OPT_STRUCTURED_REPLY:  return "NBD_OPT_STRUCTURED_REPLY";
  case NBD_OPT_LIST_META_CONTEXT: return "NBD_OPT_LIST_META_CONTEXT";
  case NBD_OPT_SET_META_CONTEXT:  return "NBD_OPT_SET_META_CONTEXT";
  case NBD_OPT_EXTENDED_HEADERS:  return "NBD_OPT_EXTENDED_HEADERS";
  default:                        return "unknown option";
  }
}
