/* nbd/nbd.h — the NBD wire protocol as pure functions over bytes.
 *
 * Nothing in nbd/ touches a socket, a file or a volume: the handshake is a
 * state machine fed with the bytes a client sent, which appends the bytes to
 * send back to a caller-owned buffer; transmission requests are decoded and
 * validated from their 28-byte header, and replies are encoded into caller
 * buffers.  The daemon (blockd/) owns the sockets and the volumes.
 *
 * Reference: the NBD project's doc/proto.md (fixed newstyle negotiation,
 * structured replies, base:allocation).
 */
#ifndef BLOCKD_NBD_H
#define BLOCKD_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- constants from the protocol ---------------------------------------- */
#define NBD_MAGIC            0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_OPT_MAGIC        0x49484156454f5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC        0x0003e889045565a9ULL
#define NBD_REQUEST_MAGIC    0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES      (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE NBD_FLAG_FIXED_NEWSTYLE
#define NBD_FLAG_C_NO_ZEROES      NBD_FLAG_NO_ZEROES

/* options */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_PEEK_EXPORT       4
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

/* option replies */
#define NBD_REP_ACK              1
#define NBD_REP_SERVER           2
#define NBD_REP_INFO             3
#define NBD_REP_META_CONTEXT     4
#define NBD_REP_FLAG_ERROR       (1u << 31)
#define NBD_REP_ERR_UNSUP        (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY       (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID      (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM     (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD     (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN      (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN     (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG      (NBD_REP_FLAG_ERROR | 9)

/* NBD_REP_INFO types */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_RESIZE      (1u << 9)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

/* commands and command flags */
#define NBD_CMD_READ          0
#define NBD_CMD_WRITE         1
#define NBD_CMD_DISC          2
#define NBD_CMD_FLUSH         3
#define NBD_CMD_TRIM          4
#define NBD_CMD_CACHE         5
#define NBD_CMD_WRITE_ZEROES  6
#define NBD_CMD_BLOCK_STATUS  7
#define NBD_CMD_RESIZE        8

#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* structured reply chunks */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* base:allocation status bits */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* error values on the wire */
#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* sizes of fixed wire structures */
#define NBD_GREETING_LEN      18   /* NBDMAGIC, IHAVEOPT, u16 handshake flags */
#define NBD_OPTION_HDR_LEN    16   /* IHAVEOPT, u32 option, u32 length */
#define NBD_OPTION_REPLY_LEN  20   /* magic, u32 option, u32 type, u32 length */
#define NBD_REQUEST_LEN       28
#define NBD_SIMPLE_REPLY_LEN  16
#define NBD_CHUNK_HDR_LEN     20
#define NBD_READ_CHUNK_HDR_LEN 28  /* chunk header + u64 offset */
#define NBD_HOLE_CHUNK_LEN     32  /* chunk header + u64 offset + u32 hole size */

/* limits this server applies */
#define NBD_MAX_STRING        4096      /* export names, queries, messages */
#define NBD_MAX_OPTION_LEN    (64u * 1024) /* longer options are discarded and refused */
#define NBD_MAX_PAYLOAD       (32u * 1024 * 1024)
#define NBD_META_BASE_ALLOCATION_ID 1   /* our context id for base:allocation */

/* ---- growable output buffer ---------------------------------------------- */
/* Owned by the caller; nbd_* functions append to it.  data is malloc'd. */
struct nbd_buf {
  uint8_t *data;
  size_t len, cap;
};
void nbd_buf_free (struct nbd_buf *b);
/* Make room for n more bytes.  Returns 0 or -ENOMEM. */
int nbd_buf_reserve (struct nbd_buf *b, size_t n);
/* Drop the first n bytes (after they were sent). */
void nbd_buf_consume (struct nbd_buf *b, size_t n);
/* Append n bytes from p.  Returns 0 or -ENOMEM (b unchanged then). */
int nbd_buf_append (struct nbd_buf *b, const void *p, size_t n);

