/* volume/lineage.c — chunk histories, views, and what holds each chunk.
 *
 * See struct lineage in internal.h.  A view is (lineage, generation): the
 * live volume sees the newest entry of each chunk; a snapshot at gen g sees
 * the newest entry whose generation is <= g; where a lineage has no entry,
 * its base view is read through.  Views never walk this per request: the
 * live volume and open snapshot exports keep a materialized chunk map.
 */
#include "volume/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct lineage *
lin_new (struct vol_store *st, struct lineage *base, uint32_t base_gen)
{
  struct lineage *l = calloc (1, sizeof *l);
  if (l == NULL)
    return NULL;
  uuid_generate_random (l->uuid);
  uuid_unparse_lower (l->uuid, l->id);
  l->base = base;
  l->base_gen = base_gen;
  l->cur_gen = 1;
  (void) st;
  return l;
}

void
lin_link (struct vol_store *st, struct lineage *l)
{
  l->next = st->lineages;
  st->lineages = l;
  if (l->base)
    l->base->nchildren++;
}

void
lin_free (struct lineage *l)
{
  for (uint64_t i = 0; i < l->nleaves; i++) {
    for (unsigned j = 0; l->leaves[i] && j < LEAF_ENTRIES; j++)
      free (l->leaves[i][j]);
    free (l->leaves[i]);
  }
  free (l->leaves);
  free (l->vgens);
  free (l);
}

bool
lin_empty (const struct lineage *l)
{
  for (uint64_t i = 0; i < l->nleaves; i++)
    for (unsigned j = 0; l->leaves[i] && j < LEAF_ENTRIES; j++)
      if (l->leaves[i][j])
        return false;
  return true;
}

static void
lin_unlink_free (struct vol_store *st, struct lineage *l)
{
  for (struct lineage **pp = &st->lineages; *pp; pp = &(*pp)->next)
    if (*pp == l) {
      *pp = l->next;
      break;
    }
  if (l->base)
    l->base->nchildren--;
  lin_free (l);
}

int
lin_put (struct vol_store *st, rocksdb_writebatch_t *wb, struct lineage *l)
{
  char key[1 + VOL_ID_LEN], val[200];
  key[0] = 'L';
  memcpy (key + 1, l->id, VOL_ID_LEN);
  int n = snprintf (val, sizeof val, "{\"id\":\"%s\",\"base\":\"%s\",\"base_gen\":%u,\"cur_gen\":%u}",
                    l->id, l->base ? l->base->id : "", l->base_gen, l->cur_gen);
  if (wb) {
    rocksdb_writebatch_put (wb, key, sizeof key, val, (size_t) n);
    return 0;
  }
  char *dberr = NULL;
  rocksdb_put (st->db, st->wopts, key, sizeof key, val, (size_t) n, &dberr);
  atomic_fetch_add (&st->meta_seq, 1);
  if (dberr) {
    log_error ("metadata write failed: %s", dberr);
    free (dberr);
    return -EIO;
  }
  return 0;
}

/* ---- histories ------------------------------------------------------------ */
struct hist *
lin_hist (struct lineage *l, uint64_t chunk)
{
  uint64_t i = chunk >> LEAF_SHIFT;
  if (i >= l->nleaves || l->leaves[i] == NULL)
    return NULL;
  return l->leaves[i][chunk & (LEAF_ENTRIES - 1)];
}

