/* blockd/internal.h — what the files of the daemon share. */
#ifndef BLOCKD_INTERNAL_H
#define BLOCKD_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "nbd/nbd.h"
#include "volume/volume.h"

#define BLOCKD_VERSION "0.1.0"

/* ---- config.c ---------------------------------------------------------------- */
struct blk_config {
  char data_dir[256];
  uint64_t capacity;          /* 0: keep / fit the disk */
  uint64_t chunk_size;        /* for a new store */
  char nbd[128];              /* HOST:PORT, "" for none */
  char nbd_unix[108];         /* PATH, "" for none */
  char api[128];              /* HOST:PORT */
  int64_t threads;
  int64_t max_connections;
  int64_t max_inflight;       /* requests in flight per connection */
  int64_t handshake_timeout;  /* seconds */
  int64_t poll_us;            /* busy-poll this long after the last I/O before sleeping */
  int64_t batch_us;           /* with many requests in flight, wait this long for a batch */
  int64_t fault_injection;    /* 1: POST /v1/debug/faults works (tests only) */
  int64_t hole_replies;       /* 1: never-written ranges go back as OFFSET_HOLE chunks */
  uint64_t read_ahead;        /* bytes read ahead of a sequential reader; 0: off */
  char log_level[16];
};
extern struct blk_config blk_cfg;

void blk_config_defaults (struct blk_config *c);
/* Set one setting by name from a string.  Returns 0, or -EINVAL with a
 * message in err. */
int blk_config_set (struct blk_config *c, const char *name, const char *value,
                    char *err, size_t errlen);
/* Read "name = value" lines.  Returns 0 or -errno with a message in err. */
int blk_config_load (struct blk_config *c, const char *path, char *err, size_t errlen);
void blk_config_dump (const struct blk_config *c, FILE *out);
void blk_config_usage (FILE *out);
/* Split "HOST:PORT" ("[::1]:PORT" for IPv6).  Returns 0 or -EINVAL. */
int blk_split_hostport (const char *s, char *host, size_t hostlen, int *port);
/* Resolve "HOST:PORT" for listening; *out is freed with freeaddrinfo.
 * Returns 0 or -EINVAL with a message in err. */
struct addrinfo;
int blk_resolve (const char *hostport, struct addrinfo **out, char *err, size_t errlen);

/* ---- loop.c: one io_uring event loop per thread --------------------------- */
uint64_t blk_now_ns (void);        /* CLOCK_MONOTONIC */
/* user_data tags (low 3 bits; every pointer we submit is 8-aligned).  All
 * eight values are taken (0 is a nop): another tag needs 16-aligned owners. */
enum {
  TAG_VOL = 1,       /* volume/ owns it: vol_io_cqe */
  TAG_ACCEPT = 2,    /* struct blk_listener */
  TAG_RECV = 3,      /* struct blk_conn */
  TAG_SEND = 4,      /* struct blk_conn */
  TAG_WAKE = 5,      /* struct blk_loop: eventfd readable */
  TAG_TIMER = 6,     /* struct blk_loop: periodic tick */
  TAG_RECV_NEXT = 7, /* struct blk_conn: a header's recv linked behind a payload's */
};
#define TAG_MASK 7ULL

#define BLK_ARENA_SIZE  (16u << 20)
#define BLK_ARENA_ALIGN (2u << 20)
#define BLK_HUGE_MIN    (1u << 20)      /* a chunk's copy from here takes huge pages */
#define BLK_COPY_KEEP   4               /* copy buffers a loop keeps for reuse */
#define BLK_BUF_MIN_SHIFT 12            /* 4 KiB */
#define BLK_BUF_CLASSES 9               /* 4 KiB .. 1 MiB */

struct blk_conn;
struct blk_listener {
  int fd;
  bool is_unix;
  char desc[160];
};

struct blk_loop {
  int index;
  pthread_t thread;
  struct io_uring ring;
  struct vol_ioctx vctx;
  int efd;
  uint64_t efd_buf;
  struct __kernel_timespec tick;

