/* tests/unit/test-nbd.c — the NBD wire protocol module (nbd/).
 *
 * The handshake is driven with client byte streams built here, fed both in
 * one shot and one byte at a time (as a slow socket would deliver them);
 * replies are parsed back field by field.  Request validation is a table
 * with one row per rule.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "nbd/nbd.h"

#define GiB (1024ULL * 1024 * 1024)
#define MiB (1024ULL * 1024)

#define DISK_TFLAGS (NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM \
                     | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF            \
                     | NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_CAN_MULTI_CONN)

/* ---- fake daemon ------------------------------------------------------- */

static int t_lookups;

static int
t_lookup (void *opaque, const char *name, struct nbd_export_info *info,
          char *msg, size_t msglen)
{
  (void) opaque;
  t_lookups++;
  if (strcmp (name, "disk") == 0) {
    info->size = 1 * GiB;
    info->tflags = DISK_TFLAGS;
    info->min_block = 1;
    info->pref_block = 4096;
    info->max_block = 32 * MiB;
    strcpy (info->description, "test disk");
    return 0;
  }
  if (strcmp (name, "ro") == 0) {
    info->size = 64 * MiB;
    info->tflags = NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH;
    return 0;
  }
  if (strcmp (name, "stopping") == 0) {
    snprintf (msg, msglen, "export \"%s\" is shutting down", name);
    return -ESHUTDOWN;
  }
  if (strcmp (name, "secret") == 0) {
    snprintf (msg, msglen, "export \"%s\" is not for you", name);
    return -EPERM;
  }
  snprintf (msg, msglen, "export \"%s\" not found; list exports with nbdinfo --list", name);
  return -ENOENT;
}

static int
t_list (void *opaque, void (*emit) (void *, const char *, const char *), void *ctx)
{
  (void) opaque;
  emit (ctx, "disk", "test disk");
  emit (ctx, "ro", "");
  return 0;
}

static const struct nbd_server_ops t_ops = { .lookup = t_lookup, .list = t_list };

/* ---- client byte streams ----------------------------------------------- */

static void
t_put (struct nbd_buf *b, const void *p, size_t n)
{
  cr_assert_eq (nbd_buf_append (b, p, n), 0);
}

static void
t_u16 (struct nbd_buf *b, uint16_t v)
{
  uint8_t x[2];
  nbd_put16 (x, v);
  t_put (b, x, 2);
}

static void
t_u32 (struct nbd_buf *b, uint32_t v)
{
  uint8_t x[4];
  nbd_put32 (x, v);
  t_put (b, x, 4);
}

static void
t_u64 (struct nbd_buf *b, uint64_t v)
{
  uint8_t x[8];
  nbd_put64 (x, v);
  t_put (b, x, 8);
}

/* An option with raw data. */
static void
t_opt (struct nbd_buf *b, uint32_t opt, const void *data, uint32_t len)
{
  t_u64 (b, NBD_OPT_MAGIC);
  t_u32 (b, opt);
  t_u32 (b, len);
  t_put (b, data, len);
}

/* INFO or GO for name with nreq information requests (uint16 varargs). */
static void
t_go (struct nbd_buf *b, uint32_t opt, const char *name, int nreq, ...)
{
  struct nbd_buf d = { 0 };
  va_list ap;
  int i;

  t_u32 (&d, strlen (name));
  t_put (&d, name, strlen (name));
  t_u16 (&d, nreq);
  va_start (ap, nreq);
  for (i = 0; i < nreq; i++)
    t_u16 (&d, va_arg (ap, int));
  va_end (ap);
  t_opt (b, opt, d.data, d.len);
  nbd_buf_free (&d);
}

/* LIST or SET_META_CONTEXT for name with nq queries (strings). */
static void
t_meta (struct nbd_buf *b, uint32_t opt, const char *name, int nq, ...)
{
  struct nbd_buf d = { 0 };
  va_list ap;
  int i;

  t_u32 (&d, strlen (name));
  t_put (&d, name, strlen (name));
  t_u32 (&d, nq);
  va_start (ap, nq);
  for (i = 0; i < nq; i++) {
    const char *q = va_arg (ap, const char *);
    t_u32 (&d, strlen (q));
    t_put (&d, q, strlen (q));
  }
  va_end (ap);
  t_opt (b, opt, d.data, d.len);
  nbd_buf_free (&d);
}

/* ---- driving the handshake --------------------------------------------- */

/* Feed in[0..len) in one call, or byte by byte as a caller keeping the
 * unconsumed tail would.  Returns the total consumed or the error. */
static ssize_t
t_feed (struct nbd_handshake *hs, const uint8_t *in, size_t len, struct nbd_buf *out,
        bool bytewise)
{
  uint8_t *pend;
  size_t plen = 0, i;
  ssize_t total = 0, r;

  if (!bytewise)
    return nbd_hs_input (hs, in, len, out);
  pend = malloc (len + 1);
  cr_assert_not_null (pend);
  for (i = 0; i < len; i++) {
    pend[plen++] = in[i];
    r = nbd_hs_input (hs, pend, plen, out);
    if (r < 0) {
      free (pend);
      return r;
    }
    cr_assert_leq ((size_t) r, plen);
    memmove (pend, pend + r, plen - r);
    plen -= r;
    total += r;
  }
  free (pend);
  return total;
}

/* Start a handshake: init, check the greeting, and prepend the client's
 * flags to the stream cl. */
static void
t_start (struct nbd_handshake *hs, struct nbd_buf *cl, uint32_t cflags)
{
  struct nbd_buf g = { 0 };

  nbd_hs_init (hs, &t_ops, NULL);
  cr_assert_eq (nbd_hs_greeting (hs, &g), 0);
  cr_assert_eq (g.len, NBD_GREETING_LEN);
  nbd_buf_free (&g);
  memset (cl, 0, sizeof *cl);
  t_u32 (cl, cflags);
}

struct t_rep {
  uint32_t opt, type, len;
  const uint8_t *data;
};

/* Parse the option reply at *pos of out, advance *pos. */
static void
t_reply (const struct nbd_buf *out, size_t *pos, struct t_rep *r)
{
  cr_assert_leq (*pos + NBD_OPTION_REPLY_LEN, out->len, "reply header missing at %zu", *pos);
  cr_assert_eq (nbd_get64 (out->data + *pos), NBD_REP_MAGIC);
  r->opt = nbd_get32 (out->data + *pos + 8);
  r->type = nbd_get32 (out->data + *pos + 12);
  r->len = nbd_get32 (out->data + *pos + 16);
  r->data = out->data + *pos + NBD_OPTION_REPLY_LEN;
  *pos += NBD_OPTION_REPLY_LEN;
  cr_assert_leq (*pos + r->len, out->len, "reply payload truncated");
  *pos += r->len;
}

