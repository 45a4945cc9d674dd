/* blockd/conn.c — one NBD connection: the socket side of the protocol.
 *
 * The bytes go through nbd/ (handshake state machine, request validation,
 * reply encoding); the requests go to volume/.  Many requests are in flight
 * at once and answered as they finish; the replies ready after a batch of
 * completions leave in one sendmsg.  A shallow client's large write goes to
 * the volume in pieces while its payload is still arriving, and its large
 * read goes back in pieces as they come off the disk.
 *
 * States (struct blk_conn.state):
 *   HANDSHAKE     option haggling (nbd_hs_*)
 *   TRANSMISSION  reading and executing requests
 *   DRAINING      reading no more (NBD_CMD_DISC, end of stream, shutdown,
 *                 volume deleted): every request already read is completed
 *                 and answered, then the connection closes
 *   DEAD          the stream is broken (c->error says why): in-flight
 *                 volume I/O is waited for, nothing more is sent
 */
#include "blockd/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define RBUF_SIZE        (256 * 1024)
#define DIRECT_MIN       (64 * 1024)     /* payloads larger go straight into the request buffer */
#define PIECE_MIN        (256 * 1024)    /* a large write goes to the volume in pieces of at least this */
#define MAX_PIECES       8
#define PIECE_MAX_DEPTH16 20             /* ...while the client keeps at most ~1.25 in flight */
#define READ_PIECES_AT_ONCE 1            /* a read's pieces on the disk at once */
#define MAX_CONN_BYTES   (96ull << 20)   /* request buffers in flight per connection */
#define KEEP_BUF_MAX     (1u << 20)      /* request buffers up to this stay with their request */
#define KEEP_LARGE_BYTES (64ull << 20)   /* larger ones too, up to this many bytes a loop */
#define IOV_BATCH        192
#define MAX_EXTENTS      1024
#define MSG_MAX          160

enum conn_state { CONN_HANDSHAKE, CONN_TRANSMISSION, CONN_DRAINING, CONN_DEAD };

/* A request's part in read-ahead: none (a client's request as any other),
 * started ahead and not asked for yet (in the connection's list), asked
 * for while its read was still on the disk, or no longer wanted (released
 * when its read is done). */
enum ra_state { RA_NONE, RA_AHEAD, RA_CLAIMED, RA_DROPPED };

/* An entry of a connection's send queue: a request's reply (its out), or
 * one OFFSET_DATA chunk of a read sent in pieces (one of its chunks). */
struct blk_send {
  struct blk_send *next;
  struct blk_req *req;
};

struct blk_chunk {
  struct blk_send s;
  uint8_t hdr[NBD_HOLE_CHUNK_LEN];  /* OFFSET_DATA's header, or OFFSET_HOLE */
  uint32_t hdrlen;
  uint32_t off, len;            /* the piece's bytes in the request buffer (none: a hole) */
};

struct blk_req {
  struct vol_io io;             /* io.opaque == this */
  struct blk_conn *conn;
  struct nbd_request r;
  uint8_t hdr[NBD_CHUNK_HDR_LEN + 6 + MSG_MAX];
  uint32_t hdrlen;
  void *buf;                    /* data buffer, aligned; kept for reuse */
  size_t bufcap;
  uint32_t dataoff, datalen;    /* bytes of buf sent after hdr */
  uint8_t *extra;               /* block status descriptors */
  uint32_t extralen;
  uint32_t payload_got;
  size_t charged;               /* bytes counted in conn->inflight_bytes */
  uint64_t t0;                  /* the loop's turn_ns when it arrived (or was claimed) */
  uint64_t t_store;             /* ...when it went to the store (store_since; 0: not yet) */
  /* A large write is written in pieces as its payload arrives, a large
   * read sent in pieces as they are read (piece_len != 0): piece 0 is io,
   * the others pieces[]. */
  struct vol_io *pieces;        /* MAX_PIECES - 1 of them; kept for reuse */
  struct blk_chunk *chunks;     /* a read's: MAX_PIECES of them; kept for reuse */
  uint32_t piece_len;
  uint32_t submitted;           /* bytes handed to the volume */
  unsigned pieces_out;          /* pieces started and not yet done */
  int piece_err;                /* the first error of its pieces */
  bool orphaned;                /* the payload will never come: release when pieces_out is 0 */
  unsigned chunks_out;          /* chunks queued or being sent */
  bool out_done;                /* the reply is sent: release when chunks_out is 0 */
  /* A read started ahead of the client (see read-ahead): ra is its state,
   * ra_mark the volume's write mark for its range when it started.  It
   * may answer several of the client's reads, each taking the part of it
   * that follows the one before. */
  uint8_t ra;                   /* enum ra_state */
  bool ra_ready;                /* RA_AHEAD: its read is done */
  uint64_t ra_mark;
  uint32_t ra_taken;            /* bytes of it taken by requests, from its start */
  struct blk_req *ra_waiters;   /* requests that took their part before its read was done */
  struct blk_send out;
  struct blk_req *next;         /* free lists */
};

/* A client's stream of reads, each where the one before ended and as
 * long, and the reads started ahead of it (RA_AHEAD, by offset, from next
 * on). */
#define RA_STREAMS 4
struct ra_stream {
  uint64_t next;                /* where its last read ended */
  uint32_t len;                 /* its reads' length (0: no stream) */
  unsigned run;                 /* reads in a row that followed the one before */
  unsigned wait;                /* back-off: its reads before reading ahead again */
  unsigned backoff;             /* the last back-off (0: none since its data was last current) */
  struct blk_req *head, *tail;
  unsigned n;                   /* in the list */
  uint64_t window;              /* bytes it may have ahead now */
  uint64_t last_read;           /* the connection's reads at its last one */
  uint64_t read_at_tick;        /* last_read at the last tick: idle for a second? */
  bool due;                     /* to read ahead of, when the replies are sent (ra_fill) */
};

struct blk_conn {
  struct blk_loop *loop;
  int fd;
  enum conn_state state;
  char error[200];
  char peer[64];
  int64_t started;

  struct nbd_handshake hs;
  struct nbd_buf hsout;         /* handshake replies not yet sent */
  size_t hsout_sending;         /* bytes of hsout in the current sendmsg */
  struct nbd_session sess;
  struct volume *vol;
  struct vol_session vs;

  /* Received bytes not yet processed are rbuf[rpos, rpos + rlen).  A recv
   * in flight writes at rbuf + rpos + rlen, which processing does not move
   * (it only advances rpos); the buffer is compacted only before a recv is
   * armed. */
  uint8_t *rbuf;
  size_t rpos, rlen;
  bool recv_armed, recv_direct, send_armed;
  bool recv_next;               /* the next header's recv, linked behind a payload's */
  bool big_writes;              /* the last request was a WRITE of >= DIRECT_MIN bytes */
  bool eof;                     /* the client shut its side: read no more, finish rbuf */
  struct blk_req *payload_req;  /* a WRITE still receiving its payload */
  uint64_t discard_left;        /* payload of a refused request still to skip */

  struct blk_send *sendq_head, *sendq_tail;
  struct blk_send *sending;
  struct iovec iov[IOV_BATCH];
  unsigned niov, iov_first;
  struct msghdr msg;

  unsigned inflight;            /* requests read and not yet released */
  uint64_t inflight_bytes;
  unsigned depth16;             /* inflight when a request arrives, averaged, x16 */
  struct blk_req *free_reqs;
  struct blk_req *free_large;   /* free requests with buffers over KEEP_BUF_MAX */
  atomic_bool kicked;

  /* Read-ahead: the client's streams of reads (see read-ahead). */
  struct ra_stream ra[RA_STREAMS];
  unsigned ra_reqs;             /* in the lists, or dropped with their read on the disk */
  unsigned ra_parked;           /* in the lists with their read done */
  uint64_t reads;               /* the client's reads */
  uint64_t ra_started, ra_used; /* for the log: reads ahead started, and taken from */
  uint64_t ra_bytes, ra_taken;  /* ...their bytes, and the bytes requests took */

  struct blk_conn *next, *prev; /* the loop's connections */
  struct blk_conn *next_dirty;
  bool dirty;
};

static void process_input (struct blk_conn *c);
static void conn_release (struct blk_conn *c, struct blk_req *q);
static void arm_recv (struct blk_conn *c);
static void maybe_free (struct blk_conn *c);
static void ra_drop (struct blk_conn *c, struct ra_stream *st);
static void ra_drop_all (struct blk_conn *c);
static bool ra_read_done (struct blk_conn *c, struct blk_req *q);

struct blk_conn *blk_conn_next (struct blk_conn *c) { return c->next; }

/* Connections with something to send are listed on their loop; the loop
 * calls blk_loop_flush_dirty() after each batch of completions. */
