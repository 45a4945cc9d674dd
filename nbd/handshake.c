/* nbd/handshake.c — fixed newstyle negotiation, server side.
 *
 * The state machine (see enum nbd_hs_state in nbd.h):
 *
 *   CLIENT_FLAGS --4 bytes--> OPTIONS --GO ack / EXPORT_NAME ok--> TRANSMISSION
 *        |                     |  \--ABORT / EXPORT_NAME refused--> CLOSED
 *        \--bad flags--> DEAD <-/ bad option magic, out of memory
 *
 * nbd_hs_input consumes whole options only, so the caller can hand it
 * whatever arrived on the socket and keep the unconsumed tail.  The one
 * exception is an option whose header announces more than
 * NBD_MAX_OPTION_LEN bytes: its data is skipped as it arrives (never
 * buffered) and then refused with NBD_REP_ERR_TOO_BIG.
 *
 * Every option error reply carries a message for a person (the payload of
 * an option error reply is a UTF-8 string).  Option errors keep the
 * connection; only a broken stream (DEAD) or the end of negotiation
 * (CLOSED, TRANSMISSION) stops consumption.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/nbd.h"

#define META_BASE_ALLOCATION "base:allocation"

/* Transmission flags this module knows how to validate requests for. */
#define KNOWN_TFLAGS (NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH \
                      | NBD_FLAG_SEND_FUA | NBD_FLAG_ROTATIONAL | NBD_FLAG_SEND_TRIM \
                      | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF               \
                      | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE               \
                      | NBD_FLAG_SEND_FAST_ZERO)

struct piece {
  const void *p;
  size_t len;
};

/* ---- replies ------------------------------------------------------------- */

/* Append one option reply whose payload is the concatenation of n pieces.
 * All or nothing.  Returns 0 or -ENOMEM. */
static int
reply_pieces (struct nbd_buf *out, uint32_t opt, uint32_t type,
              const struct piece *pc, size_t n)
{
  size_t total = 0, i;
  uint8_t *p;
  int r;

  for (i = 0; i < n; i++)
    total += pc[i].len;
  r = nbd_buf_reserve (out, NBD_OPTION_REPLY_LEN + total);
  if (r < 0)
    return r;
  p = out->data + out->len;
  nbd_put64 (p, NBD_REP_MAGIC);
  nbd_put32 (p + 8, opt);
  nbd_put32 (p + 12, type);
  nbd_put32 (p + 16, (uint32_t) total);
  p += NBD_OPTION_REPLY_LEN;
  for (i = 0; i < n; i++) {
    if (pc[i].len)
      memcpy (p, pc[i].p, pc[i].len);
    p += pc[i].len;
  }
  out->len += NBD_OPTION_REPLY_LEN + total;
  return 0;
}

static int
reply_ack (struct nbd_buf *out, uint32_t opt)
{
  return reply_pieces (out, opt, NBD_REP_ACK, NULL, 0);
}

/* Append an error reply of the given type with a printf-style message.
 * Returns 0 or -ENOMEM. */
static int __attribute__ ((format (printf, 4, 5)))
reply_error (struct nbd_buf *out, uint32_t opt, uint32_t type, const char *fmt, ...)
{
  char msg[NBD_MAX_STRING + 1];
  struct piece pc;
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (n < 0)
    msg[0] = '\0';
  pc.p = msg;
  pc.len = nbd_utf8_clip (msg, strlen (msg), NBD_MAX_STRING);
  return reply_pieces (out, opt, type, &pc, 1);
}

/* Record why the handshake ended (hs->error). */
static void __attribute__ ((format (printf, 2, 3)))
set_error (struct nbd_handshake *hs, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  if (vsnprintf (hs->error, sizeof hs->error, fmt, ap) < 0)
    strcpy (hs->error, "handshake failed");
  va_end (ap);
}

/* ---- helpers ------------------------------------------------------------- */

/* A client string: at most NBD_MAX_STRING bytes and no NUL. */
static const char *
check_string (const uint8_t *p, uint32_t len)
{
  if (len > NBD_MAX_STRING)
    return "longer than 4096 bytes";
  if (len && memchr (p, '\0', len) != NULL)
    return "contains a NUL byte";
  return NULL;
}