/* Expect an error reply of type to opt whose message contains needle. */
static void
t_expect_error (const struct nbd_buf *out, size_t *pos, uint32_t opt, uint32_t type,
                const char *needle)
{
  struct t_rep r;
  char msg[NBD_MAX_STRING + 1];

  t_reply (out, pos, &r);
  cr_assert_eq (r.opt, opt);
  cr_assert_eq (r.type, type, "reply type 0x%x, expected 0x%x", r.type, type);
  cr_assert_gt (r.len, 0, "error reply without a message");
  cr_assert_leq (r.len, NBD_MAX_STRING);
  memcpy (msg, r.data, r.len);
  msg[r.len] = '\0';
  if (needle)
    cr_assert_not_null (strstr (msg, needle), "message \"%s\" lacks \"%s\"", msg, needle);
}

static void
t_expect_ack (const struct nbd_buf *out, size_t *pos, uint32_t opt)
{
  struct t_rep r;

  t_reply (out, pos, &r);
  cr_assert_eq (r.opt, opt);
  cr_assert_eq (r.type, NBD_REP_ACK);
  cr_assert_eq (r.len, 0);
}

/* Check the replies to a successful INFO/GO of "disk" with NAME and
 * DESCRIPTION requested; structured says whether SEND_DF may appear. */
static void
t_expect_disk_info (const struct nbd_buf *out, size_t *pos, uint32_t opt, bool structured)
{
  bool seen_export = false, seen_bs = false, seen_name = false, seen_desc = false;
  uint16_t want = NBD_FLAG_HAS_FLAGS | DISK_TFLAGS;
  struct t_rep r;

  if (!structured)
    want &= ~NBD_FLAG_SEND_DF;
  for (;;) {
    t_reply (out, pos, &r);
    cr_assert_eq (r.opt, opt);
    if (r.type == NBD_REP_ACK)
      break;
    cr_assert_eq (r.type, NBD_REP_INFO);
    cr_assert_geq (r.len, 2);
    switch (nbd_get16 (r.data)) {
    case NBD_INFO_EXPORT:
      cr_assert_eq (r.len, 12);
      cr_assert_eq (nbd_get64 (r.data + 2), 1 * GiB);
      cr_assert_eq (nbd_get16 (r.data + 10), want, "tflags 0x%x", nbd_get16 (r.data + 10));
      seen_export = true;
      break;
    case NBD_INFO_BLOCK_SIZE:
      cr_assert_eq (r.len, 14);
      cr_assert_eq (nbd_get32 (r.data + 2), 1);
      cr_assert_eq (nbd_get32 (r.data + 6), 4096);
      cr_assert_eq (nbd_get32 (r.data + 10), 32 * MiB);
      seen_bs = true;
      break;
    case NBD_INFO_NAME:
      cr_assert_eq (r.len, 2 + 4);
      cr_assert_eq (memcmp (r.data + 2, "disk", 4), 0);
      seen_name = true;
      break;
    case NBD_INFO_DESCRIPTION:
      cr_assert_eq (r.len, 2 + 9);
      cr_assert_eq (memcmp (r.data + 2, "test disk", 9), 0);
      seen_desc = true;
      break;
    default:
      cr_assert_fail ("unexpected info type %u", nbd_get16 (r.data));
    }
  }
  cr_assert (seen_export && seen_bs && seen_name && seen_desc);
}

/* ---- buffer -------------------------------------------------------------- */

Test (nbd_buf, append_reserve_consume)
{
  struct nbd_buf b = { 0 };
  uint8_t big[1000];
  size_t i;

  for (i = 0; i < sizeof big; i++)
    big[i] = (uint8_t) i;
  cr_assert_eq (nbd_buf_append (&b, "abc", 3), 0);
  cr_assert_eq (nbd_buf_append (&b, big, sizeof big), 0);
  cr_assert_eq (b.len, 1003);
  cr_assert_geq (b.cap, b.len);
  nbd_buf_consume (&b, 3);
  cr_assert_eq (b.len, 1000);
  cr_assert_eq (memcmp (b.data, big, 1000), 0);
  cr_assert_eq (nbd_buf_reserve (&b, 5000), 0);
  cr_assert_geq (b.cap, 6000);
  cr_assert_eq (b.len, 1000);
  cr_assert_eq (nbd_buf_reserve (&b, SIZE_MAX), -ENOMEM);
  nbd_buf_consume (&b, 5000);
  cr_assert_eq (b.len, 0);
  nbd_buf_free (&b);
  cr_assert_null (b.data);
  nbd_buf_free (&b);
}

/* ---- handshake ----------------------------------------------------------- */