int
lin_hist_set (struct lineage *l, uint64_t chunk, uint32_t gen, uint32_t phys)
{
  uint64_t i = chunk >> LEAF_SHIFT;
  if (i >= l->nleaves) {
    uint64_t n = i + 1 > 2 * l->nleaves ? i + 1 : 2 * l->nleaves;
    struct hist ***nl = realloc (l->leaves, n * sizeof *nl);
    if (nl == NULL)
      return -ENOMEM;
    memset (nl + l->nleaves, 0, (n - l->nleaves) * sizeof *nl);
    l->leaves = nl;
    l->nleaves = n;
  }
  if (l->leaves[i] == NULL && (l->leaves[i] = calloc (LEAF_ENTRIES, sizeof (struct hist *))) == NULL)
    return -ENOMEM;
  struct hist **hp = &l->leaves[i][chunk & (LEAF_ENTRIES - 1)];
  struct hist *h = *hp;
  if (h && h->n && h->e[h->n - 1].gen == gen) {
    h->e[h->n - 1].phys = phys;
    return 0;
  }
  if (h == NULL || h->n == h->cap) {
    uint32_t cap = h ? 2 * h->cap : 1;
    struct hist *nh = realloc (h, sizeof *nh + cap * sizeof nh->e[0]);
    if (nh == NULL)
      return -ENOMEM;
    if (h == NULL)
      nh->n = 0;
    nh->cap = cap;
    *hp = h = nh;
  }
  /* keep sorted: entries are appended in generation order, except at load */
  uint32_t k = h->n;
  while (k > 0 && h->e[k - 1].gen > gen) {
    h->e[k] = h->e[k - 1];
    k--;
  }
  h->e[k] = (struct hent) { .gen = gen, .phys = phys };
  h->n++;
  return 0;
}

void
lin_hist_drop (struct lineage *l, uint64_t chunk, uint32_t gen)
{
  uint64_t i = chunk >> LEAF_SHIFT;
  if (i >= l->nleaves || l->leaves[i] == NULL)
    return;
  struct hist **hp = &l->leaves[i][chunk & (LEAF_ENTRIES - 1)];
  struct hist *h = *hp;
  if (h == NULL)
    return;
  for (uint32_t k = 0; k < h->n; k++)
    if (h->e[k].gen == gen) {
      memmove (&h->e[k], &h->e[k + 1], (h->n - k - 1) * sizeof h->e[0]);
      h->n--;
      break;
    }
  if (h->n == 0) {
    free (h);
    *hp = NULL;
  }
}

/* ---- views ------------------------------------------------------------------ */
int
lin_view_add (struct lineage *l, uint32_t gen)
{
  if (l->nv == l->capv) {
    size_t cap = l->capv ? 2 * l->capv : 8;
    uint32_t *n = realloc (l->vgens, cap * sizeof *n);
    if (n == NULL)
      return -ENOMEM;
    l->vgens = n;
    l->capv = cap;
  }
  size_t k = l->nv;
  while (k > 0 && l->vgens[k - 1] > gen) {
    l->vgens[k] = l->vgens[k - 1];
    k--;
  }
  l->vgens[k] = gen;
  l->nv++;
  return 0;
}

void
lin_view_del (struct lineage *l, uint32_t gen)
{
  for (size_t k = 0; k < l->nv; k++)
    if (l->vgens[k] == gen) {
      memmove (&l->vgens[k], &l->vgens[k + 1], (l->nv - k - 1) * sizeof *l->vgens);
      l->nv--;
      return;
    }
}

uint32_t
lin_maxv (struct lineage *l)
{
  return l->nv ? l->vgens[l->nv - 1] : 0;
}

/* Entry of h that view gen sees: its index, or -1. */
static int
hist_floor (const struct hist *h, uint32_t gen)
{
  if (h == NULL)
    return -1;
  int k = (int) h->n - 1;
  while (k >= 0 && h->e[k].gen > gen)
    k--;
  return k;
}

uint32_t
view_lookup (struct lineage *l, uint32_t gen, uint64_t chunk)
{
  for (; l; gen = l->base_gen, l = l->base) {
    int k = hist_floor (lin_hist (l, chunk), gen);
    if (k >= 0) {
      uint32_t p = lin_hist (l, chunk)->e[k].phys;
      return p == TOMB ? 0 : p + 1;
    }
  }
  return 0;
}