/* ---- big-endian helpers --------------------------------------------------- */
static inline void nbd_put16 (uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void nbd_put32 (uint8_t *p, uint32_t v)
{ p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static inline void nbd_put64 (uint8_t *p, uint64_t v)
{ nbd_put32 (p, v >> 32); nbd_put32 (p + 4, (uint32_t) v); }
static inline uint16_t nbd_get16 (const uint8_t *p) { return (uint16_t) (p[0] << 8 | p[1]); }
static inline uint32_t nbd_get32 (const uint8_t *p)
{ return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3]; }
static inline uint64_t nbd_get64 (const uint8_t *p)
{ return (uint64_t) nbd_get32 (p) << 32 | nbd_get32 (p + 4); }

/* ---- exports as the handshake sees them ----------------------------------- */
struct nbd_export_info {
  uint64_t size;
  uint16_t tflags;          /* NBD_FLAG_* transmission flags; HAS_FLAGS is added */
  uint32_t min_block;       /* block size constraints advertised with NBD_INFO_BLOCK_SIZE */
  uint32_t pref_block;
  uint32_t max_block;
  char description[256];    /* optional, "" for none */
};

/* Callbacks into the daemon.  Both run synchronously inside nbd_hs_input. */
struct nbd_server_ops {
  /* Look up export NAME (NUL-terminated, may be "" for the default export).
   * Return 0 and fill *info, or -ENOENT for an unknown export, or another
   * -errno; in the error case write a message a person can act on into msg. */
  int (*lookup) (void *opaque, const char *name, struct nbd_export_info *info,
                 char *msg, size_t msglen);
  /* For NBD_OPT_LIST: call emit once per export.  Return 0 or -errno. */
  int (*list) (void *opaque,
               void (*emit) (void *ctx, const char *name, const char *description),
               void *ctx);
};

/* Handshake states.  DEAD requires hs->error to say why. */
enum nbd_hs_state {
  NBD_HS_CLIENT_FLAGS,     /* greeting sent, waiting for the client's 32-bit flags */
  NBD_HS_OPTIONS,          /* option haggling */
  NBD_HS_TRANSMISSION,     /* GO or EXPORT_NAME succeeded: hs->export_name, hs->info valid */
  NBD_HS_CLOSED,           /* client sent NBD_OPT_ABORT (acked) or was refused; close after sending out */
  NBD_HS_DEAD,             /* protocol violation: close now, hs->error says why */
};

struct nbd_handshake {
  enum nbd_hs_state state;
  const struct nbd_server_ops *ops;
  void *opaque;
  uint32_t client_flags;
  bool no_zeroes;               /* client set NBD_FLAG_C_NO_ZEROES */
  bool structured;              /* NBD_OPT_STRUCTURED_REPLY acked */
  bool meta_base_allocation;    /* base:allocation selected by the last SET_META_CONTEXT */
  char *meta_export;            /* export name the meta context was selected for (malloc'd) */
  uint64_t discard;             /* bytes of an over-long option still to be skipped */
  uint32_t discard_option;      /* the option being skipped, for the TOO_BIG reply */
  char *export_name;            /* chosen export (malloc'd), valid in TRANSMISSION */
  struct nbd_export_info info;  /* of the chosen export */
  char error[256];              /* why the state is DEAD or CLOSED */
};

void nbd_hs_init (struct nbd_handshake *hs, const struct nbd_server_ops *ops, void *opaque);
void nbd_hs_free (struct nbd_handshake *hs);
/* Append the server greeting (NBD_GREETING_LEN bytes) to out.  Returns 0 or -ENOMEM. */
int nbd_hs_greeting (struct nbd_handshake *hs, struct nbd_buf *out);
/* Feed bytes the client sent.  Consumes only whole messages (or bytes of an
 * option being discarded) and appends every reply to out.  Returns the
 * number of bytes consumed (the caller keeps the rest and calls again when
 * more arrive), or -EPROTO with state DEAD on a protocol violation, or
 * -ENOMEM.  Stops consuming as soon as the state leaves NBD_HS_OPTIONS: the
 * bytes after a successful GO belong to the transmission phase. */
ssize_t nbd_hs_input (struct nbd_handshake *hs, const uint8_t *in, size_t len,
                      struct nbd_buf *out);

/* ---- transmission phase --------------------------------------------------- */
struct nbd_request {
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t length;
};

/* What the negotiated connection allows, for request validation. */
struct nbd_session {
  uint64_t size;
  uint16_t tflags;
  bool structured;
  bool meta_base_allocation;
  uint32_t max_payload;      /* NBD_MAX_PAYLOAD */
};
void nbd_session_from_handshake (struct nbd_session *s, const struct nbd_handshake *hs);

/* Decode a request header.  Returns 0, or -EPROTO if the magic is wrong
 * (the stream cannot be trusted any more). */
int nbd_request_decode (const uint8_t hdr[NBD_REQUEST_LEN], struct nbd_request *req);

/* Bytes of payload that follow this header on the stream (WRITE only),
 * whether or not the request is valid: the caller must consume them. */
static inline uint32_t nbd_request_payload (const struct nbd_request *r)
{ return r->type == NBD_CMD_WRITE ? r->length : 0; }

/* Validate a decoded request against the session.
 * Returns 0 if it may be executed; a positive NBD_E* error to reply with
 * (the connection goes on), with *why set to a short static message; or
 * -EPROTO if the connection must be dropped (a WRITE payload over
 * NBD_MAX_PAYLOAD that we refuse to buffer). */
int nbd_request_validate (const struct nbd_session *s, const struct nbd_request *r,
                          const char **why);

/* Map a positive errno to the NBD error value sent on the wire. */
uint32_t nbd_errno_to_wire (int err);
const char *nbd_cmd_name (uint16_t type);
const char *nbd_opt_name (uint32_t opt);

/* ---- reply encoders: each writes into out and returns bytes written ------- */
size_t nbd_encode_simple_reply (uint8_t out[NBD_SIMPLE_REPLY_LEN], uint64_t cookie, uint32_t error);
size_t nbd_encode_chunk_header (uint8_t out[NBD_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
                                uint64_t cookie, uint32_t length);
/* OFFSET_DATA chunk header; datalen bytes of data follow it. */
size_t nbd_encode_read_chunk (uint8_t out[NBD_READ_CHUNK_HDR_LEN], uint64_t cookie, uint64_t offset,
                              uint32_t datalen, bool done);
/* OFFSET_HOLE chunk (32 bytes). */
size_t nbd_encode_hole_chunk (uint8_t out[NBD_HOLE_CHUNK_LEN], uint64_t cookie, uint64_t offset,
                              uint32_t len, bool done);
/* ERROR chunk with DONE set and an optional message (truncated to fit cap).
 * cap must be at least NBD_CHUNK_HDR_LEN + 6. */
size_t nbd_encode_error_chunk (uint8_t *out, size_t cap, uint64_t cookie, uint32_t error,
                               const char *msg);
/* BLOCK_STATUS chunk header + context id (24 bytes); ndesc descriptors of
 * 8 bytes each (nbd_encode_extent) must follow. */
size_t nbd_encode_block_status (uint8_t out[24], uint64_t cookie, uint32_t context_id,
                                uint32_t ndesc, bool done);
size_t nbd_encode_extent (uint8_t out[8], uint32_t length, uint32_t flags);

/* Length of the longest prefix of s[0..len) that is at most max bytes and
 * does not end inside a UTF-8 sequence (for truncating messages). */
size_t nbd_utf8_clip (const char *s, size_t len, size_t max);

#endif
