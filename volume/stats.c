/* volume/stats.c — what clients asked of each volume: requests, bytes,
 * errors and time, by kind (see vol_stats_add in volume.h). */
#include "volume/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One thread's counters of a volume.  Each loop thread adds to its own
 * slot (the thread number modulo VOL_STAT_SLOTS), so a volume served by
 * several loops does not bounce one cache line between them; a reader
 * adds the slots up.  The adds are atomic all the same, for threads that
 * share a slot.  A kind's counters fill one cache line of their own (5 of
 * its 8 words), so that a request's adds touch one line. */
#define STAT_WORDS 8
struct stat_slot {
  _Alignas (64) _Atomic uint64_t n[VOL_STAT_KINDS][STAT_WORDS];   /* ops, bytes, errors,
                                                                   * time_ns, storage_ns */
};
_Static_assert (sizeof (struct stat_slot) == VOL_STAT_KINDS * 64, "a line per kind");
#define SLOT_SIZE ((sizeof (struct stat_slot) + 63) & ~(size_t) 63)

static const char *const kind_names[VOL_STAT_KINDS] = {
  "read", "write", "flush", "trim", "zero",
};

const char *
vol_stat_kind_name (enum vol_stat_kind k)
{
  return (unsigned) k < VOL_STAT_KINDS ? kind_names[k] : "?";
}

static struct stat_slot *
slot_of (struct volume *v, unsigned i)
{
  return (struct stat_slot *) ((char *) v->stats + (size_t) (i % VOL_STAT_SLOTS) * SLOT_SIZE);
}

int
stats_init (struct volume *v)
{
  v->stats = aligned_alloc (64, VOL_STAT_SLOTS * SLOT_SIZE);
  if (v->stats == NULL)
    return -ENOMEM;
  for (unsigned i = 0; i < VOL_STAT_SLOTS; i++)
    for (unsigned k = 0; k < VOL_STAT_KINDS; k++)
      for (unsigned j = 0; j < STAT_WORDS; j++)
        atomic_init (&slot_of (v, i)->n[k][j], 0);
  v->stats_since = time (NULL);
  return 0;
}

void
stats_free (struct volume *v)
{
  free (v->stats);
  v->stats = NULL;
}

void
vol_stats_add (struct volume *v, unsigned slot, enum vol_stat_kind k, uint64_t bytes,
               uint64_t ns, uint64_t storage_ns, bool failed)
{
  if ((unsigned) k >= VOL_STAT_KINDS)
    return;
  _Atomic uint64_t *n = slot_of (v, slot)->n[k];
  atomic_fetch_add_explicit (&n[0], 1, memory_order_relaxed);
  if (failed)
    atomic_fetch_add_explicit (&n[2], 1, memory_order_relaxed);
  else
    atomic_fetch_add_explicit (&n[1], bytes, memory_order_relaxed);
  atomic_fetch_add_explicit (&n[3], ns, memory_order_relaxed);
  /* after the time it is part of: stats_sum, which reads it first, never
   * finds more on the store than in all */
  atomic_fetch_add_explicit (&n[4], storage_ns, memory_order_release);
}

void
stats_sum (struct volume *v, struct vol_stats *out)
{
  memset (out, 0, sizeof *out);
  out->since = v->stats_since;
  for (unsigned i = 0; i < VOL_STAT_SLOTS; i++)
    for (unsigned k = 0; k < VOL_STAT_KINDS; k++) {
      _Atomic uint64_t *n = slot_of (v, i)->n[k];
      out->kind[k].ops += atomic_load_explicit (&n[0], memory_order_relaxed);
      out->kind[k].bytes += atomic_load_explicit (&n[1], memory_order_relaxed);
      out->kind[k].errors += atomic_load_explicit (&n[2], memory_order_relaxed);
      out->kind[k].storage_ns += atomic_load_explicit (&n[4], memory_order_acquire);
      out->kind[k].time_ns += atomic_load_explicit (&n[3], memory_order_relaxed);
    }
}

int
vol_stats_get (struct vol_store *st, const char *name_or_id, struct vol_info *info,
               struct vol_stats *out, char *err, size_t errlen)
{
  memset (out, 0, sizeof *out);
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  if (v) {
    if (info)
      fill_info (v, info);
    stats_sum (v, out);
  }
  pthread_mutex_unlock (&st->lock);
  return v ? 0 : -ENOENT;
}