/* During materialization, a chunk decided by a nearer lineage as a hole
 * (tombstone) holds CLAIMED, cleared at the end. */
#define CLAIMED ME_BUSY

int
view_materialize (struct lineage *l, uint32_t gen, uint64_t nchunks, ment_t ***leaves,
                  uint64_t *nleaves, bool all_inherited, uint64_t *nown, struct volume *held)
{
  uint64_t nl = (nchunks + LEAF_ENTRIES - 1) >> LEAF_SHIFT;
  ment_t **lv = calloc (nl ? nl : 1, sizeof *lv);
  if (lv == NULL)
    return -ENOMEM;
  uint64_t own = 0;
  int r = 0;
  bool first = true;
  for (; l && r == 0; gen = l->base_gen, l = l->base, first = false) {
    /* a live volume appends to its lineage's history under its lock */
    struct volume *lk = l->live != held ? l->live : NULL;
    if (lk)
      pthread_mutex_lock (&lk->lock);
    uint64_t lim = l->nleaves < nl ? l->nleaves : nl;
    for (uint64_t i = 0; i < lim && r == 0; i++) {
      if (l->leaves[i] == NULL)
        continue;
      for (unsigned j = 0; j < LEAF_ENTRIES; j++) {
        uint64_t c = (i << LEAF_SHIFT) | j;
        if (c >= nchunks)
          break;
        if (lv[i] && lv[i][j])
          continue;               /* a nearer lineage decided this chunk */
        struct hist *h = l->leaves[i][j];
        int k = hist_floor (h, gen);
        if (k < 0)
          continue;
        if (lv[i] == NULL && (lv[i] = calloc (LEAF_ENTRIES, sizeof (ment_t))) == NULL) {
          r = -ENOMEM;
          break;
        }
        if (h->e[k].phys == TOMB) {
          lv[i][j] = CLAIMED;
          continue;
        }
        bool inh = all_inherited || !first;
        lv[i][j] = ME_MAKE (h->e[k].phys + 1, inh ? ME_INHERITED : h->e[k].gen);
        if (!inh)
          own++;
      }
    }
    if (lk)
      pthread_mutex_unlock (&lk->lock);
  }
  for (uint64_t i = 0; i < nl; i++)
    for (unsigned j = 0; lv[i] && j < LEAF_ENTRIES; j++)
      if (lv[i][j] == CLAIMED)
        lv[i][j] = 0;
  if (r < 0) {
    for (uint64_t i = 0; i < nl; i++)
      free (lv[i]);
    free (lv);
    return r;
  }
  *leaves = lv;
  *nleaves = nl;
  if (nown)
    *nown = own;
  return 0;
}

/* ---- who holds what ----------------------------------------------------------- */
static int
hold_view (struct vol_store *st, struct holders *h, struct lineage *l, uint32_t gen,
           uint64_t size, const void *who)
{
  uint64_t nchunks = (size + st->chunk_size - 1) >> st->chunk_shift;
  ment_t **lv;
  uint64_t nl;
  int r = view_materialize (l, gen, nchunks, &lv, &nl, false, NULL, NULL);
  if (r < 0)
    return r;
  for (uint64_t i = 0; i < nl; i++) {
    if (lv[i] == NULL)
      continue;
    for (unsigned j = 0; j < LEAF_ENTRIES; j++) {
      uint32_t p1 = ME_PHYS1 (lv[i][j]);
      if (p1 && p1 - 1 < st->nchunks) {
        h->count[p1 - 1]++;
        h->last[p1 - 1] = who;
      }
    }
    free (lv[i]);
  }
  free (lv);
  return 0;
}

/* Caller holds st->lock (and no volume's lock), so histories change only
 * by live writes, under their volume's lock, which view_materialize and
 * the count of unseen entries take around each lineage. */