/* Make the export's flags and sizes safe to advertise on this connection. */
static void
fix_info (const struct nbd_handshake *hs, struct nbd_export_info *info)
{
  info->tflags &= KNOWN_TFLAGS;
  info->tflags |= NBD_FLAG_HAS_FLAGS;
  if (!hs->structured)          /* spec: MUST be clear without structured replies */
    info->tflags &= ~NBD_FLAG_SEND_DF;
  if (!(info->tflags & NBD_FLAG_SEND_WRITE_ZEROES))
    info->tflags &= ~NBD_FLAG_SEND_FAST_ZERO;
  if (info->min_block == 0)
    info->min_block = 1;
  if (info->pref_block == 0)
    info->pref_block = info->min_block > 4096 ? info->min_block : 4096;
  if (info->max_block == 0 || info->max_block > NBD_MAX_PAYLOAD)
    info->max_block = NBD_MAX_PAYLOAD;
  info->description[sizeof info->description - 1] = '\0';
}

/* Look NAME up.  Returns 0 with *info filled, or a negative errno with
 * *rep set to the option error reply and msg to the message for it. */
static int
lookup (struct nbd_handshake *hs, const char *name, struct nbd_export_info *info,
        uint32_t *rep, char *msg, size_t msglen)
{
  int r;

  memset (info, 0, sizeof *info);
  msg[0] = '\0';
  if (hs->ops == NULL || hs->ops->lookup == NULL)
    r = -ENOENT;
  else
    r = hs->ops->lookup (hs->opaque, name, info, msg, msglen);
  msg[msglen - 1] = '\0';
  if (r >= 0) {
    fix_info (hs, info);
    return 0;
  }
  switch (r) {
  case -ENOENT:    *rep = NBD_REP_ERR_UNKNOWN; break;
  case -ESHUTDOWN: *rep = NBD_REP_ERR_SHUTDOWN; break;
  case -EPERM:
  case -EACCES:    *rep = NBD_REP_ERR_POLICY; break;
  default:         *rep = NBD_REP_ERR_PLATFORM; break;
  }
  if (msg[0] == '\0') {
    if (r == -ENOENT)
      snprintf (msg, msglen, "export \"%.256s\" does not exist", name);
    else
      snprintf (msg, msglen, "export \"%.256s\": %s", name, strerror (-r));
  }
  return r;
}

/* ---- options ------------------------------------------------------------- */

/* NBD_OPT_EXPORT_NAME: no error reply is possible, so a refusal closes. */
static int
opt_export_name (struct nbd_handshake *hs, const uint8_t *data, uint32_t len,
                 struct nbd_buf *out)
{
  char name[NBD_MAX_STRING + 1], msg[NBD_MAX_STRING];
  struct nbd_export_info info;
  uint8_t reply[8 + 2 + 124];
  const char *bad;
  uint32_t rep;
  char *dup;
  int r;

  bad = check_string (data, len);
  if (bad) {
    hs->state = NBD_HS_CLOSED;
    set_error (hs, "NBD_OPT_EXPORT_NAME: export name %s", bad);
    return 0;
  }
  memcpy (name, data, len);
  name[len] = '\0';
  if (lookup (hs, name, &info, &rep, msg, sizeof msg) < 0) {
    hs->state = NBD_HS_CLOSED;
    set_error (hs, "NBD_OPT_EXPORT_NAME: %s", msg);
    return 0;
  }
  dup = strdup (name);
  if (dup == NULL)
    return -ENOMEM;
  memset (reply, 0, sizeof reply);
  nbd_put64 (reply, info.size);
  nbd_put16 (reply + 8, info.tflags);
  r = nbd_buf_append (out, reply, hs->no_zeroes ? 10 : sizeof reply);
  if (r < 0) {
    free (dup);
    return r;
  }
  free (hs->export_name);
  hs->export_name = dup;
  hs->info = info;
  if (hs->meta_export == NULL || strcmp (hs->meta_export, name) != 0)
    hs->meta_base_allocation = false;
  hs->state = NBD_HS_TRANSMISSION;
  return 0;
}

struct list_ctx {
  struct nbd_buf *out;
  int err;
};