void
blk_loop_mark_dirty (struct blk_loop *l, struct blk_conn *c)
{
  if (c->dirty)
    return;
  c->dirty = true;
  c->next_dirty = l->dirty;
  l->dirty = c;
}

void
blk_loop_flush_dirty (struct blk_loop *l)
{
  while (l->dirty) {
    struct blk_conn *c = l->dirty;
    l->dirty = c->next_dirty;
    c->next_dirty = NULL;
    c->dirty = false;
    blk_conn_flush (c);
  }
}

void
blk_nbd_uri (const char *name, char *out, size_t len)
{
  char host[128];
  int port;
  if (blk_cfg.nbd[0] && blk_split_hostport (blk_cfg.nbd, host, sizeof host, &port) == 0) {
    const char *h = host;
    if (strcmp (host, "0.0.0.0") == 0)
      h = "127.0.0.1";
    if (strchr (h, ':'))
      snprintf (out, len, "nbd://[%s]:%d/%s", h, port, name);
    else
      snprintf (out, len, "nbd://%s:%d/%s", h, port, name);
  }
  else if (blk_cfg.nbd_unix[0])
    snprintf (out, len, "nbd+unix:///%s?socket=%s", name, blk_cfg.nbd_unix);
  else
    snprintf (out, len, "%s", "");
}

/* ---- handshake callbacks -------------------------------------------------- */
static int
hs_lookup (void *opaque, const char *name, struct nbd_export_info *info, char *msg, size_t msglen)
{
  struct vol_info vi;
  bool ro = false;
  if (vol_export_stat (blk_store, name, &vi, &ro) < 0) {
    if (*name == '\0')
      snprintf (msg, msglen, "blockd has no default export: name the volume to connect to");
    else
      snprintf (msg, msglen, "no volume named \"%.100s\" on this server (blockctl volume list shows them)", name);
    return -ENOENT;
  }
  memset (info, 0, sizeof *info);
  info->size = vi.size;
  /* CAN_MULTI_CONN is true: every connection reads the same pool without a
   * cache of its own, and FLUSH syncs the whole store. */
  info->tflags = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM
                 | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_SEND_DF
                 | NBD_FLAG_CAN_MULTI_CONN;
  if (ro)   /* a snapshot: read-only; writes, trims and zeroes get EPERM */
    info->tflags = (info->tflags & ~NBD_FLAG_SEND_FUA) | NBD_FLAG_READ_ONLY;
  info->min_block = 1;
  info->pref_block = 4096;
  info->max_block = NBD_MAX_PAYLOAD;
  snprintf (info->description, sizeof info->description, "blockd %s %s (%s)",
            ro ? "snapshot" : "volume", vi.id, ro ? "read-only" : vi.type);
  return 0;
}

static int
hs_list (void *opaque, void (*emit) (void *ctx, const char *name, const char *desc), void *ctx)
{
  struct vol_info *vi;
  size_t n;
  int r = vol_list (blk_store, &vi, &n);
  if (r < 0)
    return r;
  for (size_t i = 0; i < n; i++)
    emit (ctx, vi[i].name, "");
  free (vi);
  return 0;
}

static const struct nbd_server_ops hs_ops = { .lookup = hs_lookup, .list = hs_list };

/* ---- life cycle ------------------------------------------------------------ */
static void
conn_kick (struct vol_session *s)
{
  struct blk_conn *c = (struct blk_conn *) ((char *) s - offsetof (struct blk_conn, vs));
  atomic_store (&c->kicked, true);
  shutdown (c->fd, SHUT_RDWR);          /* the loop sees end of stream */
}

void
blk_conn_start (struct blk_loop *l, int fd)
{
  struct blk_conn *c = calloc (1, sizeof *c);
  uint8_t *rbuf = malloc (RBUF_SIZE);
  if (c == NULL || rbuf == NULL) {
    free (c);
    free (rbuf);
    close (fd);
    atomic_fetch_sub (&blk_nconns, 1);
    log_error_ratelimited ("out of memory for a new connection");
    return;
  }
  c->loop = l;
  c->fd = fd;
  c->rbuf = rbuf;
  c->vs.kick = conn_kick;
  c->depth16 = 16;
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  c->started = ts.tv_sec;
  snprintf (c->peer, sizeof c->peer, "fd %d", fd);
  c->next = l->conns;
  if (l->conns)
    l->conns->prev = c;
  l->conns = c;
  l->nconns++;

  c->state = CONN_HANDSHAKE;
  nbd_hs_init (&c->hs, &hs_ops, c);
  if (nbd_hs_greeting (&c->hs, &c->hsout) < 0) {
    c->state = CONN_DEAD;
    snprintf (c->error, sizeof c->error, "out of memory");
    maybe_free (c);
    return;
  }
  log_debug ("connection %s: new", c->peer);
  blk_loop_mark_dirty (l, c);
  arm_recv (c);
}

/* s has been sent, or never will be.  A request goes when its reply and
 * all its chunks have gone: a chunk can still be in a sendmsg when the
 * reply is dropped (the stream broke). */
static void
send_finished (struct blk_conn *c, struct blk_send *s)
{
  struct blk_req *q = s->req;
  if (s != &q->out) {
    if (--q->chunks_out == 0 && q->out_done)
      conn_release (c, q);
  }
  else if (q->chunks_out)
    q->out_done = true;
  else
    conn_release (c, q);
}

/* Replies that will never be sent (the stream is broken). */
static void
drop_sendq (struct blk_conn *c)
{
  while (c->sendq_head) {
    struct blk_send *s = c->sendq_head;
    c->sendq_head = s->next;
    send_finished (c, s);
  }
  c->sendq_tail = NULL;
}

/* A WRITE whose payload will never be complete: give it back, or once the
 * pieces already written are done. */
static void
abandon (struct blk_conn *c, struct blk_req *q)
{
  if (q->pieces_out)
    q->orphaned = true;
  else
    conn_release (c, q);
}

/* The same for the WRITE being received, unless a recv into its buffer is
 * still in flight (recv_done calls this again). */
static void
drop_payload (struct blk_conn *c)
{
  if (c->payload_req && !c->recv_armed) {
    abandon (c, c->payload_req);
    c->payload_req = NULL;
  }
}