Test (nbd_hs, greeting_bytes)
{
  static const uint8_t want[NBD_GREETING_LEN] = {
    'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C', 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 3,
  };
  struct nbd_handshake hs;
  struct nbd_buf out = { 0 };

  nbd_hs_init (&hs, &t_ops, NULL);
  cr_assert_eq (hs.state, NBD_HS_CLIENT_FLAGS);
  cr_assert_eq (nbd_hs_greeting (&hs, &out), 0);
  cr_assert_eq (out.len, NBD_GREETING_LEN);
  cr_assert_eq (memcmp (out.data, want, sizeof want), 0);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, client_flags)
{
  struct nbd_handshake hs;
  struct nbd_buf out = { 0 };
  uint8_t f[4];

  nbd_hs_init (&hs, &t_ops, NULL);
  nbd_put32 (f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
  cr_assert_eq (nbd_hs_input (&hs, f, 3, &out), 0, "3 of 4 flag bytes consumed");
  cr_assert_eq (nbd_hs_input (&hs, f, 4, &out), 4);
  cr_assert_eq (hs.state, NBD_HS_OPTIONS);
  cr_assert (hs.no_zeroes);
  cr_assert_eq (out.len, 0);
  nbd_hs_free (&hs);

  nbd_hs_init (&hs, &t_ops, NULL);
  nbd_put32 (f, NBD_FLAG_C_FIXED_NEWSTYLE | 0x80);
  cr_assert_eq (nbd_hs_input (&hs, f, 4, &out), -EPROTO);
  cr_assert_eq (hs.state, NBD_HS_DEAD);
  cr_assert_not_null (strstr (hs.error, "unknown client flags"));
  cr_assert_eq (nbd_hs_input (&hs, f, 4, &out), 0, "DEAD consumes nothing");
  nbd_hs_free (&hs);
  nbd_buf_free (&out);
}

/* GO success: exact replies, and the request after it stays unconsumed;
 * one shot and byte by byte must produce identical bytes. */
Test (nbd_hs, go_success_oneshot_and_bytewise)
{
  struct nbd_buf outs[2] = { { 0 }, { 0 } };
  int mode;

  for (mode = 0; mode < 2; mode++) {
    struct nbd_handshake hs;
    struct nbd_buf cl, *out = &outs[mode];
    size_t pos = 0, go_end;
    uint8_t req[NBD_REQUEST_LEN] = { 0x25, 0x60, 0x95, 0x13 };
    struct nbd_session s;

    t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    t_go (&cl, NBD_OPT_GO, "disk", 2, NBD_INFO_NAME, NBD_INFO_DESCRIPTION);
    go_end = cl.len;
    t_put (&cl, req, sizeof req);     /* the first transmission request */
    cr_assert_eq (t_feed (&hs, cl.data, cl.len, out, mode), (ssize_t) go_end);
    cr_assert_eq (hs.state, NBD_HS_TRANSMISSION);
    cr_assert_str_eq (hs.export_name, "disk");
    cr_assert_eq (hs.info.size, 1 * GiB);
    cr_assert_eq (hs.info.tflags, NBD_FLAG_HAS_FLAGS | (DISK_TFLAGS & ~NBD_FLAG_SEND_DF));
    t_expect_disk_info (out, &pos, NBD_OPT_GO, false);
    cr_assert_eq (pos, out->len, "no bytes after the ACK");

    nbd_session_from_handshake (&s, &hs);
    cr_assert_eq (s.size, 1 * GiB);
    cr_assert_eq (s.tflags, hs.info.tflags);
    cr_assert_not (s.structured);
    cr_assert_not (s.meta_base_allocation);
    cr_assert_eq (s.max_payload, NBD_MAX_PAYLOAD);

    cr_assert_eq (nbd_hs_input (&hs, cl.data + go_end, cl.len - go_end, out), 0);
    nbd_buf_free (&cl);
    nbd_hs_free (&hs);
  }
  cr_assert_eq (outs[0].len, outs[1].len);
  cr_assert_eq (memcmp (outs[0].data, outs[1].data, outs[0].len), 0);
  nbd_buf_free (&outs[0]);
  nbd_buf_free (&outs[1]);
}

Test (nbd_hs, go_errors_keep_negotiating)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  size_t pos = 0;
  struct t_rep r;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_go (&cl, NBD_OPT_GO, "nosuch", 0);
  t_go (&cl, NBD_OPT_GO, "stopping", 0);
  t_go (&cl, NBD_OPT_INFO, "secret", 0);
  t_go (&cl, NBD_OPT_GO, "ro", 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), (ssize_t) cl.len);
  t_expect_error (&out, &pos, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN,
                  "export \"nosuch\" not found; list exports with nbdinfo --list");
  t_expect_error (&out, &pos, NBD_OPT_GO, NBD_REP_ERR_SHUTDOWN, "shutting down");
  t_expect_error (&out, &pos, NBD_OPT_INFO, NBD_REP_ERR_POLICY, "not for you");
  /* "ro": EXPORT then BLOCK_SIZE with the defaults, no description. */
  t_reply (&out, &pos, &r);
  cr_assert_eq (r.type, NBD_REP_INFO);
  cr_assert_eq (nbd_get16 (r.data), NBD_INFO_EXPORT);
  cr_assert_eq (nbd_get64 (r.data + 2), 64 * MiB);
  cr_assert_eq (nbd_get16 (r.data + 10),
                NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH);
  t_reply (&out, &pos, &r);
  cr_assert_eq (r.type, NBD_REP_INFO);
  cr_assert_eq (nbd_get16 (r.data), NBD_INFO_BLOCK_SIZE);
  cr_assert_eq (nbd_get32 (r.data + 2), 1);
  cr_assert_eq (nbd_get32 (r.data + 6), 4096);
  cr_assert_eq (nbd_get32 (r.data + 10), NBD_MAX_PAYLOAD);
  t_expect_ack (&out, &pos, NBD_OPT_GO);
  cr_assert_eq (pos, out.len);
  cr_assert_eq (hs.state, NBD_HS_TRANSMISSION);
  cr_assert_str_eq (hs.export_name, "ro");
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, info_does_not_change_state)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  size_t pos = 0;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_go (&cl, NBD_OPT_INFO, "disk", 3, NBD_INFO_DESCRIPTION, 1234, NBD_INFO_NAME);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  t_expect_disk_info (&out, &pos, NBD_OPT_INFO, false);
  cr_assert_eq (pos, out.len);
  cr_assert_eq (hs.state, NBD_HS_OPTIONS);
  cr_assert_null (hs.export_name);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, list)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  size_t pos = 0;
  struct t_rep r;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_opt (&cl, NBD_OPT_LIST, NULL, 0);
  t_opt (&cl, NBD_OPT_LIST, "x", 1);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), (ssize_t) cl.len);

  t_reply (&out, &pos, &r);
  cr_assert_eq (r.opt, NBD_OPT_LIST);
  cr_assert_eq (r.type, NBD_REP_SERVER);
  cr_assert_eq (r.len, 4 + 4 + 9);
  cr_assert_eq (nbd_get32 (r.data), 4);
  cr_assert_eq (memcmp (r.data + 4, "disktest disk", 13), 0);
  t_reply (&out, &pos, &r);
  cr_assert_eq (r.type, NBD_REP_SERVER);
  cr_assert_eq (r.len, 4 + 2);
  cr_assert_eq (nbd_get32 (r.data), 2);
  cr_assert_eq (memcmp (r.data + 4, "ro", 2), 0);
  t_expect_ack (&out, &pos, NBD_OPT_LIST);
  t_expect_error (&out, &pos, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "data");
  cr_assert_eq (pos, out.len);
  cr_assert_eq (hs.state, NBD_HS_OPTIONS);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, abort_with_and_without_data)
{
  int with_data;

  for (with_data = 0; with_data < 2; with_data++) {
    struct nbd_handshake hs;
    struct nbd_buf cl, out = { 0 };
    size_t pos = 0, end;

    t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
    t_opt (&cl, NBD_OPT_ABORT, "junk", with_data ? 4 : 0);
    end = cl.len;
    t_go (&cl, NBD_OPT_GO, "disk", 0);  /* must not be looked at */
    cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, with_data), (ssize_t) end);
    t_expect_ack (&out, &pos, NBD_OPT_ABORT);
    cr_assert_eq (pos, out.len);
    cr_assert_eq (hs.state, NBD_HS_CLOSED);
    cr_assert_neq (hs.error[0], '\0');
    nbd_buf_free (&cl);
    nbd_buf_free (&out);
    nbd_hs_free (&hs);
  }
}