static void
list_emit (void *opaque, const char *name, const char *description)
{
  struct list_ctx *ctx = opaque;
  struct piece pc[3];
  uint8_t len[4];
  size_t namelen;

  if (ctx->err < 0)
    return;
  if (name == NULL)
    name = "";
  if (description == NULL)
    description = "";
  namelen = strlen (name);
  if (namelen > NBD_MAX_STRING)  /* no client could ask for it */
    return;
  nbd_put32 (len, (uint32_t) namelen);
  pc[0] = (struct piece) { len, 4 };
  pc[1] = (struct piece) { name, namelen };
  pc[2] = (struct piece) { description,
                           nbd_utf8_clip (description, strlen (description),
                                          NBD_MAX_STRING) };
  ctx->err = reply_pieces (ctx->out, NBD_OPT_LIST, NBD_REP_SERVER, pc, 3);
}

static int
opt_list (struct nbd_handshake *hs, uint32_t len, struct nbd_buf *out)
{
  struct list_ctx ctx = { out, 0 };
  size_t mark = out->len;
  int r;

  if (len != 0)
    return reply_error (out, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
                        "NBD_OPT_LIST: option carries %" PRIu32 " bytes of data; "
                        "it must carry none", len);
  if (hs->ops == NULL || hs->ops->list == NULL)
    return reply_error (out, NBD_OPT_LIST, NBD_REP_ERR_POLICY,
                        "NBD_OPT_LIST: listing exports is disabled on this server");
  r = hs->ops->list (hs->opaque, list_emit, &ctx);
  if (ctx.err < 0)
    return ctx.err;
  if (r < 0) {
    out->len = mark;          /* the client must disregard them anyway */
    return reply_error (out, NBD_OPT_LIST,
                        r == -ESHUTDOWN ? NBD_REP_ERR_SHUTDOWN
                        : r == -EPERM || r == -EACCES ? NBD_REP_ERR_POLICY
                        : NBD_REP_ERR_PLATFORM,
                        "NBD_OPT_LIST: cannot list exports: %s", strerror (-r));
  }
  return reply_ack (out, NBD_OPT_LIST);
}

/* NBD_OPT_INFO and NBD_OPT_GO share their request and replies. */
static int
opt_info_go (struct nbd_handshake *hs, uint32_t opt, const uint8_t *data, uint32_t len,
             struct nbd_buf *out)
{
  const char *oname = nbd_opt_name (opt), *bad;
  char name[NBD_MAX_STRING + 1], msg[NBD_MAX_STRING];
  bool want_name = false, want_desc = false;
  struct nbd_export_info info;
  uint32_t namelen, rep, i;
  uint16_t nreq, type;
  uint8_t buf[14];
  char *dup = NULL;
  struct piece pc[2];
  int r;

  if (len < 6)
    return reply_error (out, opt, NBD_REP_ERR_INVALID,
                        "%s: option data of %" PRIu32 " bytes is too short "
                        "(at least 6 needed)", oname, len);
  namelen = nbd_get32 (data);
  if (namelen > len - 6)
    return reply_error (out, opt, NBD_REP_ERR_INVALID,
                        "%s: export name length %" PRIu32 " runs past the "
                        "%" PRIu32 " bytes of option data", oname, namelen, len);
  nreq = nbd_get16 (data + 4 + namelen);
  if ((uint64_t) 6 + namelen + 2 * (uint64_t) nreq != len)
    return reply_error (out, opt, NBD_REP_ERR_INVALID,
                        "%s: %u information requests do not fill the %" PRIu32
                        " bytes of option data", oname, nreq, len);
  bad = check_string (data + 4, namelen);
  if (bad)
    return reply_error (out, opt, NBD_REP_ERR_INVALID, "%s: export name %s",
                        oname, bad);
  memcpy (name, data + 4, namelen);
  name[namelen] = '\0';
  for (i = 0; i < nreq; i++) {
    type = nbd_get16 (data + 6 + namelen + 2 * i);
    if (type == NBD_INFO_NAME)
      want_name = true;
    else if (type == NBD_INFO_DESCRIPTION)
      want_desc = true;
    /* NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE are always sent; the rest
     * is ignored as the spec requires. */
  }

  if (lookup (hs, name, &info, &rep, msg, sizeof msg) < 0)
    return reply_error (out, opt, rep, "%s: %s", oname, msg);

  if (opt == NBD_OPT_GO) {
    dup = strdup (name);
    if (dup == NULL)
      return -ENOMEM;
  }