  pthread_mutex_t inbox_lock;     /* the two inboxes */
  int *inbox_fds;
  size_t ninbox_fds, capinbox_fds;
  struct vol_io *inbox_ios;

  uint64_t last_io_ns;            /* when a data-path completion was last seen */
  uint64_t turn_ns;               /* when this turn's completions were taken */
  bool taskrun_flag;              /* IORING_SETUP_TASKRUN_FLAG: poll_events works */
  bool min_timeout;               /* IORING_FEAT_MIN_TIMEOUT: batch_wait works */
  bool poll_pays;                 /* the last poll, or sleep, ended within poll_us */
  /* Does polling bring the next event sooner on this host?  Waits where
   * the loop may poll are timed both ways now and then (poll_mode). */
  uint64_t waits;                 /* waits where the loop may poll, so far */
  uint64_t wait_ns[2], wait_n[2]; /* this trial: [0] slept, [1] polled */
  bool poll_wins;
  unsigned inflight;              /* NBD requests read and not yet answered, all connections */
  uint64_t inflight_bytes;        /* their data buffers' bytes */
  unsigned busy_conns;            /* connections with requests in flight */
  uint64_t kept_large;            /* bytes of large request buffers kept for reuse */

  /* Data buffers of this loop's requests: an arena registered with the
   * ring (fixed buffer 0), cut into power-of-two classes of 4 KiB..1 MiB;
   * a freed buffer goes to its class's free list. */
  char *arena;
  size_t arena_len, arena_used;
  void *buf_free[BLK_BUF_CLASSES];
  /* a few chunk-copy buffers kept for the next copy (vctx_buf_put) */
  void *copy_free[BLK_COPY_KEEP];
  size_t copy_cap[BLK_COPY_KEEP];
  unsigned ncopy_free;

  atomic_bool stopping;
  bool listeners_closed;
  struct blk_conn *conns;         /* all connections of this loop */
  unsigned nconns;
  struct blk_conn *dirty;         /* connections with replies to send */
};

extern struct vol_store *blk_store;
extern struct blk_loop *blk_loops;
extern unsigned blk_nloops;
extern struct blk_listener blk_listeners[2];
extern unsigned blk_nlisteners;
extern atomic_uint blk_nconns;

int blk_loops_start (unsigned n, char *err, size_t errlen);
void blk_loops_stop (void);
void blk_loop_wake (struct blk_loop *l);
void blk_loop_post_fd (struct blk_loop *l, int fd);
/* A data buffer of at least len bytes, 4 KiB aligned, from l's registered
 * arena if it has room (else from the heap); *cap is set to its size.
 * Give it back with blk_buf_put on l's thread.  NULL if out of memory. */
void *blk_buf_get (struct blk_loop *l, size_t len, size_t *cap);
void blk_buf_put (struct blk_loop *l, void *buf, size_t cap);

/* ---- conn.c: one NBD connection ------------------------------------------- */
void blk_conn_start (struct blk_loop *l, int fd);
void blk_conn_recv_done (struct blk_conn *c, int res, bool next);
void blk_conn_send_done (struct blk_conn *c, int res);
void blk_conn_flush (struct blk_conn *c);     /* start sending queued replies */
void blk_conn_stop (struct blk_conn *c);      /* shutting down: finish and close */
void blk_conn_tick (struct blk_conn *c, int64_t now);
struct blk_conn *blk_conn_next (struct blk_conn *c);
void blk_loop_mark_dirty (struct blk_loop *l, struct blk_conn *c);
void blk_loop_flush_dirty (struct blk_loop *l);
/* NBD URI of volume name for people and for the API. */
void blk_nbd_uri (const char *name, char *out, size_t len);

/* ---- api.c: the HTTP API -------------------------------------------------- */
int blk_api_start (const char *hostport, char *err, size_t errlen);
void blk_api_stop (void);

/* embed.c: run the daemon inside another program (fuzzers) */
/* Serve a connected socket as if loop 0 had accepted it (counted in
 * blk_nconns; the loop owns fd).  Any thread, once blk_loops_start ran. */
void blk_loop_adopt (int fd);

#endif