Test (nbd_hs, structured_reply)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  struct nbd_session s;
  size_t pos = 0;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, "x", 1);
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  t_go (&cl, NBD_OPT_GO, "disk", 2, NBD_INFO_NAME, NBD_INFO_DESCRIPTION);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  t_expect_error (&out, &pos, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID, NULL);
  t_expect_ack (&out, &pos, NBD_OPT_STRUCTURED_REPLY);
  t_expect_ack (&out, &pos, NBD_OPT_STRUCTURED_REPLY);
  t_expect_disk_info (&out, &pos, NBD_OPT_GO, true);   /* SEND_DF now allowed */
  cr_assert (hs.structured);
  nbd_session_from_handshake (&s, &hs);
  cr_assert (s.structured);
  cr_assert (s.tflags & NBD_FLAG_SEND_DF);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

static void
t_expect_context (const struct nbd_buf *out, size_t *pos, uint32_t opt, uint32_t id)
{
  struct t_rep r;

  t_reply (out, pos, &r);
  cr_assert_eq (r.opt, opt);
  cr_assert_eq (r.type, NBD_REP_META_CONTEXT);
  cr_assert_eq (r.len, 4 + 15);
  cr_assert_eq (nbd_get32 (r.data), id);
  cr_assert_eq (memcmp (r.data + 4, "base:allocation", 15), 0);
}

Test (nbd_hs, set_meta_context)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  struct nbd_session s;
  size_t pos = 0;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "disk", 1, "base:allocation");
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "disk", 2, "x-foo:bar", "base:allocation");
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), (ssize_t) cl.len);
  t_expect_error (&out, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID,
                  "STRUCTURED_REPLY");
  t_expect_ack (&out, &pos, NBD_OPT_STRUCTURED_REPLY);
  t_expect_context (&out, &pos, NBD_OPT_SET_META_CONTEXT, NBD_META_BASE_ALLOCATION_ID);
  t_expect_ack (&out, &pos, NBD_OPT_SET_META_CONTEXT);
  cr_assert_eq (pos, out.len);
  cr_assert (hs.meta_base_allocation);
  cr_assert_str_eq (hs.meta_export, "disk");

  /* "base:" selects nothing with SET; the selection is replaced. */
  nbd_buf_free (&cl);
  memset (&cl, 0, sizeof cl);
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "disk", 1, "base:");
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  t_expect_ack (&out, &pos, NBD_OPT_SET_META_CONTEXT);
  cr_assert_not (hs.meta_base_allocation);

  /* Select again, then fail: the failure clears the selection. */
  nbd_buf_free (&cl);
  memset (&cl, 0, sizeof cl);
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "disk", 1, "base:allocation");
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "nosuch", 1, "base:allocation");
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  t_expect_context (&out, &pos, NBD_OPT_SET_META_CONTEXT, NBD_META_BASE_ALLOCATION_ID);
  t_expect_ack (&out, &pos, NBD_OPT_SET_META_CONTEXT);
  t_expect_error (&out, &pos, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_UNKNOWN, "nosuch");
  cr_assert_not (hs.meta_base_allocation);
  cr_assert_null (hs.meta_export);

  /* Select for disk and GO disk: block status allowed. */
  nbd_buf_free (&cl);
  memset (&cl, 0, sizeof cl);
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "disk", 1, "base:allocation");
  t_go (&cl, NBD_OPT_GO, "disk", 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  cr_assert_eq (hs.state, NBD_HS_TRANSMISSION);
  nbd_session_from_handshake (&s, &hs);
  cr_assert (s.meta_base_allocation);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, meta_context_for_other_export_is_dropped_at_go)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  struct nbd_session s;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  t_meta (&cl, NBD_OPT_SET_META_CONTEXT, "disk", 1, "base:allocation");
  t_go (&cl, NBD_OPT_GO, "ro", 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  cr_assert_eq (hs.state, NBD_HS_TRANSMISSION);
  cr_assert_not (hs.meta_base_allocation);
  nbd_session_from_handshake (&s, &hs);
  cr_assert_not (s.meta_base_allocation);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, list_meta_context)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  size_t pos = 0;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  t_meta (&cl, NBD_OPT_LIST_META_CONTEXT, "disk", 0);
  t_meta (&cl, NBD_OPT_LIST_META_CONTEXT, "disk", 1, "base:");
  t_meta (&cl, NBD_OPT_LIST_META_CONTEXT, "disk", 2, "qemu:dirty-bitmap:x", "base:nope");
  t_meta (&cl, NBD_OPT_LIST_META_CONTEXT, "nosuch", 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), (ssize_t) cl.len);
  t_expect_ack (&out, &pos, NBD_OPT_STRUCTURED_REPLY);
  t_expect_context (&out, &pos, NBD_OPT_LIST_META_CONTEXT, 0);
  t_expect_ack (&out, &pos, NBD_OPT_LIST_META_CONTEXT);
  t_expect_context (&out, &pos, NBD_OPT_LIST_META_CONTEXT, 0);
  t_expect_ack (&out, &pos, NBD_OPT_LIST_META_CONTEXT);
  t_expect_ack (&out, &pos, NBD_OPT_LIST_META_CONTEXT);   /* nothing matched */
  t_expect_error (&out, &pos, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_UNKNOWN, "nosuch");
  cr_assert_eq (pos, out.len);
  cr_assert_not (hs.meta_base_allocation, "LIST selects nothing");
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

/* An option header announcing more data than we accept: the data is
 * skipped as it arrives, never buffered, then refused with TOO_BIG. */