  nbd_put16 (buf, NBD_INFO_EXPORT);
  nbd_put64 (buf + 2, info.size);
  nbd_put16 (buf + 10, info.tflags);
  pc[0] = (struct piece) { buf, 12 };
  r = reply_pieces (out, opt, NBD_REP_INFO, pc, 1);
  if (r < 0)
    goto fail;

  /* Servers may send NBD_INFO_BLOCK_SIZE unrequested; we always do so the
   * client learns the preferred size even if it does not ask. */
  nbd_put16 (buf, NBD_INFO_BLOCK_SIZE);
  nbd_put32 (buf + 2, info.min_block);
  nbd_put32 (buf + 6, info.pref_block);
  nbd_put32 (buf + 10, info.max_block);
  pc[0] = (struct piece) { buf, 14 };
  r = reply_pieces (out, opt, NBD_REP_INFO, pc, 1);
  if (r < 0)
    goto fail;

  if (want_name) {
    nbd_put16 (buf, NBD_INFO_NAME);
    pc[0] = (struct piece) { buf, 2 };
    pc[1] = (struct piece) { name, namelen };
    r = reply_pieces (out, opt, NBD_REP_INFO, pc, 2);
    if (r < 0)
      goto fail;
  }
  if (want_desc && info.description[0] != '\0') {
    nbd_put16 (buf, NBD_INFO_DESCRIPTION);
    pc[0] = (struct piece) { buf, 2 };
    pc[1] = (struct piece) { info.description, strlen (info.description) };
    r = reply_pieces (out, opt, NBD_REP_INFO, pc, 2);
    if (r < 0)
      goto fail;
  }
  r = reply_ack (out, opt);
  if (r < 0)
    goto fail;

  if (opt == NBD_OPT_GO) {
    free (hs->export_name);
    hs->export_name = dup;
    hs->info = info;
    /* BLOCK_STATUS needs the contexts chosen for this very export. */
    if (hs->meta_export == NULL || strcmp (hs->meta_export, name) != 0)
      hs->meta_base_allocation = false;
    hs->state = NBD_HS_TRANSMISSION;
  }
  return 0;

 fail:
  free (dup);
  return r;
}

static int
opt_structured_reply (struct nbd_handshake *hs, uint32_t len, struct nbd_buf *out)
{
  int r;

  if (len != 0)
    return reply_error (out, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY: option carries %" PRIu32
                        " bytes of data; it must carry none", len);
  r = reply_ack (out, NBD_OPT_STRUCTURED_REPLY);
  if (r == 0)
    hs->structured = true;
  return r;
}

/* Does query q select base:allocation?  "base:" is a wildcard for LIST
 * only; unknown namespaces and leaf names are ignored (spec). */
static bool
query_matches (const uint8_t *q, uint32_t qlen, bool set)
{
  if (qlen == strlen (META_BASE_ALLOCATION)
      && memcmp (q, META_BASE_ALLOCATION, qlen) == 0)
    return true;
  return !set && qlen == 5 && memcmp (q, "base:", 5) == 0;
}

