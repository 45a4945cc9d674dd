/* volume/sync.c — the sync thread: FLUSH and FUA durability.
 *
 * A loop thread never blocks on fsync.  It queues the request here; this
 * thread takes everything queued, syncs the RocksDB WAL and the pool file
 * once for all of them (group commit), and posts each request back to the
 * loop that owns it.  A request queued while a sync is running waits for
 * the next one: the running sync may have started before its writes were
 * acknowledged.
 */
#include "volume/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

int
meta_log_sync (struct vol_store *st)
{
  char *dberr = NULL;
  rocksdb_flush_wal (st->db, 1, &dberr);
  if (dberr) {
    log_error_ratelimited ("syncing metadata: %s", dberr);
    free (dberr);
    return -EIO;
  }
  return 0;
}

/* Make every completed write and metadata update durable.  Returns 0 or -errno. */
int
sync_now (struct vol_store *st)
{
  uint64_t seq = atomic_load (&st->meta_seq);
  int r = meta_log_sync (st);
  if (st->pool_fd >= 0 && fdatasync (st->pool_fd) < 0) {
    r = -errno;
    log_error_ratelimited ("syncing pool %s/pool.dat: %s", st->dir, strerror (errno));
  }
  if (r == 0) {
    uint64_t cur = atomic_load (&st->meta_synced);
    while (cur < seq && !atomic_compare_exchange_weak (&st->meta_synced, &cur, seq))
      ;
    alloc_promote (st, seq);
  }
  return r;
}

/* The sync thread also collects, at most once a second, chunks that
 * copy-on-write left unseen (store_gc_if_needed): it may block. */
static void *
sync_main (void *arg)
{
  struct vol_store *st = arg;
  pthread_mutex_lock (&st->sync_lock);
  for (;;) {
    while (st->sync_head == NULL && !st->sync_stop) {
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_sec += 1;
      pthread_cond_timedwait (&st->sync_cond, &st->sync_lock, &ts);
      if (st->sync_head == NULL && !st->sync_stop && atomic_load (&st->gc_needed)) {
        pthread_mutex_unlock (&st->sync_lock);
        store_gc_if_needed (st);
        pthread_mutex_lock (&st->sync_lock);
      }
    }
    if (st->sync_head == NULL)
      break;
    struct vol_io *batch = st->sync_head;
    st->sync_head = st->sync_tail = NULL;
    pthread_mutex_unlock (&st->sync_lock);

    int r = sync_now (st);
    while (batch) {
      struct vol_io *io = batch;
      batch = io->next;
      io->next = NULL;
      if (io->result == 0)
        io->result = r;
      io->ctx->post (io->ctx, io);
    }
    pthread_mutex_lock (&st->sync_lock);
  }
  pthread_mutex_unlock (&st->sync_lock);
  return NULL;
}

void
sync_enqueue (struct vol_store *st, struct vol_io *io)
{
  io->ctx->away++;              /* on io's own thread, until vol_io_resume */
  io->next = NULL;
  pthread_mutex_lock (&st->sync_lock);
  if (st->sync_tail)
    st->sync_tail->next = io;
  else
    st->sync_head = io;
  st->sync_tail = io;
  pthread_cond_signal (&st->sync_cond);
  pthread_mutex_unlock (&st->sync_lock);
}

int
sync_start (struct vol_store *st)
{
  pthread_mutex_init (&st->sync_lock, NULL);
  pthread_cond_init (&st->sync_cond, NULL);
  int r = pthread_create (&st->sync_thread, NULL, sync_main, st);
  return -r;
}

void
sync_stop (struct vol_store *st)
{
  pthread_mutex_lock (&st->sync_lock);
  st->sync_stop = true;
  pthread_cond_signal (&st->sync_cond);
  pthread_mutex_unlock (&st->sync_lock);
  pthread_join (st->sync_thread, NULL);
  pthread_mutex_destroy (&st->sync_lock);
  pthread_cond_destroy (&st->sync_cond);
}