Test (nbd_hs, lying_option_length_is_discarded_incrementally)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  static uint8_t junk[4096];
  const uint32_t lie = 1024 * 1024 + 17;
  uint32_t left = lie;
  size_t pos = 0;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_u64 (&cl, NBD_OPT_MAGIC);
  t_u32 (&cl, NBD_OPT_GO);
  t_u32 (&cl, lie);
  cr_assert_eq (nbd_hs_input (&hs, cl.data, cl.len, &out), (ssize_t) cl.len);
  cr_assert_eq (hs.discard, lie);
  cr_assert_eq (hs.discard_option, NBD_OPT_GO);
  memset (junk, 0xa5, sizeof junk);
  while (left > 0) {
    size_t n = left < sizeof junk ? left : sizeof junk;
    cr_assert_eq (nbd_hs_input (&hs, junk, n, &out), (ssize_t) n,
                  "discarded bytes are consumed as they arrive");
    left -= n;
    if (left)
      cr_assert_eq (out.len, 0, "no reply before the option is skipped");
  }
  cr_assert_eq (hs.discard, 0);
  t_expect_error (&out, &pos, NBD_OPT_GO, NBD_REP_ERR_TOO_BIG, "65536");
  cr_assert_eq (hs.state, NBD_HS_OPTIONS);

  /* The connection goes on; even 4 GiB - 1 announced is just skipped. */
  nbd_buf_free (&cl);
  memset (&cl, 0, sizeof cl);
  t_u64 (&cl, NBD_OPT_MAGIC);
  t_u32 (&cl, NBD_OPT_LIST);
  t_u32 (&cl, UINT32_MAX);
  t_put (&cl, junk, 100);
  cr_assert_eq (nbd_hs_input (&hs, cl.data, cl.len, &out), (ssize_t) cl.len);
  cr_assert_eq (hs.discard, UINT32_MAX - 100);
  cr_assert_eq (pos, out.len);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, incomplete_option_waits)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  size_t i, start;
  int lookups;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  cr_assert_eq (nbd_hs_input (&hs, cl.data, 4, &out), 4);
  start = cl.len;
  t_go (&cl, NBD_OPT_INFO, "disk", 0);
  lookups = t_lookups;
  for (i = start; i < cl.len; i++)
    cr_assert_eq (nbd_hs_input (&hs, cl.data + start, i - start, &out), 0);
  cr_assert_eq (out.len, 0);
  cr_assert_eq (t_lookups, lookups, "no lookup before the option is complete");
  cr_assert_eq (nbd_hs_input (&hs, cl.data + start, cl.len - start, &out),
                (ssize_t) (cl.len - start));
  cr_assert_eq (t_lookups, lookups + 1);
  cr_assert_gt (out.len, 0);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

/* Raw option data with a given shape; each must give ERR_INVALID and leave
 * the handshake in OPTIONS. */
Test (nbd_hs, malformed_options_are_invalid)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, d = { 0 }, out = { 0 };
  size_t pos = 0;
  char longname[NBD_MAX_STRING + 2];
  int n = 0, i;

  memset (longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_opt (&cl, NBD_OPT_STRUCTURED_REPLY, NULL, 0);

  /* GO: shorter than 6 bytes */
  t_opt (&cl, NBD_OPT_GO, "\0\0\0\0\0", 5), n++;
  /* GO: name length beyond the data */
  t_u32 (&d, 100); t_put (&d, "disk", 4); t_u16 (&d, 0);
  t_opt (&cl, NBD_OPT_GO, d.data, d.len), n++; d.len = 0;
  /* GO: 2 info requests announced, 1 present */
  t_u32 (&d, 4); t_put (&d, "disk", 4); t_u16 (&d, 2); t_u16 (&d, NBD_INFO_NAME);
  t_opt (&cl, NBD_OPT_GO, d.data, d.len), n++; d.len = 0;
  /* INFO: trailing byte */
  t_u32 (&d, 4); t_put (&d, "disk", 4); t_u16 (&d, 0); t_put (&d, "x", 1);
  t_opt (&cl, NBD_OPT_INFO, d.data, d.len), n++; d.len = 0;
  /* GO: NUL in the name */
  t_u32 (&d, 4); t_put (&d, "di\0k", 4); t_u16 (&d, 0);
  t_opt (&cl, NBD_OPT_GO, d.data, d.len), n++; d.len = 0;
  /* GO: name longer than 4096 */
  t_go (&cl, NBD_OPT_GO, longname, 0), n++;
  /* SET_META: shorter than 8 */
  t_opt (&cl, NBD_OPT_SET_META_CONTEXT, "\0\0\0\0", 4), n++;
  /* LIST_META: query length beyond the data */
  t_u32 (&d, 4); t_put (&d, "disk", 4); t_u32 (&d, 1); t_u32 (&d, 50); t_put (&d, "base:", 5);
  t_opt (&cl, NBD_OPT_LIST_META_CONTEXT, d.data, d.len), n++; d.len = 0;
  /* LIST_META: 3 queries announced, 1 present */
  t_u32 (&d, 4); t_put (&d, "disk", 4); t_u32 (&d, 3); t_u32 (&d, 5); t_put (&d, "base:", 5);
  t_opt (&cl, NBD_OPT_LIST_META_CONTEXT, d.data, d.len), n++; d.len = 0;
  /* SET_META: trailing bytes after the queries */
  t_u32 (&d, 4); t_put (&d, "disk", 4); t_u32 (&d, 0); t_put (&d, "xy", 2);
  t_opt (&cl, NBD_OPT_SET_META_CONTEXT, d.data, d.len), n++; d.len = 0;
  /* SET_META: export name length beyond the data */
  t_u32 (&d, 0xffffffff); t_u32 (&d, 0);
  t_opt (&cl, NBD_OPT_SET_META_CONTEXT, d.data, d.len), n++; d.len = 0;

  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), (ssize_t) cl.len);
  t_expect_ack (&out, &pos, NBD_OPT_STRUCTURED_REPLY);
  for (i = 0; i < n; i++) {
    struct t_rep r;
    size_t at = pos;
    t_reply (&out, &at, &r);
    cr_assert_eq (r.type, NBD_REP_ERR_INVALID, "case %d: type 0x%x", i, r.type);
    t_expect_error (&out, &pos, r.opt, NBD_REP_ERR_INVALID, NULL);
  }
  cr_assert_eq (pos, out.len);
  cr_assert_eq (hs.state, NBD_HS_OPTIONS);
  nbd_buf_free (&d);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, wrong_option_magic_is_dead)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_u64 (&cl, 0x1122334455667788ULL);
  t_u32 (&cl, NBD_OPT_LIST);
  t_u32 (&cl, 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), -EPROTO);
  cr_assert_eq (hs.state, NBD_HS_DEAD);
  cr_assert_not_null (strstr (hs.error, "magic"));
  cr_assert_eq (out.len, 0);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, export_name_with_and_without_zeroes)
{
  int nz;

  for (nz = 0; nz < 2; nz++) {
    struct nbd_handshake hs;
    struct nbd_buf cl, out = { 0 };
    size_t i, want = nz ? 10 : 134;

    t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE | (nz ? NBD_FLAG_C_NO_ZEROES : 0));
    t_opt (&cl, NBD_OPT_EXPORT_NAME, "ro", 2);
    cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, nz), (ssize_t) cl.len);
    cr_assert_eq (hs.state, NBD_HS_TRANSMISSION);
    cr_assert_str_eq (hs.export_name, "ro");
    cr_assert_eq (out.len, want);
    cr_assert_eq (nbd_get64 (out.data), 64 * MiB);
    cr_assert_eq (nbd_get16 (out.data + 8),
                  NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH);
    for (i = 10; i < want; i++)
      cr_assert_eq (out.data[i], 0);
    nbd_buf_free (&cl);
    nbd_buf_free (&out);
    nbd_hs_free (&hs);
  }
}