static int
opt_meta_context (struct nbd_handshake *hs, uint32_t opt, const uint8_t *data,
                  uint32_t len, struct nbd_buf *out)
{
  const bool set = opt == NBD_OPT_SET_META_CONTEXT;
  const char *oname = nbd_opt_name (opt), *bad;
  char name[NBD_MAX_STRING + 1], msg[NBD_MAX_STRING];
  struct nbd_export_info info;
  uint32_t namelen, nq, qlen, i, pos, rep;
  bool match = false;
  uint8_t id[4];
  struct piece pc[2];
  char *dup = NULL;
  int r;

  if (set) {            /* replaces the selection, even when it fails */
    hs->meta_base_allocation = false;
    free (hs->meta_export);
    hs->meta_export = NULL;
    if (!hs->structured)
      return reply_error (out, opt, NBD_REP_ERR_INVALID,
                          "%s: negotiate NBD_OPT_STRUCTURED_REPLY first", oname);
  }
  if (len < 8)
    return reply_error (out, opt, NBD_REP_ERR_INVALID,
                        "%s: option data of %" PRIu32 " bytes is too short "
                        "(at least 8 needed)", oname, len);
  namelen = nbd_get32 (data);
  if (namelen > len - 8)
    return reply_error (out, opt, NBD_REP_ERR_INVALID,
                        "%s: export name length %" PRIu32 " runs past the "
                        "%" PRIu32 " bytes of option data", oname, namelen, len);
  bad = check_string (data + 4, namelen);
  if (bad)
    return reply_error (out, opt, NBD_REP_ERR_INVALID, "%s: export name %s",
                        oname, bad);
  memcpy (name, data + 4, namelen);
  name[namelen] = '\0';
  pos = 4 + namelen;
  nq = nbd_get32 (data + pos);
  pos += 4;
  for (i = 0; i < nq; i++) {
    if (len - pos < 4)
      return reply_error (out, opt, NBD_REP_ERR_INVALID,
                          "%s: query %" PRIu32 " of %" PRIu32 " is missing or "
                          "truncated", oname, i + 1, nq);
    qlen = nbd_get32 (data + pos);
    pos += 4;
    if (qlen > len - pos)
      return reply_error (out, opt, NBD_REP_ERR_INVALID,
                          "%s: query %" PRIu32 " of %" PRIu32 " bytes runs past "
                          "the option data", oname, i + 1, qlen);
    bad = check_string (data + pos, qlen);
    if (bad)
      return reply_error (out, opt, NBD_REP_ERR_INVALID, "%s: query %" PRIu32 " %s",
                          oname, i + 1, bad);
    if (query_matches (data + pos, qlen, set))
      match = true;
    pos += qlen;
  }
  if (pos != len)
    return reply_error (out, opt, NBD_REP_ERR_INVALID,
                        "%s: %" PRIu32 " bytes left over after the queries",
                        oname, len - pos);
  if (nq == 0 && !set)      /* LIST with no query: everything we have */
    match = true;

  if (lookup (hs, name, &info, &rep, msg, sizeof msg) < 0)
    return reply_error (out, opt, rep, "%s: %s", oname, msg);

  if (set) {
    dup = strdup (name);
    if (dup == NULL)
      return -ENOMEM;
  }
  if (match) {
    nbd_put32 (id, set ? NBD_META_BASE_ALLOCATION_ID : 0);
    pc[0] = (struct piece) { id, 4 };
    pc[1] = (struct piece) { META_BASE_ALLOCATION, strlen (META_BASE_ALLOCATION) };
    r = reply_pieces (out, opt, NBD_REP_META_CONTEXT, pc, 2);
    if (r < 0)
      goto fail;
  }
  r = reply_ack (out, opt);
  if (r < 0)
    goto fail;
  if (set) {
    hs->meta_export = dup;
    hs->meta_base_allocation = match;
  }
  return 0;

 fail:
  free (dup);
  return r;
}

/* Handle one complete option.  Returns 0 or -ENOMEM. */
static int
handle_option (struct nbd_handshake *hs, uint32_t opt, const uint8_t *data,
               uint32_t len, struct nbd_buf *out)
{
  int r;

  switch (opt) {
  case NBD_OPT_EXPORT_NAME:
    return opt_export_name (hs, data, len, out);
  case NBD_OPT_ABORT:
    /* Data is ignored rather than refused, as the spec asks. */
    r = reply_ack (out, opt);
    if (r == 0) {
      hs->state = NBD_HS_CLOSED;
      set_error (hs, "client aborted the handshake (NBD_OPT_ABORT)");
    }
    return r;
  case NBD_OPT_LIST:
    return opt_list (hs, len, out);
  case NBD_OPT_INFO:
  case NBD_OPT_GO:
    return opt_info_go (hs, opt, data, len, out);
  case NBD_OPT_STRUCTURED_REPLY:
    return opt_structured_reply (hs, len, out);
  case NBD_OPT_LIST_META_CONTEXT:
  case NBD_OPT_SET_META_CONTEXT:
    return opt_meta_context (hs, opt, data, len, out);
  case NBD_OPT_STARTTLS:
    return reply_error (out, opt, NBD_REP_ERR_UNSUP,
                        "NBD_OPT_STARTTLS: TLS is not supported by this server");
  case NBD_OPT_EXTENDED_HEADERS:
    return reply_error (out, opt, NBD_REP_ERR_UNSUP,
                        "NBD_OPT_EXTENDED_HEADERS: extended headers are not "
                        "supported by this server");
  default:
    return reply_error (out, opt, NBD_REP_ERR_UNSUP,
                        "option %" PRIu32 " (%s) is not supported by this server",
                        opt, nbd_opt_name (opt));
  }
}