int
holders_compute (struct vol_store *st, struct holders *h)
{
  memset (h, 0, sizeof *h);
  h->count = calloc (st->nchunks, sizeof *h->count);
  h->last = calloc (st->nchunks, sizeof *h->last);
  if (h->count == NULL || h->last == NULL) {
    holders_free (h);
    return -ENOMEM;
  }
  int r = 0;
  for (size_t i = 0; i < st->nvols && r == 0; i++) {
    struct volume *v = st->vols[i];   /* lin and size change only under st->lock too */
    r = hold_view (st, h, v->lin, v->lin->cur_gen, v->size, v);
  }
  for (struct snapshot *s = st->snaps; s && r == 0; s = s->next)
    r = hold_view (st, h, s->lin, s->gen, s->size, s);
  if (r < 0) {
    holders_free (h);
    return r;
  }
  /* every entry of every lineage owns its chunk: count the unseen ones
   * (under the live volume's lock: its writes grow the histories) */
  for (struct lineage *l = st->lineages; l; l = l->next) {
    if (l->live)
      pthread_mutex_lock (&l->live->lock);
    for (uint64_t i = 0; i < l->nleaves; i++) {
      if (l->leaves[i] == NULL)
        continue;
      for (unsigned j = 0; j < LEAF_ENTRIES; j++) {
        struct hist *hs = l->leaves[i][j];
        for (uint32_t k = 0; hs && k < hs->n; k++) {
          uint32_t p = hs->e[k].phys;
          if (p != TOMB && p < st->nchunks && h->count[p] == 0)
            h->leaked++;
        }
      }
    }
    if (l->live)
      pthread_mutex_unlock (&l->live->lock);
  }
  for (uint64_t p = 0; p < st->nchunks; p++)
    if (h->count[p] > 1)
      h->shared++;
  return 0;
}

void
holders_free (struct holders *h)
{
  free (h->count);
  free ((void *) h->last);
  h->count = NULL;
  h->last = NULL;
}

/* ---- garbage collection --------------------------------------------------------- */

/* Is entry k of h in lineage l seen by a view of l (its live view, a
 * snapshot, or a child's base)?  Tombstones matter only that way. */
static bool
entry_in_view (const struct lineage *l, const struct hist *h, uint32_t k)
{
  uint32_t lo = h->e[k].gen, hi = k + 1 < h->n ? h->e[k + 1].gen : UINT32_MAX;
  if (l->live && k + 1 == h->n)
    return true;
  for (size_t i = 0; i < l->nv; i++)
    if (l->vgens[i] >= lo && l->vgens[i] < hi)
      return true;
  return false;
}

/* One round: drop dead entries and empty lineages.  Returns how many
 * things it dropped, or -errno. */
struct freed { uint32_t *v; size_t n, cap; };