Test (nbd_hs, export_name_unknown_closes)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  t_opt (&cl, NBD_OPT_EXPORT_NAME, "nosuch", 6);
  t_opt (&cl, NBD_OPT_LIST, NULL, 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), 4 + 16 + 6);
  cr_assert_eq (hs.state, NBD_HS_CLOSED);
  cr_assert_not_null (strstr (hs.error, "nosuch"));
  cr_assert_eq (out.len, 0, "EXPORT_NAME cannot carry an error reply");
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

/* A client that does not set FIXED_NEWSTYLE (old nbd-client) still works. */
Test (nbd_hs, nonfixed_client_export_name)
{
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };

  t_start (&hs, &cl, 0);
  t_opt (&cl, NBD_OPT_EXPORT_NAME, "disk", 4);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, false), (ssize_t) cl.len);
  cr_assert_eq (hs.state, NBD_HS_TRANSMISSION);
  cr_assert_eq (out.len, 134);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

Test (nbd_hs, unsupported_options)
{
  static const uint32_t opts[] = {
    NBD_OPT_STARTTLS, NBD_OPT_PEEK_EXPORT, NBD_OPT_EXTENDED_HEADERS, 99, 0x80000001,
  };
  struct nbd_handshake hs;
  struct nbd_buf cl, out = { 0 };
  size_t pos = 0, i;

  t_start (&hs, &cl, NBD_FLAG_C_FIXED_NEWSTYLE);
  for (i = 0; i < sizeof opts / sizeof opts[0]; i++)
    t_opt (&cl, opts[i], "abc", i % 2 ? 3 : 0);
  t_go (&cl, NBD_OPT_INFO, "disk", 0);
  cr_assert_eq (t_feed (&hs, cl.data, cl.len, &out, true), (ssize_t) cl.len);
  for (i = 0; i < sizeof opts / sizeof opts[0]; i++)
    t_expect_error (&out, &pos, opts[i], NBD_REP_ERR_UNSUP, "not supported");
  cr_assert_eq (hs.state, NBD_HS_OPTIONS);
  nbd_buf_free (&cl);
  nbd_buf_free (&out);
  nbd_hs_free (&hs);
}

/* ---- transmission: decode and validate ---------------------------------- */

Test (nbd_request, decode)
{
  uint8_t h[NBD_REQUEST_LEN];
  struct nbd_request r;

  nbd_put32 (h, NBD_REQUEST_MAGIC);
  nbd_put16 (h + 4, NBD_CMD_FLAG_FUA);
  nbd_put16 (h + 6, NBD_CMD_WRITE);
  nbd_put64 (h + 8, 0x0102030405060708ULL);
  nbd_put64 (h + 16, 0xfffffffff000ULL);
  nbd_put32 (h + 24, 65536);
  cr_assert_eq (nbd_request_decode (h, &r), 0);
  cr_assert_eq (r.flags, NBD_CMD_FLAG_FUA);
  cr_assert_eq (r.type, NBD_CMD_WRITE);
  cr_assert_eq (r.cookie, 0x0102030405060708ULL);
  cr_assert_eq (r.offset, 0xfffffffff000ULL);
  cr_assert_eq (r.length, 65536);
  cr_assert_eq (nbd_request_payload (&r), 65536);
  r.type = NBD_CMD_READ;
  cr_assert_eq (nbd_request_payload (&r), 0);
  h[0] ^= 1;
  cr_assert_eq (nbd_request_decode (h, &r), -EPROTO);
}

struct vcase {
  const char *what;
  int sess;                 /* 0: full rw structured+meta, 1: ro simple, 2: bare */
  uint16_t type, flags;
  uint64_t offset;
  uint32_t length;
  int want;
};

#define SZ (1 * GiB)