/* ---- public -------------------------------------------------------------- */

void
nbd_hs_init (struct nbd_handshake *hs, const struct nbd_server_ops *ops, void *opaque)
{
  memset (hs, 0, sizeof *hs);
  hs->state = NBD_HS_CLIENT_FLAGS;
  hs->ops = ops;
  hs->opaque = opaque;
}

/* Frees what the handshake owns; safe to call twice. */
void
nbd_hs_free (struct nbd_handshake *hs)
{
  free (hs->export_name);
  hs->export_name = NULL;
  free (hs->meta_export);
  hs->meta_export = NULL;
}

int
nbd_hs_greeting (struct nbd_handshake *hs, struct nbd_buf *out)
{
  uint8_t g[NBD_GREETING_LEN];

  (void) hs;
  nbd_put64 (g, NBD_MAGIC);
  nbd_put64 (g + 8, NBD_OPT_MAGIC);
  nbd_put16 (g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  return nbd_buf_append (out, g, sizeof g);
}

/* Out of memory while handling an option: drop its partial replies and
 * give up on the connection. */
static ssize_t
out_of_memory (struct nbd_handshake *hs, struct nbd_buf *out, size_t mark)
{
  out->len = mark;
  hs->state = NBD_HS_DEAD;
  set_error (hs, "out of memory during the NBD handshake");
  return -ENOMEM;
}

ssize_t
nbd_hs_input (struct nbd_handshake *hs, const uint8_t *in, size_t len,
              struct nbd_buf *out)
{
  size_t used = 0;

  for (;;) {
    const uint8_t *p = in + used;
    size_t avail = len - used, mark = out->len;
    uint32_t flags, opt, olen;
    uint64_t magic;

    if (hs->state == NBD_HS_CLIENT_FLAGS) {
      if (avail < 4)
        return used;
      flags = nbd_get32 (p);
      used += 4;
      if (flags & ~(uint32_t) (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        hs->state = NBD_HS_DEAD;
        set_error (hs, "unknown client flags 0x%08" PRIx32, flags);
        return -EPROTO;
      }
      /* A client without FIXED_NEWSTYLE gets the same (fixed) replies:
       * the spec lets servers honour fixed newstyle regardless. */
      hs->client_flags = flags;
      hs->no_zeroes = (flags & NBD_FLAG_C_NO_ZEROES) != 0;
      hs->state = NBD_HS_OPTIONS;
      continue;
    }
    if (hs->state != NBD_HS_OPTIONS)
      return used;

    if (hs->discard > 0) {      /* skipping an over-long option */
      size_t n = avail < hs->discard ? avail : (size_t) hs->discard;
      used += n;
      hs->discard -= n;
      if (hs->discard > 0)
        return used;
      if (reply_error (out, hs->discard_option, NBD_REP_ERR_TOO_BIG,
                       "%s: option data is longer than the %u bytes this "
                       "server accepts", nbd_opt_name (hs->discard_option),
                       NBD_MAX_OPTION_LEN) < 0)
        return out_of_memory (hs, out, mark);
      continue;
    }

    if (avail < NBD_OPTION_HDR_LEN)
      return used;
    magic = nbd_get64 (p);
    if (magic != NBD_OPT_MAGIC) {
      hs->state = NBD_HS_DEAD;
      set_error (hs, "bad option magic 0x%016" PRIx64 " (expected IHAVEOPT)", magic);
      return -EPROTO;
    }
    opt = nbd_get32 (p + 8);
    olen = nbd_get32 (p + 12);
    if (olen > NBD_MAX_OPTION_LEN) {
      used += NBD_OPTION_HDR_LEN;
      hs->discard = olen;
      hs->discard_option = opt;
      continue;
    }
    if (avail - NBD_OPTION_HDR_LEN < olen)
      return used;              /* wait for the whole option */
    used += NBD_OPTION_HDR_LEN + olen;
    if (handle_option (hs, opt, p + NBD_OPTION_HDR_LEN, olen, out) < 0)
      return out_of_memory (hs, out, mark);
  }
}