static void
conn_fail (struct blk_conn *c, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
static void
conn_fail (struct blk_conn *c, const char *fmt, ...)
{
  if (c->state == CONN_DEAD)
    return;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (c->error, sizeof c->error, fmt, ap);
  va_end (ap);
  c->state = CONN_DEAD;
  log_info ("connection %s%s%s: closing: %s", c->peer, c->vol ? " to " : "",
            c->vol ? c->hs.export_name : "", c->error);
  shutdown (c->fd, SHUT_RDWR);   /* completes a pending recv or send */
  drop_payload (c);
  drop_sendq (c);
  ra_drop_all (c);
}

static void
drain (struct blk_conn *c, const char *why)
{
  if (c->state == CONN_DEAD || c->state == CONN_DRAINING)
    return;
  log_debug ("connection %s: draining: %s", c->peer, why);
  c->state = CONN_DRAINING;
  ra_drop_all (c);
  if (c->recv_armed || c->recv_next)
    shutdown (c->fd, SHUT_RD);    /* recv_done drops a payload it was reading */
  else
    drop_payload (c);             /* nothing more is read */
}

static void
req_free (struct blk_conn *c, struct blk_req *q)
{
  vol_io_release (&q->io);
  if (q->pieces)
    for (unsigned i = 0; i < MAX_PIECES - 1; i++)
      vol_io_release (&q->pieces[i]);
  free (q->pieces);
  free (q->chunks);
  blk_buf_put (c->loop, q->buf, q->bufcap);
  free (q->extra);
  free (q);
}

static void
conn_release (struct blk_conn *c, struct blk_req *q)
{
  if (--c->inflight == c->ra_parked)
    c->loop->busy_conns--;
  c->loop->inflight--;
  c->inflight_bytes -= q->charged;
  c->loop->inflight_bytes -= q->charged;
  q->charged = 0;
  free (q->extra);
  q->extra = NULL;
  q->extralen = 0;
  if (q->bufcap > KEEP_BUF_MAX) {
    /* A large buffer is kept for the next large request while the loop's
     * budget allows.  A new one costs its page faults again: keeping them
     * made 4M writes 1.55x (QD1) and 1.76x (QD4) as fast
     * (docs/BENCHMARKS.md, ninth pass). */
    if (c->loop->kept_large + q->bufcap <= KEEP_LARGE_BYTES) {
      c->loop->kept_large += q->bufcap;
      q->next = c->free_large;
      c->free_large = q;
      return;
    }
    blk_buf_put (c->loop, q->buf, q->bufcap);
    q->buf = NULL;
    q->bufcap = 0;
  }
  q->next = c->free_reqs;
  c->free_reqs = q;
}

/* A free request with a large buffer of at least need bytes, or NULL. */
static struct blk_req *
take_large (struct blk_conn *c, size_t need)
{
  for (struct blk_req **p = &c->free_large; *p; p = &(*p)->next)
    if ((*p)->bufcap >= need) {
      struct blk_req *q = *p;
      *p = q->next;
      c->loop->kept_large -= q->bufcap;
      return q;
    }
  return NULL;
}

static void
maybe_free (struct blk_conn *c)
{
  if (c->state != CONN_DRAINING && c->state != CONN_DEAD)
    return;
  if (c->recv_armed || c->recv_next || c->send_armed || c->inflight || c->dirty)
    return;
  if (c->state == CONN_DRAINING && (c->sendq_head || c->hsout.len))
    return;
  struct blk_loop *l = c->loop;
  if (c->prev)
    c->prev->next = c->next;
  else
    l->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  l->nconns--;
  if (c->vol)
    vol_close (c->vol, &c->vs);
  close (c->fd);
  atomic_fetch_sub (&blk_nconns, 1);
  while (c->free_reqs) {
    struct blk_req *q = c->free_reqs;
    c->free_reqs = q->next;
    req_free (c, q);
  }
  while (c->free_large) {
    struct blk_req *q = c->free_large;
    c->free_large = q->next;
    l->kept_large -= q->bufcap;
    req_free (c, q);
  }
  if (c->ra_started)
    log_debug ("connection %s: %llu reads started ahead, %llu of them used; %llu KiB read ahead, "
               "%llu KiB of it taken", c->peer, (unsigned long long) c->ra_started,
               (unsigned long long) c->ra_used, (unsigned long long) c->ra_bytes / 1024,
               (unsigned long long) c->ra_taken / 1024);
  log_debug ("connection %s: closed", c->peer);
  nbd_hs_free (&c->hs);
  nbd_buf_free (&c->hsout);
  free (c->rbuf);
  free (c);
}

void
blk_conn_stop (struct blk_conn *c)
{
  if (c->state == CONN_HANDSHAKE)
    conn_fail (c, "server shutting down");
  else
    drain (c, "server shutting down");
  maybe_free (c);
}

void
blk_conn_tick (struct blk_conn *c, int64_t now)
{
  for (struct ra_stream *st = c->ra; st < c->ra + RA_STREAMS; st++) {
    if (st->last_read == st->read_at_tick) {
      ra_drop (c, st);          /* the stream stopped: give the buffers back, */
      st->run = 0;              /* and its place to a new one */
    }
    st->read_at_tick = st->last_read;
  }
  if (c->state == CONN_HANDSHAKE && now - c->started > blk_cfg.handshake_timeout) {
    conn_fail (c, "handshake not finished within %lld s", (long long) blk_cfg.handshake_timeout);
    maybe_free (c);
  }
}

/* ---- replies ------------------------------------------------------------------ */
static const char *
error_text (int err)
{
  switch (err) {
  case ENOSPC: return "no space left: the storage pool is full";
  case EIO: return "I/O error in the storage pool";
  case ENOMEM: return "server out of memory";
  case ESHUTDOWN: return "the volume is being deleted or the server is shutting down";
  case ENOTSUP: return "cannot zero quickly here";
  case EPERM: return "the export is read-only";
  default: return strerror (err);
  }
}

static void
enqueue (struct blk_conn *c, struct blk_send *s)
{
  if (c->state == CONN_DEAD) {
    send_finished (c, s);
    return;
  }
  s->next = NULL;
  if (c->sendq_tail)
    c->sendq_tail->next = s;
  else
    c->sendq_head = s;
  c->sendq_tail = s;
  blk_loop_mark_dirty (c->loop, c);
}

/* The structured-reply chunk of io, the read of q or one of its pieces,
 * into hdr: OFFSET_HOLE if the volume found it never written, else
 * OFFSET_DATA.  Returns the header's length; *datalen is the data bytes
 * that follow it (none for a hole). */
static uint32_t
encode_read_chunk (uint8_t hdr[NBD_HOLE_CHUNK_LEN], const struct blk_req *q, const struct vol_io *io,
                   bool done, uint32_t *datalen)
{
  *datalen = io->hole ? 0 : (uint32_t) io->length;
  if (io->hole)    /* never written: no zeros on the wire */
    return (uint32_t) nbd_encode_hole_chunk (hdr, q->r.cookie, io->offset, (uint32_t) io->length, done);
  return (uint32_t) nbd_encode_read_chunk (hdr, q->r.cookie, io->offset, (uint32_t) io->length, done);
}

/* Count q, a client's request answered now, in its volume's statistics:
 * the time is from the start of the loop's turn that read its header to
 * now (one clock read per answer; a write's payload arriving is part of
 * it).  Not counted: BLOCK_STATUS and CACHE, which do no I/O; answers that
 * will never be sent (the connection is broken); reads of a snapshot's
 * export, whose view is not among the volumes. */
static void
count_answer (struct blk_conn *c, const struct blk_req *q, bool failed)
{
  enum vol_stat_kind k;
  switch (q->r.type) {
  case NBD_CMD_READ: k = VOL_STAT_READ; break;
  case NBD_CMD_WRITE: k = VOL_STAT_WRITE; break;
  case NBD_CMD_FLUSH: k = VOL_STAT_FLUSH; break;
  case NBD_CMD_TRIM: k = VOL_STAT_TRIM; break;
  case NBD_CMD_WRITE_ZEROES: k = VOL_STAT_ZERO; break;
  default: return;
  }
  if (c->state == CONN_DEAD || vol_read_only (c->vol))
    return;
  uint64_t now = blk_now_ns ();
  vol_stats_add (c->vol, (unsigned) c->loop->index, k, q->r.length,
                 now > q->t0 ? now - q->t0 : 0,
                 q->t_store && now > q->t_store ? now - q->t_store : 0, failed);
}

/* Encode the reply to q: res is 0 or -errno from the volume, nbd_err an
 * NBD error from validation (0 if none), msg its text. */
static void
reply (struct blk_conn *c, struct blk_req *q, int res, uint32_t nbd_err, const char *msg)
{
  if (res < 0 && nbd_err == 0) {
    nbd_err = nbd_errno_to_wire (-res);
    msg = error_text (-res);
  }
  count_answer (c, q, nbd_err != 0);
  q->dataoff = q->datalen = 0;
  if (nbd_err) {
    if (c->sess.structured) {
      char m[MSG_MAX];
      snprintf (m, sizeof m, "%s %s at offset %llu length %u: %s", nbd_cmd_name (q->r.type),
                "failed", (unsigned long long) q->r.offset, q->r.length, msg ? msg : "error");
      q->hdrlen = (uint32_t) nbd_encode_error_chunk (q->hdr, sizeof q->hdr, q->r.cookie, nbd_err, m);
    }
    else
      q->hdrlen = (uint32_t) nbd_encode_simple_reply (q->hdr, q->r.cookie, nbd_err);
  }
  else if (q->r.type == NBD_CMD_READ) {
    if (c->sess.structured && q->r.length == 0)
      q->hdrlen = (uint32_t) nbd_encode_chunk_header (q->hdr, NBD_REPLY_FLAG_DONE,
                                                      NBD_REPLY_TYPE_NONE, q->r.cookie, 0);
    else if (c->sess.structured)   /* q->io is the whole read */
      q->hdrlen = encode_read_chunk (q->hdr, q, &q->io, true, &q->datalen);
    else {
      q->hdrlen = (uint32_t) nbd_encode_simple_reply (q->hdr, q->r.cookie, 0);
      q->datalen = q->r.length;
    }
  }
  else if (q->r.type != NBD_CMD_BLOCK_STATUS)
    q->hdrlen = (uint32_t) nbd_encode_simple_reply (q->hdr, q->r.cookie, 0);
  enqueue (c, &q->out);
}

/* The volume I/O of q is done: answer it, unless it was a read ahead of
 * the client. */
static void
req_done (struct blk_conn *c, struct blk_req *q)
{
  if (q->ra != RA_NONE && ra_read_done (c, q))
    return;
  reply (c, q, q->io.result, 0, NULL);
}

static void
io_done (struct vol_io *io)
{
  struct blk_req *q = io->opaque;
  struct blk_conn *c = q->conn;
  req_done (c, q);
  maybe_free (c);
}

struct bs_ctx {
  uint8_t *out;
  uint32_t n;
};

static int
bs_extent (void *opaque, uint64_t offset, uint64_t length, bool allocated)
{
  struct bs_ctx *b = opaque;
  nbd_encode_extent (b->out + 8 * b->n, (uint32_t) length,
                     allocated ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO);
  b->n++;
  return 0;
}

static void
block_status (struct blk_conn *c, struct blk_req *q)
{
  unsigned max = (q->r.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  q->extra = malloc (8 * max);
  if (q->extra == NULL) {
    reply (c, q, -ENOMEM, 0, NULL);
    return;
  }
  struct bs_ctx b = { .out = q->extra };
  uint64_t len = q->r.length ? q->r.length : 1;
  vol_extents (c->vol, q->r.offset, len, max, bs_extent, &b);
  if (b.n == 0) {                /* the volume shrank under us?  never: sizes only grow */
    reply (c, q, -EINVAL, 0, NULL);
    return;
  }
  q->extralen = 8 * b.n;
  q->hdrlen = (uint32_t) nbd_encode_block_status (q->hdr, q->r.cookie, NBD_META_BASE_ALLOCATION_ID,
                                                  b.n, true);
  reply (c, q, 0, 0, NULL);
}

/* May a read of never-written space be answered with an OFFSET_HOLE chunk
 * (12 bytes) rather than its zeros?  A client with structured replies must
 * take one, with NBD_CMD_FLAG_DF too when it covers the whole read. */
static bool
hole_replies (const struct blk_conn *c)
{
  return c->sess.structured && blk_cfg.hole_replies;
}

/* q now waits for the store: its time there is counted from its first
 * handing over (whatever is handed over again), or for a write in pieces
 * from its payload's last byte (payload_arrived), since the pieces before
 * it were written while the payload arrived. */
static void
store_since (struct blk_conn *c, struct blk_req *q)
{
  if (q->t_store == 0)
    q->t_store = c->loop->turn_ns;
}

static void
execute (struct blk_conn *c, struct blk_req *q)
{
  struct vol_io *io = &q->io;
  io->flags = 0;
  switch (q->r.type) {
  case NBD_CMD_READ: io->op = VOL_OP_READ; break;
  case NBD_CMD_WRITE: io->op = VOL_OP_WRITE; break;
  case NBD_CMD_FLUSH: io->op = VOL_OP_FLUSH; break;
  case NBD_CMD_TRIM: io->op = VOL_OP_TRIM; break;
  case NBD_CMD_WRITE_ZEROES:
    io->op = VOL_OP_ZERO;
    if (q->r.flags & NBD_CMD_FLAG_NO_HOLE) io->flags |= VOL_F_NO_HOLE;
    if (q->r.flags & NBD_CMD_FLAG_FAST_ZERO) io->flags |= VOL_F_FAST_ZERO;
    break;
  case NBD_CMD_BLOCK_STATUS:
    block_status (c, q);
    return;
  default:                         /* CACHE: nothing to do */
    reply (c, q, 0, 0, NULL);
    return;
  }
  if (q->r.flags & NBD_CMD_FLAG_FUA)
    io->flags |= VOL_F_FUA;
  if (io->op == VOL_OP_READ && hole_replies (c))
    io->flags |= VOL_F_HOLE_OK;
  io->vol = c->vol;
  io->ctx = &c->loop->vctx;
  io->offset = q->r.offset;
  io->length = q->r.type == NBD_CMD_FLUSH ? 0 : q->r.length;
  io->buf = q->buf;
  io->done = io_done;
  io->opaque = q;
  store_since (c, q);
  if (vol_io_submit (io) == 1)
    req_done (c, q);
}

/* ---- large requests, in pieces -------------------------------------------- */
/* A large write is not received whole and then written: each piece goes to
 * the volume as soon as its bytes are in, so that the disk writes the start
 * of the payload while the rest is still on the wire, and the reply waits
 * for the last piece's disk time rather than the whole write's.  A large
 * read is the same the other way round: its pieces are read one after
 * another, and each is sent as an OFFSET_DATA chunk (structured replies;
 * OFFSET_HOLE if it was never written) while the next is read, so the wire does not wait for the whole read.
 * One at a time, because pieces read together finish together: eight reads
 * of 512 KiB issued at once all completed within ~0.25 ms of each other,
 * leaving nothing to send before the end (and no gain: 0.99x).
 *
 * That pays where the disk would otherwise wait for the wire or the wire
 * for the disk, with a client that sends one request at a time (`make
 * bench-link`, 1M writes at QD1: 1.39x over 25 Gbit, 1.18x over a bare
 * veth pair; 4M: 1.17..1.68x; 1M reads 1.22x over 10 Gbit, 1.35x over
 * 25 Gbit; 4M reads 1.26x and 1.27x).  With more in flight the disk has other
 * writes to do, and the extra disk requests of the pieces cost more than
 * the overlap gains (1M at QD4, cut: -7..-27%).  So a connection's depth
 * is averaged over its requests, and only a shallow one's are cut
 * (docs/BENCHMARKS.md, ninth and tenth passes).
 *
 * Only 4 KiB aligned requests are cut, so that no two pieces of a write
 * share a block (an unaligned piece reads, modifies and writes a block its
 * neighbour may be writing too); a read with NBD_CMD_FLAG_DF must come in
 * one chunk. */
static uint32_t
piece_len_for (const struct blk_conn *c, const struct nbd_request *r)
{
  if (r->type != NBD_CMD_WRITE && r->type != NBD_CMD_READ)
    return 0;
  if (r->type == NBD_CMD_READ && (!c->sess.structured || (r->flags & NBD_CMD_FLAG_DF)))
    return 0;
  if (r->length < 2 * PIECE_MIN || (r->offset | r->length) % 4096)
    return 0;
  uint32_t len = ((r->length + MAX_PIECES - 1) / MAX_PIECES + 4095) & ~4095u;
  if (r->type == NBD_CMD_WRITE && vol_write_copies (c->vol, r->offset, r->length)) {
    /* After a snapshot: pieces of whole chunks, each of which replaces its
     * chunk without copying it first; a write that cannot start on a chunk
     * boundary goes whole (docs/BENCHMARKS.md, eleventh pass). */
    uint32_t cs = vol_chunk_size (c->vol);
    len = ((len < PIECE_MIN ? PIECE_MIN : len) + cs - 1) / cs * cs;
    return r->offset % cs == 0 && len < r->length ? len : 0;
  }
  return len < PIECE_MIN ? PIECE_MIN : len;
}

static void
piece_result (struct blk_req *q, int res)
{
  if (res < 0 && q->piece_err == 0)
    q->piece_err = res;
}

/* No more pieces of read q are read: all are, one failed (the last chunk
 * is the error), or the connection is broken. */
static bool
read_stops (const struct blk_conn *c, const struct blk_req *q)
{
  return q->submitted == q->r.length || q->piece_err || c->state == CONN_DEAD;
}

/* Piece io of read q is done (pieces_out counts it no more): send its
 * data, as the last chunk if it is the last piece.  Returns true when
 * that was the last (q may be gone). */
static bool
read_piece_out (struct blk_conn *c, struct blk_req *q, const struct vol_io *io)
{
  uint32_t off = (uint32_t) (io->offset - q->r.offset);
  if (q->pieces_out == 0 && read_stops (c, q)) {
    if (q->piece_err) {
      reply (c, q, q->piece_err, 0, NULL);
      return true;
    }
    q->hdrlen = encode_read_chunk (q->hdr, q, io, true, &q->datalen);
    q->dataoff = off;
    count_answer (c, q, false);
    enqueue (c, &q->out);
    return true;
  }
  if (io->result < 0)
    return false;                 /* the last chunk is the error */
  struct blk_chunk *ch = &q->chunks[off / q->piece_len];
  ch->off = off;
  ch->hdrlen = encode_read_chunk (ch->hdr, q, io, false, &ch->len);
  ch->s.req = q;
  q->chunks_out++;
  enqueue (c, &ch->s);
  return false;
}

static void start_pieces (struct blk_conn *c, struct blk_req *q);

static void
piece_done (struct vol_io *io)
{
  struct blk_req *q = io->opaque;
  struct blk_conn *c = q->conn;
  piece_result (q, io->result);
  q->pieces_out--;
  if (q->r.type == NBD_CMD_READ) {
    if (!read_piece_out (c, q, io))
      start_pieces (c, q);
  }
  else if (q->pieces_out == 0) {
    if (q->orphaned)
      conn_release (c, q);
    else if (q->submitted == q->r.length)
      reply (c, q, q->piece_err, 0, NULL);
  }
  maybe_free (c);
}

/* Hand the next piece of q to the volume.  Returns the piece if it
 * finished at once (pieces_out no longer counts it), else NULL. */
static struct vol_io *
start_piece (struct blk_conn *c, struct blk_req *q)
{
  uint32_t left = q->r.length - q->submitted;
  unsigned k = q->submitted / q->piece_len;       /* this piece's number */
  struct vol_io *io = k ? &q->pieces[k - 1] : &q->io;
  bool read = q->r.type == NBD_CMD_READ;
  io->op = read ? VOL_OP_READ : VOL_OP_WRITE;
  io->flags = !read && (q->r.flags & NBD_CMD_FLAG_FUA) ? VOL_F_FUA
              : read && hole_replies (c) ? VOL_F_HOLE_OK : 0;
  io->vol = c->vol;
  io->ctx = &c->loop->vctx;
  io->offset = q->r.offset + q->submitted;
  io->length = left < q->piece_len ? left : q->piece_len;
  io->buf = (char *) q->buf + q->submitted;
  io->done = piece_done;
  io->opaque = q;
  if (read)
    store_since (c, q);
  q->submitted += io->length;
  q->pieces_out++;
  if (vol_io_submit (io) == 1) {
    q->pieces_out--;
    piece_result (q, io->result);
    return io;
  }
  return NULL;
}

/* A read's pieces go to the volume one after another, each when the one
 * before is done; those that finish at once (a hole, an error) are sent at
 * once. */
static void
start_pieces (struct blk_conn *c, struct blk_req *q)
{
  while (!read_stops (c, q) && q->pieces_out < READ_PIECES_AT_ONCE) {
    struct vol_io *io = start_piece (c, q);
    if (io && read_piece_out (c, q, io))
      return;
  }
}

/* More of the payload of q, the write being received, is in q->buf: start
 * the pieces it completes.  Returns true when the payload is whole (and
 * the write is on its way). */
static bool
payload_arrived (struct blk_conn *c, struct blk_req *q)
{
  bool whole = q->payload_got == q->r.length;
  if (whole)
    c->payload_req = NULL;
  if (q->piece_len == 0) {
    if (whole)
      execute (c, q);
    return whole;
  }
  if (whole)
    store_since (c, q);
  while (q->submitted < q->r.length && (whole || q->payload_got - q->submitted >= q->piece_len))
    start_piece (c, q);
  if (whole && q->pieces_out == 0)
    reply (c, q, q->piece_err, 0, NULL);
  return whole;
}

/* ---- reading requests ------------------------------------------------------ */
static struct blk_req *
req_get (struct blk_conn *c, const struct nbd_request *r)
{
  size_t need = (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) ? r->length : 0;
  struct blk_req *q = need > KEEP_BUF_MAX ? take_large (c, need) : NULL;
  if (q == NULL && (q = c->free_reqs) != NULL)
    c->free_reqs = q->next;
  else if (q == NULL && (q = calloc (1, sizeof *q)) == NULL)
    return NULL;
  q->conn = c;
  q->r = *r;
  q->payload_got = 0;
  q->piece_len = q->submitted = 0;
  q->pieces_out = 0;
  q->piece_err = 0;
  q->orphaned = false;
  q->chunks_out = 0;
  q->out_done = false;
  q->ra = RA_NONE;
  q->ra_ready = false;
  q->ra_taken = 0;
  q->ra_waiters = NULL;
  q->io.hole = false;
  q->out.req = q;
  q->next = NULL;
  if (need > q->bufcap) {
    blk_buf_put (c->loop, q->buf, q->bufcap);
    q->bufcap = 0;
    q->buf = blk_buf_get (c->loop, need, &q->bufcap);
    if (q->buf == NULL) {
      q->next = c->free_reqs;
      c->free_reqs = q;
      return NULL;
    }
  }
  q->charged = need;
  q->t0 = c->loop->turn_ns;
  q->t_store = 0;
  if (c->inflight++ == c->ra_parked)
    c->loop->busy_conns++;
  c->loop->inflight++;
  c->inflight_bytes += need;
  c->loop->inflight_bytes += need;
  return q;
}

/* ---- read-ahead ------------------------------------------------------------- */
/* A client that reads a volume from start to end (a backup, a copy, a
 * guest reading a large file) waits, for each request, for the disk and
 * then for the wire.  After RA_AFTER reads in a row that each began where
 * the one before ended, with the same length, the connection reads ahead
 * of the client: RA_FIRST requests' worth at first and one more for each
 * taken, up to read-ahead bytes (at most RA_MAX reads in all), so that a
 * short stream wastes little.
 *
 * Each read ahead is a block of RA_BLOCK (rounded down to the client's
 * requests), or of RA_BLOCK_SHALLOW for a client that keeps about one
 * read in flight, unless its requests are longer than half of that: then
 * it is one request long; and no longer than the stream's window, so a
 * young stream reads ahead 4 requests' worth, then more.  A request that
 * asks for the start of what a stream read ahead and has not given out
 * takes it: all of a read as long as itself (its buffer), or its part of
 * a longer one (copied), answered at once if the data is in, or as soon
 * as it is (if that read failed, the request is read again for itself).
 * So the disk sees one read for up to
 * 128 of the client's, and a client at QD1 gets its data from memory:
 * sequential reads at QD1 of 4 KiB went 3.7x as fast as when read ahead
 * request by request, of 16 KiB 2.9x, 64 KiB 1.9x, 128 KiB 1.3x; 128 KiB
 * at QD8 1.06..1.14x (docs/BENCHMARKS.md, nineteenth pass; the seventeenth
 * and eighteenth have read-ahead against none).
 *
 * A connection follows up to RA_STREAMS streams at once (a guest reading
 * two files, or one file amid other reads; the disk is one connection).
 * A read that follows none starts a stream in place of the one read least
 * recently, of those not established (RA_AFTER reads in a row) if there
 * are any, so that random reads do not end a stream; the stream it
 * replaces drops what it read ahead.  A stream without reads for a second
 * drops what it read ahead too, and is no longer established.
 *
 * Multi-conn: the data read ahead must be what a read sent now would
 * return, after writes from any connection or loop.  A read starts ahead
 * only while no write, trim or write-zeroes near its range (in the same
 * 1 MiB regions) is in flight, and is taken from only if none has
 * started in its regions since (vol_write_mark); otherwise the request is
 * read afresh, what the stream read ahead is dropped, and its next reads
 * are not read ahead: 16 of them, twice as many after each drop in a row
 * (at most RA_BACKOFF_MAX), so that a stream written just ahead of the
 * reader all the time costs few wasted reads.  Writes elsewhere on the volume (a
 * guest copying a file, its journal) leave the stream alone. */
#define RA_MIN_LEN  4096
#define RA_MAX_LEN  (256 * 1024)
#define RA_BLOCK    (128 * 1024)
#define RA_BLOCK_SHALLOW (512 * 1024)   /* ...for a client with few reads in flight: */
#define RA_SHALLOW16 40                 /* depth16 up to about 2.5 */
#define RA_MAX      64
#define RA_AFTER    3
#define RA_FIRST    4           /* requests ahead at first; one more for each taken */
#define RA_BACKOFF_MIN 16
#define RA_BACKOFF_MAX 4096

/* A read done ahead waits for nothing: the loop does not count it in
 * flight, nor its connection busy for it (polling and batching go by what
 * is on the disk or the wire), until the request is taken or dropped. */
static void
ra_park (struct blk_conn *c, struct blk_req *q, bool ready)
{
  struct blk_loop *l = c->loop;
  q->ra_ready = ready;
  if (ready) {
    l->inflight--;
    l->inflight_bytes -= q->charged;
    if (c->inflight == ++c->ra_parked)
      l->busy_conns--;
  }
  else {
    l->inflight++;
    l->inflight_bytes += q->charged;
    if (c->inflight == c->ra_parked--)
      l->busy_conns++;
  }
}

/* A read ahead that no request takes more of, its read done: give it back
 * (counted in flight again first if it was parked, as conn_release expects). */
static void
ra_release (struct blk_conn *c, struct blk_req *q)
{
  if (q->ra_ready)
    ra_park (c, q, false);
  q->ra = RA_NONE;
  c->ra_reqs--;
  conn_release (c, q);
}

static void
ra_drop (struct blk_conn *c, struct ra_stream *st)
{
  while (st->head) {
    struct blk_req *q = st->head;
    st->head = q->next;
    q->next = NULL;
    if (q->ra_ready)
      ra_release (c, q);
    else
      q->ra = RA_DROPPED;       /* its waiters are answered when it is done */
  }
  st->tail = NULL;
  st->n = 0;
}

static void
ra_drop_all (struct blk_conn *c)
{
  for (struct ra_stream *st = c->ra; st < c->ra + RA_STREAMS; st++)
    ra_drop (c, st);
}

/* Reads started ahead in the streams' lists. */
static unsigned
ra_listed (const struct blk_conn *c)
{
  unsigned n = 0;
  for (const struct ra_stream *st = c->ra; st < c->ra + RA_STREAMS; st++)
    n += st->n;
  return n;
}

/* What st read ahead is not current: drop it, and do not read ahead of
 * its next wait reads. */
static void
ra_back_off (struct blk_conn *c, struct ra_stream *st)
{
  st->backoff = st->backoff == 0 ? RA_BACKOFF_MIN
                : st->backoff < RA_BACKOFF_MAX ? 2 * st->backoff : RA_BACKOFF_MAX;
  st->wait = st->backoff;
  st->window = RA_FIRST * (uint64_t) st->len;
  ra_drop (c, st);
}

/* p, a client's read within the range of q, a read ahead that is done,
 * gets its part of q's data. */
static void
ra_answer (struct blk_conn *c, struct blk_req *q, struct blk_req *p)
{
  if (q->io.result < 0) {
    if (c->state == CONN_DEAD)
      reply (c, p, q->io.result, 0, NULL);
    else
      execute (c, p);           /* the client's own read tells it how */
    return;
  }
  p->io.offset = p->r.offset;
  p->io.length = p->r.length;
  p->io.hole = q->io.hole;
  if (!q->io.hole)              /* a hole goes back as one: nothing to copy */
    memcpy (p->buf, (char *) q->buf + (p->r.offset - q->r.offset), p->r.length);
  reply (c, p, 0, 0, NULL);
}

/* The read of q, started ahead, is done.  Returns true if that is all
 * (false: q is a client's request to answer now). */
static bool
ra_read_done (struct blk_conn *c, struct blk_req *q)
{
  while (q->ra_waiters) {       /* current when they took their parts */
    struct blk_req *p = q->ra_waiters;
    q->ra_waiters = p->next;
    p->next = NULL;
    ra_answer (c, q, p);
  }
  switch (q->ra) {
  case RA_AHEAD:
    ra_park (c, q, true);
    return true;
  case RA_DROPPED:
    ra_release (c, q);
    return true;
  default:                      /* RA_CLAIMED: current when claimed */
    q->ra = RA_NONE;
    if (q->io.result == 0 || c->state == CONN_DEAD)
      return false;
    execute (c, q);             /* failed: the client's own read tells it how */
    return true;
  }
}

/* Take the first read of st's list out of it. */
static struct blk_req *
ra_pop (struct ra_stream *st)
{
  struct blk_req *q = st->head;
  if ((st->head = q->next) == NULL)
    st->tail = NULL;
  q->next = NULL;
  st->n--;
  return q;
}

/* Does read r ask for the start of what a stream read ahead and has not
 * given out, and is its data current?  Then r is answered from it, now or
 * when its read is done, and the stream is returned.  A write that began
 * after that read did (and so any write the client saw acknowledged before
 * it sent r) makes it stale; a write that begins later is concurrent with
 * r, which may return either data. */
static struct ra_stream *
ra_claim (struct blk_conn *c, const struct nbd_request *r)
{
  struct ra_stream *st = c->ra;
  struct blk_req *q = NULL;
  for (; st < c->ra + RA_STREAMS; st++) {
    q = st->head;
    if (q && r->length && q->r.offset + q->ra_taken == r->offset
        && r->length <= q->r.length - q->ra_taken)
      break;
  }
  if (st == c->ra + RA_STREAMS)
    return NULL;
  if (vol_written_since (c->vol, q->r.offset, q->r.length, q->ra_mark)) {   /* the mark's range */
    ra_back_off (c, st);
    return NULL;
  }
  struct blk_req *p = NULL;     /* r's own request, if r takes a part of q */
  if (r->length < q->r.length && (p = req_get (c, r)) == NULL)
    return NULL;
  if (q->ra_taken == 0)
    c->ra_used++;
  q->ra_taken += r->length;
  c->ra_taken += r->length;
  st->backoff = 0;
  if (st->window < blk_cfg.read_ahead)      /* one more ahead for each taken */
    st->window += r->length;
  if (p == NULL) {              /* all of q: it becomes r's request */
    ra_pop (st);
    c->ra_reqs--;
    q->r = *r;
    q->t0 = c->loop->turn_ns;
    q->t_store = q->ra_ready ? 0 : q->t0;   /* until its read is done */
    q->ra = RA_CLAIMED;
    if (q->ra_ready) {          /* answered now, else when its read is done */
      ra_park (c, q, false);
      req_done (c, q);
    }
    return st;
  }
  bool last = q->ra_taken == q->r.length;
  if (last) {
    ra_pop (st);
    q->ra = RA_DROPPED;         /* released when its read is done, or now */
  }
  if (q->ra_ready) {
    ra_answer (c, q, p);
    if (last)
      ra_release (c, q);
    return st;
  }
  struct blk_req **w = &q->ra_waiters;
  while (*w)
    w = &(*w)->next;
  *w = p;
  store_since (c, p);
  return st;
}

static bool
ra_start (struct blk_conn *c, struct ra_stream *st, uint64_t offset, uint32_t len, uint64_t mark)
{
  struct blk_req *q = req_get (c, &(struct nbd_request) { .type = NBD_CMD_READ,
                                                          .offset = offset, .length = len });
  if (q == NULL)
    return false;
  q->ra = RA_AHEAD;
  q->ra_mark = mark;
  if (st->tail)
    st->tail->next = q;
  else
    st->head = q;
  st->tail = q;
  st->n++;
  c->ra_reqs++;
  c->ra_started++;
  c->ra_bytes += len;
  execute (c, q);
  return true;
}

/* A stream that has read RA_AFTER in a row (and not stopped for a second)
 * is kept while others can be replaced: random reads take turns in the
 * other places, and its back-off is not lost while it waits. */
static bool
ra_established (const struct ra_stream *st)
{
  return st->run >= RA_AFTER;
}

/* The stream read r follows, or a new one in place of the one read least
 * recently (of those not established, if any). */
static struct ra_stream *
ra_stream_of (struct blk_conn *c, const struct nbd_request *r)
{
  struct ra_stream *st, *old = NULL;
  for (st = c->ra; st < c->ra + RA_STREAMS; st++) {
    if (st->len && r->offset == st->next && r->length == st->len) {
      st->run++;
      return st;
    }
    if (old == NULL || (ra_established (old) && !ra_established (st))
        || (ra_established (old) == ra_established (st) && st->last_read < old->last_read))
      old = st;
  }
  ra_drop (c, old);
  *old = (struct ra_stream) { .window = RA_FIRST * (uint64_t) r->length };
  return old;
}

/* The length of each read ahead of a stream of requests of len bytes:
 * a block's worth of the smaller ones, within read-ahead bytes. */
static uint32_t
ra_read_len (const struct blk_conn *c, uint32_t len)
{
  uint64_t block = c->depth16 <= RA_SHALLOW16 ? RA_BLOCK_SHALLOW : RA_BLOCK;
  uint64_t n = 2 * len > block ? len : block / len * len;
  if (n > blk_cfg.read_ahead)
    n = blk_cfg.read_ahead / len * len;
  return (uint32_t) n;
}

/* Read r has been taken (from what stream st read ahead, or st is NULL):
 * follow its stream, and read ahead of it once the replies of this round
 * are on their way (ra_fill). */
static void
ra_follow (struct blk_conn *c, const struct nbd_request *r, struct ra_stream *st)
{
  if (st)
    st->run++;
  else
    st = ra_stream_of (c, r);
  st->next = r->offset + r->length;
  st->len = r->length;
  st->last_read = ++c->reads;
  if (st->head && st->head->r.offset + st->head->ra_taken != st->next)
    ra_drop (c, st);            /* the client went past it (its lengths changed) */
  if (st->run < RA_AFTER || r->length < RA_MIN_LEN || r->length > RA_MAX_LEN
      || r->length > blk_cfg.read_ahead)
    return;
  if (st->wait) {
    st->wait--;
    return;
  }
  st->due = true;
  blk_loop_mark_dirty (c->loop, c);
}

/* Read ahead of stream st up to its window, in reads as long as the
 * window while it is shorter than a block.  Called when the connection's
 * replies have been handed to the kernel (or wait for a send in flight):
 * a disk read submitted before them made them wait for its notification,
 * a VM exit (64 KiB reads at QD1 in blocks of 128 KiB, one run each:
 * 11.0k IOPS, p50 70 us, against 12.4..13.6k, 47..58 us;
 * docs/BENCHMARKS.md, nineteenth pass). */
static void
ra_fill (struct blk_conn *c, struct ra_stream *st)
{
  st->due = false;
  if (st->wait)                 /* it backed off since it was due */
    return;
  uint32_t len = ra_read_len (c, st->len);
  uint64_t want = st->window < blk_cfg.read_ahead ? st->window : blk_cfg.read_ahead;
  if (len > want)               /* a young stream: no more than its window */
    len = (uint32_t) (want > st->len ? want / st->len * st->len : st->len);
  uint64_t front = st->tail ? st->tail->r.offset + st->tail->r.length : st->next;
  uint64_t size = vol_size (c->vol);
  while (len && front - st->next < want && ra_listed (c) < RA_MAX && front < size
         && c->state == CONN_TRANSMISSION && !c->eof && !atomic_load (&c->kicked)
         && c->inflight < (unsigned) blk_cfg.max_inflight
         && c->inflight_bytes + len <= MAX_CONN_BYTES) {
    if (len > size - front && (len = (uint32_t) ((size - front) / st->len * st->len)) == 0)
      break;                    /* the volume ends: as much of it as the client's reads cover */
    uint64_t mark = vol_write_mark (c->vol, front, len);
    if (mark == 0 || !ra_start (c, st, front, len, mark))
      break;
    front += len;
  }
}

/* Read ahead of the streams due (a look at four flags on each flush). */
static void
ra_fill_due (struct blk_conn *c)
{
  for (struct ra_stream *st = c->ra; st < c->ra + RA_STREAMS; st++)
    if (st->due)
      ra_fill (c, st);
}

static bool
enter_transmission (struct blk_conn *c)
{
  c->vol = vol_open (blk_store, c->hs.export_name, &c->vs);
  if (c->vol == NULL) {
    conn_fail (c, "volume \"%s\" was deleted during the handshake", c->hs.export_name);
    return false;
  }
  nbd_session_from_handshake (&c->sess, &c->hs);
  c->state = CONN_TRANSMISSION;
  log_debug ("connection %s: serving volume %s (%s replies)", c->peer, c->hs.export_name,
             c->sess.structured ? "structured" : "simple");
  return true;
}

static void
consume (struct blk_conn *c, size_t n)
{
  c->rpos += n;
  c->rlen -= n;
}

static void
process_handshake (struct blk_conn *c)
{
  if (c->hsout_sending)
    return;   /* replies are being sent from hsout: it must not move */
  ssize_t n = nbd_hs_input (&c->hs, c->rbuf + c->rpos, c->rlen, &c->hsout);
  if (n < 0) {
    if (c->hsout.len)
      blk_loop_mark_dirty (c->loop, c);
    conn_fail (c, "handshake: %s", c->hs.error[0] ? c->hs.error : strerror ((int) -n));
    return;
  }
  consume (c, (size_t) n);
  if (c->hsout.len)
    blk_loop_mark_dirty (c->loop, c);
  switch (c->hs.state) {
  case NBD_HS_TRANSMISSION:
    enter_transmission (c);
    break;
  case NBD_HS_CLOSED:
    drain (c, c->hs.error[0] ? c->hs.error : "client ended the handshake");
    break;
  case NBD_HS_DEAD:
    conn_fail (c, "handshake: %s", c->hs.error);
    break;
  default:
    break;
  }
}

/* Requests the client has in flight: not those read ahead of it. */
static unsigned
client_inflight (const struct blk_conn *c)
{
  return c->inflight - c->ra_reqs;
}

/* A request has come (and is counted in flight): average the depth. */
static void
note_depth (struct blk_conn *c)
{
  c->depth16 = c->depth16 - (c->depth16 + 4) / 8 + 2 * client_inflight (c);
}

/* Returns false when reading must pause (a limit, or an incomplete message). */
static bool
process_one (struct blk_conn *c)
{
  if (c->discard_left) {
    size_t n = c->rlen < c->discard_left ? c->rlen : c->discard_left;
    consume (c, n);
    c->discard_left -= n;
    return c->discard_left == 0;
  }
  if (c->payload_req) {
    struct blk_req *q = c->payload_req;
    size_t want = q->r.length - q->payload_got;
    size_t n = c->rlen < want ? c->rlen : want;
    memcpy ((char *) q->buf + q->payload_got, c->rbuf + c->rpos, n);
    q->payload_got += (uint32_t) n;
    consume (c, n);
    return payload_arrived (c, q);
  }
  if (c->rlen < NBD_REQUEST_LEN)
    return false;
  struct nbd_request r;
  if (nbd_request_decode (c->rbuf + c->rpos, &r) < 0) {
    conn_fail (c, "request with a bad magic number: the stream is out of sync");
    return false;
  }
  size_t need = (r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) ? r.length : 0;
  unsigned inflight = client_inflight (c);
  if (inflight >= (unsigned) blk_cfg.max_inflight
      || (inflight && c->inflight_bytes + need > MAX_CONN_BYTES))
    return false;               /* resumes when a reply has been sent */
  consume (c, NBD_REQUEST_LEN);
  if (r.type == NBD_CMD_DISC) {
    drain (c, "client sent NBD_CMD_DISC");
    return false;
  }
  const char *why = NULL;
  int v = nbd_request_validate (&c->sess, &r, &why);
  if (v < 0) {
    conn_fail (c, "%s %u bytes: %s", nbd_cmd_name (r.type), r.length, why ? why : "refused");
    return false;
  }
  if (v > 0) {
    c->discard_left = nbd_request_payload (&r);
    r.length = r.type == NBD_CMD_READ ? 0 : r.length;   /* no data with the error */
    struct blk_req *q = req_get (c, &(struct nbd_request) { .type = r.type, .cookie = r.cookie,
                                                            .offset = r.offset, .flags = r.flags });
    if (q == NULL) {
      conn_fail (c, "out of memory");
      return false;
    }
    log_debug ("connection %s: %s refused: %s", c->peer, nbd_cmd_name (r.type), why);
    reply (c, q, 0, (uint32_t) v, why);
    return true;
  }
  struct ra_stream *st;
  if (r.type == NBD_CMD_READ && (st = ra_claim (c, &r)) != NULL) {
    note_depth (c);
    ra_follow (c, &r, st);
    return true;
  }
  struct blk_req *q = req_get (c, &r);
  if (q == NULL) {
    /* No memory for this request: refuse it, keep the connection. */
    c->discard_left = nbd_request_payload (&r);
    struct blk_req *e = req_get (c, &(struct nbd_request) { .type = NBD_CMD_FLUSH,
                                                            .cookie = r.cookie });
    if (e == NULL) {
      conn_fail (c, "out of memory");
      return false;
    }
    e->r.type = r.type;
    reply (c, e, -ENOMEM, 0, NULL);
    return true;
  }
  c->big_writes = r.type == NBD_CMD_WRITE && r.length >= DIRECT_MIN;
  note_depth (c);
  if (c->depth16 <= PIECE_MAX_DEPTH16 && (q->piece_len = piece_len_for (c, &r)) != 0) {
    if (q->pieces == NULL && (q->pieces = calloc (MAX_PIECES - 1, sizeof *q->pieces)) == NULL)
      q->piece_len = 0;             /* whole */
    if (r.type == NBD_CMD_READ && q->chunks == NULL
        && (q->chunks = calloc (MAX_PIECES, sizeof *q->chunks)) == NULL)
      q->piece_len = 0;
  }
  if (r.type == NBD_CMD_WRITE && r.length) {
    c->payload_req = q;
    return true;                 /* the payload is taken on the next round */
  }
  if (q->piece_len)
    start_pieces (c, q);
  else
    execute (c, q);
  if (r.type == NBD_CMD_READ)
    ra_follow (c, &r, NULL);
  return true;
}

static void
process_input (struct blk_conn *c)
{
  if (c->state == CONN_HANDSHAKE)
    process_handshake (c);
  while (c->state == CONN_TRANSMISSION && process_one (c))
    ;
  /* After end of stream, what was received is still served (requests
   * beyond max-inflight wait in rbuf); the connection drains when nothing
   * more can be read from rbuf. */
  if (c->eof && c->state == CONN_TRANSMISSION) {
    if (c->payload_req || c->discard_left) {
      if (c->rlen == 0)
        conn_fail (c, "client went away in the middle of a request");
    }
    else if (c->rlen < NBD_REQUEST_LEN)
      drain (c, atomic_load (&c->kicked) ? "volume deleted" : "end of stream");
  }
}

/* The receive of a payload's last bytes is followed, in the kernel, by the
 * receive of the next request's header, linked to it: when the payload
 * completes, the header (if the client has sent it) completes with it, and
 * the loop's turn that writes this payload also receives the next one's,
 * instead of a turn for the payload and one more for the header.  A short
 * payload receive breaks the link, and the header's is cancelled.  The
 * kernel posts the payload's completion before it starts the header's
 * receive, and the loop reaps in ring order, so recv_done sees the
 * payload's first (or the cancel in either order). */
static void
link_next_header (struct blk_conn *c, struct io_uring_sqe *payload)
{
  if (c->state != CONN_TRANSMISSION || io_uring_sq_space_left (&c->loop->ring) == 0)
    return;
  struct io_uring_sqe *sqe = io_uring_get_sqe (&c->loop->ring);
  payload->flags |= IOSQE_IO_LINK;
  c->rpos = 0;                    /* rlen is 0: nothing is moved */
  io_uring_prep_recv (sqe, c->fd, c->rbuf, NBD_REQUEST_LEN, 0);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) c | TAG_RECV_NEXT);
  c->recv_next = true;
}