static const struct vcase vcases[] = {
  { "read ok", 0, NBD_CMD_READ, 0, 0, 4096, 0 },
  { "read to the last byte", 0, NBD_CMD_READ, 0, SZ - 512, 512, 0 },
  { "read zero length at end", 0, NBD_CMD_READ, 0, SZ, 0, 0 },
  { "read beyond end", 0, NBD_CMD_READ, 0, SZ - 512, 1024, NBD_EINVAL },
  { "read offset beyond end", 0, NBD_CMD_READ, 0, SZ + 1, 0, NBD_EINVAL },
  { "read offset+length overflows", 0, NBD_CMD_READ, 0, UINT64_MAX - 10, 4096, NBD_EINVAL },
  { "read too long", 0, NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1, NBD_EINVAL },
  { "read too long simple", 1, NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1, NBD_EINVAL },
  { "read max payload", 0, NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD, 0 },
  { "read DF", 0, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096, 0 },
  { "read DF without structured", 1, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096, NBD_EINVAL },
  { "read FUA (spec: valid on all commands)", 0, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 512, 0 },
  { "read FUA not negotiated", 2, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 512, NBD_EINVAL },
  { "read REQ_ONE", 0, NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 512, NBD_EINVAL },
  { "read NO_HOLE", 0, NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE, 0, 512, NBD_EINVAL },
  { "unknown flag bit", 0, NBD_CMD_READ, 1u << 7, 0, 512, NBD_EINVAL },
  { "write ok FUA", 0, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 4096, 4096, 0 },
  { "write zero length", 0, NBD_CMD_WRITE, 0, 4096, 0, 0 },
  { "write beyond end", 0, NBD_CMD_WRITE, 0, SZ, 1, NBD_ENOSPC },
  { "write overflow", 0, NBD_CMD_WRITE, 0, UINT64_MAX, 1, NBD_ENOSPC },
  { "write read-only", 1, NBD_CMD_WRITE, 0, 0, 512, NBD_EPERM },
  { "write too long drops", 0, NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1, -EPROTO },
  { "write too long with bad flags drops", 0, NBD_CMD_WRITE, 0xff00, 0, UINT32_MAX, -EPROTO },
  { "write DF", 0, NBD_CMD_WRITE, NBD_CMD_FLAG_DF, 0, 512, NBD_EINVAL },
  { "write FAST_ZERO", 0, NBD_CMD_WRITE, NBD_CMD_FLAG_FAST_ZERO, 0, 512, NBD_EINVAL },
  { "trim whole export", 0, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 0, 1u << 30, 0 },
  { "trim past end, longer than max payload", 0, NBD_CMD_TRIM, 0, 0, 0xffffffffu, NBD_EINVAL },
  { "trim beyond end", 0, NBD_CMD_TRIM, 0, SZ - 1, 2, NBD_EINVAL },
  { "trim not negotiated", 2, NBD_CMD_TRIM, 0, 0, 512, NBD_EINVAL },
  { "trim read-only", 3, NBD_CMD_TRIM, 0, 0, 512, NBD_EPERM },
  { "trim NO_HOLE", 0, NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 0, 512, NBD_EINVAL },
  { "write zeroes ok", 0, NBD_CMD_WRITE_ZEROES,
    NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA, 0, 1u << 30, 0 },
  { "write zeroes beyond end", 0, NBD_CMD_WRITE_ZEROES, 0, SZ - 512, 1024, NBD_ENOSPC },
  { "write zeroes not negotiated", 2, NBD_CMD_WRITE_ZEROES, 0, 0, 512, NBD_EINVAL },
  { "write zeroes read-only", 3, NBD_CMD_WRITE_ZEROES, 0, 0, 512, NBD_EPERM },
  { "fast zero not negotiated", 3, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 0, 512,
    NBD_EINVAL },
  { "write zeroes DF", 0, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_DF, 0, 512, NBD_EINVAL },
  { "flush ok", 0, NBD_CMD_FLUSH, 0, 0, 0, 0 },
  { "flush on read-only export", 1, NBD_CMD_FLUSH, 0, 0, 0, 0 },
  { "flush with length", 0, NBD_CMD_FLUSH, 0, 0, 512, NBD_EINVAL },
  { "flush with offset", 0, NBD_CMD_FLUSH, 0, 512, 0, NBD_EINVAL },
  { "flush not negotiated", 2, NBD_CMD_FLUSH, 0, 0, 0, NBD_EINVAL },
  { "cache ok", 0, NBD_CMD_CACHE, 0, 0, 1u << 20, 0 },
  { "cache beyond end", 0, NBD_CMD_CACHE, 0, SZ, 1, NBD_EINVAL },
  { "cache not negotiated", 1, NBD_CMD_CACHE, 0, 0, 512, NBD_EINVAL },
  { "block status ok", 0, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 4096, (1u << 30) - 4096, 0 },
  { "block status beyond end", 0, NBD_CMD_BLOCK_STATUS, 0, SZ - 512, 1024, NBD_EINVAL },
  { "block status without context", 1, NBD_CMD_BLOCK_STATUS, 0, 0, 512, NBD_EINVAL },
  { "block status DF", 0, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_DF, 0, 512, NBD_EINVAL },
  { "disconnect", 0, NBD_CMD_DISC, 0, 0, 0, 0 },
  { "resize unsupported", 0, NBD_CMD_RESIZE, 0, 0, 0, NBD_EINVAL },
  { "unknown command", 0, 42, 0, 0, 0, NBD_EINVAL },
};

static void
t_session (int which, struct nbd_session *s)
{
  memset (s, 0, sizeof *s);
  s->size = SZ;
  s->max_payload = NBD_MAX_PAYLOAD;
  switch (which) {
  case 0:
    s->tflags = NBD_FLAG_HAS_FLAGS | DISK_TFLAGS | NBD_FLAG_SEND_CACHE;
    s->structured = true;
    s->meta_base_allocation = true;
    break;
  case 1:
    s->tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH;
    break;
  case 2:
    s->tflags = NBD_FLAG_HAS_FLAGS;
    break;
  case 3:
    s->tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_TRIM
      | NBD_FLAG_SEND_WRITE_ZEROES;
    break;
  }
}

Test (nbd_request, validate_table)
{
  size_t i;

  for (i = 0; i < sizeof vcases / sizeof vcases[0]; i++) {
    const struct vcase *c = &vcases[i];
    struct nbd_session s;
    struct nbd_request r = { c->flags, c->type, 7, c->offset, c->length };
    const char *why = "unset";
    int got;

    t_session (c->sess, &s);
    got = nbd_request_validate (&s, &r, &why);
    cr_expect_eq (got, c->want, "%s: got %d, want %d (%s)", c->what, got, c->want,
                  why ? why : "(null)");
    if (c->want != 0)
      cr_expect (why != NULL && why[0] != '\0', "%s: no reason given", c->what);
  }
}

Test (nbd_request, validate_beyond_end_message)
{
  struct nbd_session s;
  struct nbd_request r = { 0, NBD_CMD_READ, 1, SZ, 1 };
  const char *why = NULL;

  t_session (0, &s);
  cr_assert_eq (nbd_request_validate (&s, &r, &why), NBD_EINVAL);
  cr_assert_str_eq (why, "request beyond end of export");
  cr_assert_eq (nbd_request_validate (&s, &r, NULL), NBD_EINVAL, "why may be NULL");
}