static long
gc_round (struct vol_store *st, rocksdb_writebatch_t *wb, struct freed *fr, char *err, size_t errlen)
{
  struct holders ho;
  int r = holders_compute (st, &ho);
  if (r < 0) {
    set_err (err, errlen, "out of memory");
    return r;
  }
  long dropped = 0;
  for (struct lineage *l = st->lineages; l && r == 0; l = l->next) {
    if (l->live)
      pthread_mutex_lock (&l->live->lock);
    for (uint64_t i = 0; i < l->nleaves && r == 0; i++) {
      for (unsigned j = 0; l->leaves[i] && j < LEAF_ENTRIES && r == 0; j++) {
        uint64_t chunk = (i << LEAF_SHIFT) | j;
        uint32_t k = 0;
        struct hist *h;
        while ((h = l->leaves[i][j]) != NULL && k < h->n) {
          uint32_t p = h->e[k].phys;
          bool dead = p == TOMB ? !entry_in_view (l, h, k) : ho.count[p] == 0;
          /* The live view always sees its newest entry.  One written since
           * the holders were counted (a first write, a copy-on-write) was
           * not counted: it must not be taken for garbage. */
          if (dead && p != TOMB && l->live && k + 1 == h->n)
            dead = false;
          /* a tombstone with nothing under it hides nothing */
          if (p == TOMB && !dead && k == 0 && l->base == NULL)
            dead = true;
          if (!dead) {
            k++;
            continue;
          }
          if (p != TOMB) {
            if (fr->n == fr->cap) {
              size_t cap = fr->cap ? 2 * fr->cap : 64;
              uint32_t *nf = realloc (fr->v, cap * sizeof *nf);
              if (nf == NULL) {
                r = -ENOMEM;
                break;
              }
              fr->v = nf;
              fr->cap = cap;
            }
            fr->v[fr->n++] = p;
          }
          meta_put_entry (st, wb, l, chunk, h->e[k].gen, NO_ENTRY);
          lin_hist_drop (l, chunk, h->e[k].gen);
          dropped++;
        }
      }
    }
    if (l->live)
      pthread_mutex_unlock (&l->live->lock);
  }
  holders_free (&ho);

  /* lineages with no view and no entry left go, and release their base */
  for (struct lineage *l = st->lineages, *next; l && r == 0; l = next) {
    next = l->next;
    if (l->live || l->nv || l->nchildren)
      continue;
    if (!lin_empty (l))
      continue;
    char key[1 + VOL_ID_LEN];
    key[0] = 'L';
    memcpy (key + 1, l->id, VOL_ID_LEN);
    rocksdb_writebatch_delete (wb, key, sizeof key);
    if (l->base)
      lin_view_del (l->base, l->base_gen);
    lin_unlink_free (st, l);
    dropped++;
  }
  return r < 0 ? r : dropped;
}

void
store_gc_if_needed (struct vol_store *st)
{
  if (!atomic_exchange (&st->gc_needed, false))
    return;
  char err[300];
  pthread_mutex_lock (&st->lock);
  if (store_gc (st, NULL, err, sizeof err) < 0) {
    log_warn ("collecting unused chunks: %s", err);
    atomic_store (&st->gc_needed, true);     /* try again later */
  }
  pthread_mutex_unlock (&st->lock);
}

/* All rounds: a lineage that goes can leave its base's entries unseen.
 * Returns how many things were dropped, or -errno. */
static long
gc_collect (struct vol_store *st, rocksdb_writebatch_t *wb, struct freed *fr, char *err, size_t errlen)
{
  long n, total = 0;
  for (int round = 0; round < 1000; round++) {
    if ((n = gc_round (st, wb, fr, err, errlen)) < 0)
      return n;
    if (n == 0)
      break;
    total += n;
  }
  return total;
}

int
store_gc (struct vol_store *st, rocksdb_writebatch_t *wb, char *err, size_t errlen)
{
  rocksdb_writebatch_t *own = NULL;
  if (wb == NULL)
    wb = own = rocksdb_writebatch_create ();
  struct freed fr = { 0 };
  long n = gc_collect (st, wb, &fr, err, errlen);
  int r = n < 0 ? (int) n : 0;
  if (r == 0 && rocksdb_writebatch_count (wb))
    r = meta_write (st, wb, err, errlen);
  if (r == 0) {
    for (size_t i = 0; i < fr.n; i++)
      chunk_unmap (st, fr.v[i], NULL);
    if (fr.n)
      log_info ("freed %zu chunks no volume or snapshot uses any more", fr.n);
  }
  free (fr.v);
  if (own)
    rocksdb_writebatch_destroy (own);
  return r;
}

long
store_gc_in_memory (struct vol_store *st)
{
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  struct freed fr = { 0 };
  char err[300];
  pthread_mutex_lock (&st->lock);
  long n = gc_collect (st, wb, &fr, err, sizeof err);
  pthread_mutex_unlock (&st->lock);
  rocksdb_writebatch_destroy (wb);
  free (fr.v);
  return n < 0 ? n : (long) fr.n;
}