static void
arm_recv (struct blk_conn *c)
{
  if (c->recv_armed || c->recv_next
      || (c->state != CONN_HANDSHAKE && c->state != CONN_TRANSMISSION))
    return;
  if (atomic_load (&c->kicked)) {
    drain (c, "volume deleted");
    return;
  }
  if (c->eof)
    return;
  struct io_uring_sqe *sqe = io_uring_get_sqe (&c->loop->ring);
  if (sqe == NULL) {
    io_uring_submit (&c->loop->ring);
    sqe = io_uring_get_sqe (&c->loop->ring);
    if (sqe == NULL) {
      conn_fail (c, "no io_uring submission slot");
      return;
    }
  }
  struct blk_req *q = c->payload_req;
  if (q && c->rlen == 0 && q->r.length - q->payload_got >= DIRECT_MIN) {
    /* the payload straight into the request buffer, in one completion, or
     * one per piece */
    uint32_t want = q->r.length - q->payload_got;
    if (q->piece_len && q->piece_len - q->payload_got % q->piece_len < want)
      want = q->piece_len - q->payload_got % q->piece_len;
    io_uring_prep_recv (sqe, c->fd, (char *) q->buf + q->payload_got, want, MSG_WAITALL);
    c->recv_direct = true;
    if (want == q->r.length - q->payload_got)
      link_next_header (c, sqe);
  }
  else {
    if (c->rpos) {
      memmove (c->rbuf, c->rbuf + c->rpos, c->rlen);
      c->rpos = 0;
    }
    if (c->rlen == RBUF_SIZE) {
      /* Full of requests waiting for a limit: the last reply sent resumes.
       * The SQE taken above becomes a no-op. */
      io_uring_prep_nop (sqe);
      io_uring_sqe_set_data64 (sqe, 0);
      return;
    }
    size_t room = RBUF_SIZE - c->rlen;
    /* After a large write the next request is likely one too: read only
     * its header, so that its payload goes straight into its buffer
     * rather than through rbuf and a copy (seqwrite-128k: memmove was ~5%
     * of blockd's CPU).  Small requests are read many at a time. */
    if (c->big_writes && q == NULL && c->discard_left == 0 && c->rlen < NBD_REQUEST_LEN
        && c->state == CONN_TRANSMISSION)
      room = NBD_REQUEST_LEN - c->rlen;
    io_uring_prep_recv (sqe, c->fd, c->rbuf + c->rlen, room, 0);
    c->recv_direct = false;
  }
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) c | TAG_RECV);
  c->recv_armed = true;
}