Test (nbd_request, errno_to_wire)
{
  static const struct { int err; uint32_t wire; } m[] = {
    { 0, 0 }, { EPERM, NBD_EPERM }, { EROFS, NBD_EPERM }, { EIO, NBD_EIO },
    { ENOMEM, NBD_ENOMEM }, { EINVAL, NBD_EINVAL }, { ENOSPC, NBD_ENOSPC },
    { EDQUOT, NBD_ENOSPC }, { EFBIG, NBD_ENOSPC }, { EOVERFLOW, NBD_EOVERFLOW },
    { ENOTSUP, NBD_ENOTSUP }, { EOPNOTSUPP, NBD_ENOTSUP }, { ESHUTDOWN, NBD_ESHUTDOWN },
    { EBADF, NBD_EIO }, { ENOENT, NBD_EIO }, { -ENOSPC, NBD_ENOSPC },
  };
  size_t i;

  for (i = 0; i < sizeof m / sizeof m[0]; i++)
    cr_expect_eq (nbd_errno_to_wire (m[i].err), m[i].wire, "errno %d", m[i].err);
}

Test (nbd_request, names)
{
  cr_assert_str_eq (nbd_cmd_name (NBD_CMD_WRITE_ZEROES), "NBD_CMD_WRITE_ZEROES");
  cr_assert_str_eq (nbd_cmd_name (77), "unknown command");
  cr_assert_str_eq (nbd_opt_name (NBD_OPT_GO), "NBD_OPT_GO");
  cr_assert_str_eq (nbd_opt_name (1000), "unknown option");
}

/* ---- reply encoders ------------------------------------------------------ */

static void
t_check_chunk (const uint8_t *p, uint16_t flags, uint16_t type, uint64_t cookie,
               uint32_t length)
{
  cr_assert_eq (nbd_get32 (p), NBD_STRUCTURED_REPLY_MAGIC);
  cr_assert_eq (nbd_get16 (p + 4), flags);
  cr_assert_eq (nbd_get16 (p + 6), type);
  cr_assert_eq (nbd_get64 (p + 8), cookie);
  cr_assert_eq (nbd_get32 (p + 16), length);
}

Test (nbd_reply, simple_and_chunks)
{
  uint8_t b[64];
  const uint64_t ck = 0xdeadbeefcafef00dULL;

  cr_assert_eq (nbd_encode_simple_reply (b, ck, NBD_ENOSPC), 16);
  cr_assert_eq (nbd_get32 (b), NBD_SIMPLE_REPLY_MAGIC);
  cr_assert_eq (nbd_get32 (b + 4), NBD_ENOSPC);
  cr_assert_eq (nbd_get64 (b + 8), ck);

  cr_assert_eq (nbd_encode_chunk_header (b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, ck, 0), 20);
  t_check_chunk (b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, ck, 0);

  cr_assert_eq (nbd_encode_read_chunk (b, ck, 1 * GiB - 4096, 4096, true), 28);
  t_check_chunk (b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, ck, 8 + 4096);
  cr_assert_eq (nbd_get64 (b + 20), 1 * GiB - 4096);
  nbd_encode_read_chunk (b, ck, 0, 1, false);
  t_check_chunk (b, 0, NBD_REPLY_TYPE_OFFSET_DATA, ck, 9);

  cr_assert_eq (nbd_encode_hole_chunk (b, ck, 8192, 65536, false), 32);
  t_check_chunk (b, 0, NBD_REPLY_TYPE_OFFSET_HOLE, ck, 12);
  cr_assert_eq (nbd_get64 (b + 20), 8192);
  cr_assert_eq (nbd_get32 (b + 28), 65536);

  cr_assert_eq (nbd_encode_block_status (b, ck, NBD_META_BASE_ALLOCATION_ID, 2, true), 24);
  t_check_chunk (b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, ck, 4 + 16);
  cr_assert_eq (nbd_get32 (b + 20), NBD_META_BASE_ALLOCATION_ID);
  cr_assert_eq (nbd_encode_extent (b + 24, 4096, NBD_STATE_HOLE | NBD_STATE_ZERO), 8);
  cr_assert_eq (nbd_get32 (b + 24), 4096);
  cr_assert_eq (nbd_get32 (b + 28), 3);
}

Test (nbd_reply, error_chunk)
{
  uint8_t b[NBD_CHUNK_HDR_LEN + 6 + NBD_MAX_STRING + 100];
  char big[NBD_MAX_STRING + 50];
  const char *msg = "read failed";
  size_t n;

  n = nbd_encode_error_chunk (b, sizeof b, 9, NBD_EIO, msg);
  cr_assert_eq (n, 26 + strlen (msg));
  t_check_chunk (b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 9, 6 + strlen (msg));
  cr_assert_eq (nbd_get32 (b + 20), NBD_EIO);
  cr_assert_eq (nbd_get16 (b + 24), strlen (msg));
  cr_assert_eq (memcmp (b + 26, msg, strlen (msg)), 0);

  n = nbd_encode_error_chunk (b, sizeof b, 9, NBD_EINVAL, NULL);
  cr_assert_eq (n, 26);
  t_check_chunk (b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 9, 6);

  /* cut to cap */
  n = nbd_encode_error_chunk (b, 30, 9, NBD_EIO, msg);
  cr_assert_eq (n, 30);
  cr_assert_eq (nbd_get32 (b + 16), 10);
  cr_assert_eq (nbd_get16 (b + 24), 4);
  cr_assert_eq (memcmp (b + 26, "read", 4), 0);

  /* cut to cap without splitting a UTF-8 character ("é" is 2 bytes) */
  n = nbd_encode_error_chunk (b, 28, 9, NBD_EIO, "a\xc3\xa9");
  cr_assert_eq (n, 27);
  cr_assert_eq (nbd_get16 (b + 24), 1);

  /* cut to NBD_MAX_STRING */
  memset (big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  n = nbd_encode_error_chunk (b, sizeof b, 9, NBD_EIO, big);
  cr_assert_eq (n, 26 + NBD_MAX_STRING);
  cr_assert_eq (nbd_get16 (b + 24), NBD_MAX_STRING);
  cr_assert_eq (nbd_get32 (b + 16), 6 + NBD_MAX_STRING);

  cr_assert_eq (nbd_encode_error_chunk (b, 25, 9, NBD_EIO, msg), 0, "cap below minimum");
}

Test (nbd_reply, utf8_clip)
{
  cr_assert_eq (nbd_utf8_clip ("abc", 3, 10), 3);
  cr_assert_eq (nbd_utf8_clip ("abc", 3, 2), 2);
  cr_assert_eq (nbd_utf8_clip ("a\xe2\x82\xac", 4, 3), 1);  /* € */
  cr_assert_eq (nbd_utf8_clip ("a\xe2\x82\xac", 4, 4), 4);
  cr_assert_eq (nbd_utf8_clip ("\xe2\x82\xac", 3, 2), 0);
}
