/* tests/fuzz/harness.h — the real daemon inside a libFuzzer process.
 *
 * Like nbdkit's server/fuzzer.c: each input is played by a fake peer over
 * a socketpair() whose other end the daemon's own event loop serves
 * (blk_loop_adopt), so the fuzzer reaches the handshake state machine,
 * request validation, the volume data path and the reply encoders exactly
 * as a network client would.  fuzz-api talks HTTP to the real API over
 * loopback TCP.
 *
 * Every failure the harness detects (a hang, a connection that is never
 * released, a malformed reply) ends in abort(), which libFuzzer reports as
 * a crash and saves the input for.
 */
#ifndef BLOCKD_FUZZ_HARNESS_H
#define BLOCKD_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_VOLUME       "disk"
#define FZ_VOLUME_SIZE  (16u << 20)
#define FZ_SNAPSHOT     "s1"            /* of FZ_VOLUME: "disk@s1", a read-only export */

enum {
  FZ_LOOPS = 1,   /* start the event loops (NBD targets) */
  FZ_API = 2,     /* start the HTTP API on a free loopback port */
};

/* Call first from LLVMFuzzerInitialize: libFuzzer flags the targets need
 * unless the command line says otherwise.  -detect_leaks=0: libFuzzer's
 * per-input leak check would report what the loop thread still holds for
 * I/O in flight in the kernel (a chunk being punched after a trim) once
 * the input returns; ASan still checks for leaks at exit, after the harness
 * has stopped the daemon. */
void fz_default_flags (int *argc, char ***argv);

/* Set up the store (a temporary data directory), the volume "disk" and
 * what flags ask for.  Once per process; cleans up at exit.  max_inflight
 * 0 keeps the default. */
void fz_init (const char *target, unsigned flags, int max_inflight);
/* Every n-th call, replace snapshot FZ_SNAPSHOT with a new one, so that
 * writes keep meeting chunks shared with a snapshot (copy-on-write) and old
 * snapshots get collected.  Only with no NBD connection open. */
void fz_renew_snapshot (unsigned n);
/* The API's port (FZ_API). */
int fz_api_port (void);

/* Abort with a message: the fuzzer records the input as a crash. */
void fz_fail (const char *fmt, ...) __attribute__ ((noreturn, format (printf, 1, 2)));

/* A new NBD connection served by loop 0.  Returns our end, nonblocking. */
int fz_nbd_connect (void);

/* Called with every chunk of bytes the server sends. */
typedef void (*fz_sink) (void *opaque, const uint8_t *p, size_t n);

/* Send data while reading replies into sink, so that neither side blocks.
 * until_eof: then shut our write side and read until the server closes.
 * Otherwise return once everything is sent and done(opaque) is true (done
 * may be NULL: return when sent).  Aborts when nothing moves for 2 s. */
void fz_exchange (int fd, const uint8_t *data, size_t len, bool until_eof,
                  fz_sink sink, bool (*done) (void *opaque), void *opaque);

/* Close our end and wait until the daemon has released every connection
 * (blk_nconns == 0); aborts after 5 s. */
void fz_nbd_close (int fd);

/* ---- checking what the server sends ------------------------------------- */
/* A streaming parser of the server's side of an NBD connection.  It starts
 * at the greeting (or, with fz_replies_init_transmission, after a GO) and
 * aborts on anything the protocol does not allow: a bad magic, a reply
 * chunk with impossible flags, type or length, an error value outside the
 * spec's list.  Option replies are followed until the ACK of NBD_OPT_GO;
 * transmission replies are framed only when structured replies were
 * negotiated (simple replies to READ carry data of a length only the
 * request knows), else checking stops there. */
struct fz_replies {
  int phase;                    /* private */
  uint8_t hdr[32];
  size_t hlen, want;
  uint64_t skip;
  bool structured;              /* the client negotiated structured replies */
  unsigned finals;              /* transmission replies that end a request */
  unsigned option_replies;
  bool go_acked;                /* an NBD_OPT_GO was acknowledged */
};
void fz_replies_init (struct fz_replies *r, bool structured);
void fz_replies_init_transmission (struct fz_replies *r);
/* An fz_sink. */
void fz_replies_feed (void *opaque, const uint8_t *p, size_t n);
/* True between two transmission replies (none cut short). */
bool fz_replies_at_boundary (const struct fz_replies *r);

/* The requests in a transmission-phase byte stream as the server must read
 * them: returns how many need a reply; *clean is false when the stream
 * breaks (bad magic, a WRITE over the maximum payload, a payload cut short)
 * and the server may then drop replies it has not sent yet; *max is the
 * most replies the server may send (a refused WRITE can be answered before
 * its payload is complete). */
unsigned fz_count_requests (const uint8_t *p, size_t n, bool *clean, unsigned *max);

#endif