void
blk_conn_recv_done (struct blk_conn *c, int res, bool next)
{
  bool direct = !next && c->recv_direct;
  if (next) {
    c->recv_next = false;
    if (res == -ECANCELED) {      /* the link failed: the payload came short */
      arm_recv (c);               /* the rest of it, unless the connection is closing */
      if (c->state != CONN_TRANSMISSION)
        drop_payload (c);
      maybe_free (c);
      return;
    }
    if (c->recv_armed) {
      /* The header's receive ran before the payload's was over: only if
       * the kernel submitted the two apart (no memory for a request).  The
       * stream is out of order; the write was not acknowledged. */
      conn_fail (c, "receive: a linked receive completed out of order");
      maybe_free (c);
      return;
    }
  }
  else
    c->recv_armed = false;
  if (c->state == CONN_DEAD) {
    drop_payload (c);
    maybe_free (c);
    return;
  }
  if (res <= 0) {
    if (res == 0 || res == -ECONNRESET || c->state == CONN_DRAINING) {
      if (c->state == CONN_HANDSHAKE)
        conn_fail (c, "client went away during the handshake");
      else if (c->state == CONN_TRANSMISSION && c->rlen) {
        c->eof = true;           /* requests still in rbuf: serve them first */
        process_input (c);
      }
      else if (c->state == CONN_DRAINING) {
        /* We stopped reading (shutdown, volume deleted): the rest of a
         * write's payload never comes; the requests read are answered. */
        c->discard_left = 0;
        drop_payload (c);
      }
      else if (c->payload_req || c->discard_left)
        conn_fail (c, "client went away in the middle of a request");
      else
        drain (c, atomic_load (&c->kicked) ? "volume deleted" : "end of stream");
    }
    else
      conn_fail (c, "receive: %s", strerror (-res));
    maybe_free (c);
    return;
  }
  if (direct) {
    struct blk_req *q = c->payload_req;
    q->payload_got += (uint32_t) res;
    /* draining, a write whose payload is whole is still written */
    if (c->state == CONN_TRANSMISSION || q->payload_got == q->r.length)
      payload_arrived (c, q);
  }
  else
    c->rlen += (size_t) res;
  process_input (c);
  arm_recv (c);
  if (c->state == CONN_DRAINING)
    drop_payload (c);             /* nothing more is read */
  maybe_free (c);
}

/* ---- sending ----------------------------------------------------------------- */
/* The sendmsg of what flush took is over: sent, or never will be. */
static void
sending_over (struct blk_conn *c)
{
  if (c->hsout_sending) {
    nbd_buf_consume (&c->hsout, c->hsout_sending);
    c->hsout_sending = 0;
  }
  while (c->sending) {
    struct blk_send *s = c->sending;
    c->sending = s->next;
    send_finished (c, s);
  }
}

static void
submit_send (struct blk_conn *c)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&c->loop->ring);
  if (sqe == NULL) {
    io_uring_submit (&c->loop->ring);
    sqe = io_uring_get_sqe (&c->loop->ring);
  }
  if (sqe == NULL) {
    conn_fail (c, "no io_uring submission slot");
    sending_over (c);
    return;
  }
  memset (&c->msg, 0, sizeof c->msg);
  c->msg.msg_iov = &c->iov[c->iov_first];
  c->msg.msg_iovlen = c->niov - c->iov_first;
  io_uring_prep_sendmsg (sqe, c->fd, &c->msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data64 (sqe, (uint64_t) (uintptr_t) c | TAG_SEND);
  c->send_armed = true;
}

void
blk_conn_flush (struct blk_conn *c)
{
  if (c->state == CONN_DEAD)
    drop_sendq (c);
  if (c->send_armed || c->state == CONN_DEAD) {
    ra_fill_due (c);
    maybe_free (c);
    return;
  }
  c->niov = c->iov_first = 0;
  if (c->hsout.len) {
    c->hsout_sending = c->hsout.len;
    c->iov[0] = (struct iovec) { c->hsout.data, c->hsout.len };
    c->niov = 1;
  }
  else {
    struct blk_send **tail = &c->sending;
    while (c->sendq_head && c->niov + 3 <= IOV_BATCH) {
      struct blk_send *s = c->sendq_head;
      struct blk_req *q = s->req;
      c->sendq_head = s->next;
      s->next = NULL;
      *tail = s;
      tail = &s->next;
      if (s != &q->out) {
        struct blk_chunk *ch = (struct blk_chunk *) s;
        c->iov[c->niov++] = (struct iovec) { ch->hdr, ch->hdrlen };
        if (ch->len)
          c->iov[c->niov++] = (struct iovec) { (char *) q->buf + ch->off, ch->len };
        continue;
      }
      c->iov[c->niov++] = (struct iovec) { q->hdr, q->hdrlen };
      if (q->datalen)
        c->iov[c->niov++] = (struct iovec) { (char *) q->buf + q->dataoff, q->datalen };
      if (q->extralen)
        c->iov[c->niov++] = (struct iovec) { q->extra, q->extralen };
    }
    if (c->sendq_head == NULL)
      c->sendq_tail = NULL;
  }
  if (c->niov)
    submit_send (c);
  ra_fill_due (c);
  maybe_free (c);
}

void
blk_conn_send_done (struct blk_conn *c, int res)
{
  c->send_armed = false;
  if (res < 0 && c->state != CONN_DEAD)
    conn_fail (c, "send: %s", strerror (-res));
  if (c->state != CONN_DEAD) {
    size_t left = (size_t) res;
    while (c->iov_first < c->niov && left >= c->iov[c->iov_first].iov_len)
      left -= c->iov[c->iov_first++].iov_len;
    if (c->iov_first < c->niov) {      /* partial send: the rest, in order */
      c->iov[c->iov_first].iov_base = (char *) c->iov[c->iov_first].iov_base + left;
      c->iov[c->iov_first].iov_len -= left;
      submit_send (c);
      maybe_free (c);
      return;
    }
  }
  sending_over (c);
  if (c->state == CONN_DEAD) {
    drop_sendq (c);
    maybe_free (c);
    return;
  }
  /* input may have waited for these replies (handshake order, limits) */
  if (c->rlen)
    process_input (c);
  if (c->sendq_head || c->hsout.len)
    blk_loop_mark_dirty (c->loop, c);
  arm_recv (c);
  maybe_free (c);
}
