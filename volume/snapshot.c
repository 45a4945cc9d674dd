/* volume/snapshot.c — snapshots, clones, rollback, diffs, accounting.
 *
 * Records (RocksDB):
 *   "P" <id>  a snapshot (JSON): its lineage and generation, source volume, size
 *   "L" <id>  a lineage (JSON): base lineage and generation, current generation
 * Every operation here is one RocksDB batch, so a crash leaves it done or
 * not done; space it frees is handed back after the batch is written.
 */
#include "volume/internal.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

/* ---- lookups ------------------------------------------------------------------- */

/* ref: "VOL@SNAP" or a snapshot id.  Caller holds st->lock.  When the
 * volume name was reused, the snapshot of the volume living now wins. */
struct snapshot *
find_snapshot_unlocked (struct vol_store *st, const char *ref)
{
  const char *at = strchr (ref, '@');
  if (at == NULL) {
    for (struct snapshot *s = st->snaps; s; s = s->next)
      if (strcmp (s->id, ref) == 0)
        return s;
    return NULL;
  }
  size_t vl = (size_t) (at - ref);
  struct snapshot *found = NULL;
  for (struct snapshot *s = st->snaps; s; s = s->next)
    if (strlen (s->vol_name) == vl && strncmp (s->vol_name, ref, vl) == 0
        && strcmp (s->name, at + 1) == 0) {
      struct volume *v = find_volume_unlocked (st, s->vol_id);
      if (found == NULL || v)
        found = s;
    }
  return found;
}

static void
snap_info (struct vol_store *st, struct snapshot *s, struct vol_snap_info *si,
           const struct holders *h)
{
  memset (si, 0, sizeof *si);
  memcpy (si->id, s->id, sizeof si->id);
  memcpy (si->name, s->name, sizeof si->name);
  memcpy (si->vol_name, s->vol_name, sizeof si->vol_name);
  memcpy (si->vol_id, s->vol_id, sizeof si->vol_id);
  si->size = s->size;
  si->created = s->created;
  if (s->view) {
    pthread_mutex_lock (&s->view->lock);
    si->connections = s->view->nsessions;
    pthread_mutex_unlock (&s->view->lock);
  }
  /* referenced: chunks its view sees; exclusive: those nobody else sees */
  uint64_t nchunks = (s->size + st->chunk_size - 1) >> st->chunk_shift;
  ment_t **lv;
  uint64_t nl;
  if (view_materialize (s->lin, s->gen, nchunks, &lv, &nl, false, NULL, NULL) < 0)
    return;
  for (uint64_t i = 0; i < nl; i++) {
    for (unsigned j = 0; lv[i] && j < LEAF_ENTRIES; j++) {
      uint32_t p1 = ME_PHYS1 (lv[i][j]);
      if (p1 == 0)
        continue;
      si->referenced += st->chunk_size;
      if (h && h->count[p1 - 1] == 1)
        si->exclusive += st->chunk_size;
    }
    free (lv[i]);
  }
  free (lv);
}

/* snap_info with the exclusive bytes, which need a pass over every view. */
static void
snap_info_accounted (struct vol_store *st, struct snapshot *s, struct vol_snap_info *si)
{
  struct holders h;
  bool hv = holders_compute (st, &h) == 0;
  snap_info (st, s, si, hv ? &h : NULL);
  if (hv)
    holders_free (&h);
}

static struct volume *
view_new (struct vol_store *st, struct snapshot *s)
{
  struct volume *v = volume_new (st);
  if (v == NULL)
    return NULL;
  snprintf (v->name, sizeof v->name, "%s", s->name);
  memcpy (v->id, s->id, sizeof v->id);
  snprintf (v->type, sizeof v->type, "snapshot");
  v->created = s->created;
  v->size = s->size;
  v->snap = s;
  uint64_t nchunks = (s->size + st->chunk_size - 1) >> st->chunk_shift;
  if (view_materialize (s->lin, s->gen, nchunks, &v->leaves, &v->nleaves, true, NULL, NULL) < 0) {
    volume_put (v);
    return NULL;
  }
  return v;
}

/* The read-only volume exporting snapshot VOL@SNAP, created on first use
 * and kept while sessions use it.  Caller holds st->lock. */
struct volume *
snapshot_view_unlocked (struct vol_store *st, const char *name)
{
  struct snapshot *s = find_snapshot_unlocked (st, name);
  if (s == NULL || strchr (name, '@') == NULL)
    return NULL;
  if (s->view == NULL)
    s->view = view_new (st, s);     /* holds one reference for the snapshot */
  return s->view;
}

int
vol_export_stat (struct vol_store *st, const char *name, struct vol_info *out, bool *read_only)
{
  int r = 0;
  pthread_mutex_lock (&st->lock);
  if (strchr (name, '@')) {
    struct snapshot *s = find_snapshot_unlocked (st, name);
    if (s) {
      memset (out, 0, sizeof *out);
      memcpy (out->id, s->id, sizeof out->id);
      snprintf (out->name, sizeof out->name, "%s", s->name);
      snprintf (out->type, sizeof out->type, "snapshot");
      out->size = s->size;
      *read_only = true;
    }
    else
      r = -ENOENT;
  }
  else {
    struct volume *v = find_volume_unlocked (st, name);
    if (v && strcmp (v->name, name) == 0) {
      fill_info (v, out);
      *read_only = false;
    }
    else
      r = -ENOENT;
  }
  pthread_mutex_unlock (&st->lock);
  return r;
}

/* ---- records ------------------------------------------------------------------- */
static void
snap_put (rocksdb_writebatch_t *wb, struct snapshot *s)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "id", json_object_new_string (s->id));
  json_object_object_add (o, "name", json_object_new_string (s->name));
  json_object_object_add (o, "volume", json_object_new_string (s->vol_name));
  json_object_object_add (o, "volume_id", json_object_new_string (s->vol_id));
  json_object_object_add (o, "lineage", json_object_new_string (s->lin->id));
  json_object_object_add (o, "gen", json_object_new_int64 (s->gen));
  json_object_object_add (o, "size", json_object_new_int64 ((int64_t) s->size));
  json_object_object_add (o, "created", json_object_new_int64 (s->created));
  const char *js = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN);
  char key[1 + VOL_ID_LEN];
  key[0] = 'P';
  memcpy (key + 1, s->id, VOL_ID_LEN);
  rocksdb_writebatch_put (wb, key, sizeof key, js, strlen (js));
  json_object_put (o);
}

/* ---- snapshot create / delete ----------------------------------------------------- */

/* Wait until no write of v is in flight; new ones park until unquiesce.
 * Caller holds st->lock and v->lock. */
static void
quiesce (struct volume *v)
{
  atomic_store (&v->quiescing, true);
  while (atomic_load (&v->writes_inflight) > 0)
    pthread_cond_wait (&v->quiesce_cond, &v->lock);
}

/* Caller holds v->lock; it is released on return. */
static void
unquiesce_unlock (struct volume *v)
{
  atomic_store (&v->quiescing, false);
  struct vol_io *w = v->quiesce_waiting;
  v->quiesce_waiting = NULL;
  pthread_mutex_unlock (&v->lock);
  while (w) {                       /* they resubmit on their own threads */
    struct vol_io *n = w->next;
    w->next = NULL;
    w->ctx->post (w->ctx, w);
    w = n;
  }
}

int
vol_snapshot_create (struct vol_store *st, const char *vol, const char *name,
                     struct vol_snap_info *out, char *err, size_t errlen)
{
  const char *why = vol_name_invalid (name);
  if (why) {
    set_err (err, errlen, "snapshot name \"%.80s\" %s", name, why);
    return -EINVAL;
  }
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, vol, err, errlen);
  if (v == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOENT;
  }
  for (struct snapshot *s = st->snaps; s; s = s->next)
    if (strcmp (s->vol_id, v->id) == 0 && strcmp (s->name, name) == 0) {
      set_err (err, errlen, "volume \"%s\" already has a snapshot named \"%s\"", v->name, name);
      pthread_mutex_unlock (&st->lock);
      return -EEXIST;
    }
  struct snapshot *s = calloc (1, sizeof *s);
  if (s == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOMEM;
  }
  uuid_generate_random (s->uuid);
  uuid_unparse_lower (s->uuid, s->id);
  snprintf (s->name, sizeof s->name, "%s", name);
  memcpy (s->vol_name, v->name, sizeof s->vol_name);
  memcpy (s->vol_id, v->id, sizeof s->vol_id);
  s->created = time (NULL);

  struct timespec t0, t1;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  pthread_mutex_lock (&v->lock);
  quiesce (v);
  struct lineage *l = v->lin;
  s->lin = l;
  s->gen = l->cur_gen;
  s->size = v->size;
  l->cur_gen++;
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  snap_put (wb, s);
  lin_put (st, wb, l);
  int r = meta_write (st, wb, err, errlen);
  rocksdb_writebatch_destroy (wb);
  if (r == 0 && (r = lin_view_add (l, s->gen)) < 0)
    set_err (err, errlen, "out of memory");
  if (r < 0)
    l->cur_gen--;                   /* nothing was recorded, or memory failed: undone */
  unquiesce_unlock (v);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  if (r < 0) {
    free (s);
    pthread_mutex_unlock (&st->lock);
    return r;
  }
  s->next = st->snaps;
  st->snaps = s;
  log_info ("snapshot %s@%s (%s) taken in %.3f ms", v->name, s->name, s->id,
            (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
  if (out)
    snap_info_accounted (st, s, out);
  pthread_mutex_unlock (&st->lock);
  return 0;
}

int
vol_snapshot_delete (struct vol_store *st, const char *ref, bool force, char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct snapshot *s = find_snapshot_unlocked (st, ref);
  if (s == NULL) {
    pthread_mutex_unlock (&st->lock);
    set_err (err, errlen, "snapshot \"%.120s\" not found (name it VOL@SNAP or by id)", ref);
    return -ENOENT;
  }
  unsigned n;
  if (s->view && (n = volume_retire (s->view, force)) != 0) {
    set_err (err, errlen, "snapshot %s@%s is exported to %u NBD connection%s; disconnect "
             "them or delete with force", s->vol_name, s->name, n, n == 1 ? "" : "s");
    pthread_mutex_unlock (&st->lock);
    return -EBUSY;
  }
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  char key[1 + VOL_ID_LEN];
  key[0] = 'P';
  memcpy (key + 1, s->id, VOL_ID_LEN);
  rocksdb_writebatch_delete (wb, key, sizeof key);
  for (struct snapshot **pp = &st->snaps; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  lin_view_del (s->lin, s->gen);
  if (s->view) {
    /* the view's sessions keep their volume (and its pinned chunks) until
     * they close; it no longer points at the snapshot */
    struct volume *view = s->view;
    view->snap = NULL;
    volume_put (view);
  }
  log_info ("deleting snapshot %s@%s (%s)", s->vol_name, s->name, s->id);
  free (s);
  /* the record and every chunk only it held go in one batch */
  int r = store_gc (st, wb, err, errlen);
  rocksdb_writebatch_destroy (wb);
  pthread_mutex_unlock (&st->lock);
  return r < 0 ? r : 0;
}

int
vol_snapshot_stat (struct vol_store *st, const char *ref, struct vol_snap_info *out,
                   char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct snapshot *s = find_snapshot_unlocked (st, ref);
  if (s)
    snap_info_accounted (st, s, out);
  pthread_mutex_unlock (&st->lock);
  if (s == NULL) {
    set_err (err, errlen, "snapshot \"%.120s\" not found (name it VOL@SNAP or by id)", ref);
    return -ENOENT;
  }
  return 0;
}

static int
cmp_snap (const void *a, const void *b)
{
  const struct vol_snap_info *x = a, *y = b;
  int c = strcmp (x->vol_name, y->vol_name);
  if (c)
    return c;
  return x->created < y->created ? -1 : x->created > y->created ? 1 : strcmp (x->name, y->name);
}

int
vol_snapshot_list (struct vol_store *st, const char *vol, struct vol_snap_info **out, size_t *n)
{
  pthread_mutex_lock (&st->lock);
  size_t cnt = 0;
  for (struct snapshot *s = st->snaps; s; s = s->next)
    cnt++;
  struct vol_snap_info *a = calloc (cnt ? cnt : 1, sizeof *a);
  struct holders h;
  bool hv = a && holders_compute (st, &h) == 0;
  size_t k = 0;
  for (struct snapshot *s = st->snaps; a && s; s = s->next)
    if (vol == NULL || strcmp (s->vol_name, vol) == 0 || strcmp (s->vol_id, vol) == 0)
      snap_info (st, s, &a[k++], hv ? &h : NULL);
  if (hv)
    holders_free (&h);
  pthread_mutex_unlock (&st->lock);
  if (a == NULL)
    return -ENOMEM;
  qsort (a, k, sizeof *a, cmp_snap);
  *out = a;
  *n = k;
  return 0;
}

/* ---- clones and rollback ------------------------------------------------------------ */

/* A new lineage reading through snapshot s, with v's live map filled from it. */
static int
branch_from (struct vol_store *st, struct volume *v, struct snapshot *s, struct lineage **out,
             struct volume *held)
{
  struct lineage *l = lin_new (st, s->lin, s->gen);
  if (l == NULL)
    return -ENOMEM;
  uint64_t nchunks = (v->size + st->chunk_size - 1) >> st->chunk_shift;
  ment_t **lv;
  uint64_t nl;
  int r = view_materialize (s->lin, s->gen, nchunks, &lv, &nl, true, NULL, held);
  if (r < 0) {
    free (l);
    return r;
  }
  map_free (v);
  v->leaves = lv;
  v->nleaves = nl;
  v->nmapped = 0;
  *out = l;
  return 0;
}

int
vol_create_from (struct vol_store *st, const char *name, uint64_t size, const char *type,
                 const char *from, unsigned flags, struct vol_info *out,
                 char *err, size_t errlen)
{
  const char *why;
  if ((why = vol_name_invalid (name)) != NULL) {
    set_err (err, errlen, "volume name \"%.80s\" %s", name, why);
    return -EINVAL;
  }
  if (type == NULL)
    type = vol_disk_types[0];
  if ((why = vol_type_invalid (type)) != NULL) {
    set_err (err, errlen, "volume \"%s\": disk type \"%.40s\" %s", name, type, why);
    return -EINVAL;
  }
  pthread_mutex_lock (&st->lock);
  struct snapshot *src = NULL;
  if (from) {
    src = find_snapshot_unlocked (st, from);
    if (src == NULL) {
      pthread_mutex_unlock (&st->lock);
      set_err (err, errlen, "volume \"%s\": snapshot \"%.120s\" not found (name it VOL@SNAP)",
               name, from);
      return -ENOENT;
    }
    if (size == 0)
      size = src->size;
    if (size < src->size) {
      pthread_mutex_unlock (&st->lock);
      set_err (err, errlen, "volume \"%s\": size %llu is smaller than snapshot %s@%s (%llu)",
               name, (unsigned long long) size, src->vol_name, src->name,
               (unsigned long long) src->size);
      return -EINVAL;
    }
  }
  if ((why = vol_size_invalid (size)) != NULL) {
    pthread_mutex_unlock (&st->lock);
    set_err (err, errlen, "volume \"%s\": size %llu %s", name, (unsigned long long) size, why);
    return -EINVAL;
  }
  if (find_volume_unlocked (st, name)) {
    pthread_mutex_unlock (&st->lock);
    set_err (err, errlen, "volume \"%s\" already exists (choose another name)", name);
    return -EEXIST;
  }
  struct volume *v = volume_new (st);
  if (v == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOMEM;
  }
  uuid_generate_random (v->uuid);
  uuid_unparse_lower (v->uuid, v->id);
  snprintf (v->name, sizeof v->name, "%s", name);
  snprintf (v->type, sizeof v->type, "%s", type);
  v->created = time (NULL);
  v->size = size;
  v->multi_attach = flags & VOL_CREATE_MULTI_ATTACH;
  int r = 0;
  struct lineage *l = NULL;
  if (src) {
    snprintf (v->source, sizeof v->source, "%s@%s", src->vol_name, src->name);
    r = branch_from (st, v, src, &l, NULL);
  }
  else if ((l = lin_new (st, NULL, 0)) == NULL)
    r = -ENOMEM;
  if (r == 0)
    r = map_grow (v, size);
  if (r == 0 && src)
    r = lin_view_add (src->lin, src->gen);
  if (r < 0) {
    set_err (err, errlen, "out of memory");
    free (l);
    volume_put (v);
    pthread_mutex_unlock (&st->lock);
    return r;
  }
  v->lin = l;
  l->live = v;
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  lin_put (st, wb, l);
  meta_put_volume (v, wb);
  r = meta_write (st, wb, err, errlen);
  rocksdb_writebatch_destroy (wb);
  if (r == 0)
    r = registry_add (st, v);
  if (r < 0) {
    if (src)
      lin_view_del (src->lin, src->gen);
    free (l);
    volume_put (v);
    pthread_mutex_unlock (&st->lock);
    return r;
  }
  lin_link (st, l);
  log_info ("created volume %s (%s), %llu bytes%s%s%s", v->name, v->id, (unsigned long long) size,
            src ? ", a clone of " : "", src ? v->source : "", v->multi_attach ? ", multi-attach" : "");
  if (out)
    fill_info (v, out);
  pthread_mutex_unlock (&st->lock);
  return 0;
}

int
vol_rollback (struct vol_store *st, const char *name_or_id, const char *ref,
              struct vol_info *out, char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  if (v == NULL) {
    pthread_mutex_unlock (&st->lock);
    return -ENOENT;
  }
  char full[2 * VOL_NAME_MAX + 2];
  if (strchr (ref, '@') == NULL && strlen (ref) != VOL_ID_LEN)
    snprintf (full, sizeof full, "%s@%.63s", v->name, ref);
  else
    snprintf (full, sizeof full, "%.127s", ref);
  struct snapshot *s = find_snapshot_unlocked (st, full);
  if (s == NULL || strcmp (s->vol_id, v->id) != 0) {
    pthread_mutex_unlock (&st->lock);
    set_err (err, errlen, "volume \"%s\" has no snapshot \"%.120s\" (blockctl snapshot list %s)",
             v->name, ref, v->name);
    return -ENOENT;
  }
  pthread_mutex_lock (&v->lock);
  if (v->nsessions) {
    unsigned n = v->nsessions;
    set_err (err, errlen, "volume \"%s\" is in use by %u NBD connection%s; detach it before "
             "rolling back", v->name, n, n == 1 ? "" : "s");
    pthread_mutex_unlock (&v->lock);
    pthread_mutex_unlock (&st->lock);
    return -EBUSY;
  }
  /* The volume goes on as a new lineage reading through the snapshot; the
   * old lineage keeps the later snapshots and loses its live view. */
  struct lineage *old = v->lin, *l;
  ment_t **save = v->leaves;
  uint64_t save_n = v->nleaves, save_m = v->nmapped;
  v->leaves = NULL;
  v->nleaves = 0;
  int r = branch_from (st, v, s, &l, v);
  rocksdb_writebatch_t *wb = NULL;
  if (r == 0 && (r = map_grow (v, v->size)) == 0 && (r = lin_view_add (s->lin, s->gen)) == 0) {
    v->lin = l;
    wb = rocksdb_writebatch_create ();
    lin_put (st, wb, l);
    meta_put_volume (v, wb);
  }
  if (r < 0) {
    if (r == -ENOMEM)
      set_err (err, errlen, "out of memory");
    map_free (v);
    v->leaves = save;
    v->nleaves = save_n;
    v->nmapped = save_m;
    pthread_mutex_unlock (&v->lock);
    pthread_mutex_unlock (&st->lock);
    return r;
  }
  for (uint64_t i = 0; i < save_n; i++)
    free (save[i]);
  free (save);
  old->live = NULL;
  l->live = v;
  lin_link (st, l);
  pthread_mutex_unlock (&v->lock);
  log_info ("rolling volume %s back to %s@%s", v->name, s->vol_name, s->name);
  /* the new lineage and what only the old live view held: one batch */
  r = store_gc (st, wb, err, errlen);
  rocksdb_writebatch_destroy (wb);
  if (out)
    fill_info (v, out);
  pthread_mutex_unlock (&st->lock);
  return r < 0 ? r : 0;
}

/* ---- diff ------------------------------------------------------------------------ */

/* What a diff names: a snapshot (VOL@SNAP or an id) or a live volume, as a
 * view (lineage, generation) and its size.  Caller holds st->lock. */
struct view_ref {
  struct lineage *lin;
  uint32_t gen;
  uint64_t size;
};

static bool
resolve_view (struct vol_store *st, const char *ref, struct view_ref *out)
{
  struct snapshot *s = strchr (ref, '@') || strlen (ref) == VOL_ID_LEN
                         ? find_snapshot_unlocked (st, ref) : NULL;
  if (s) {
    *out = (struct view_ref) { .lin = s->lin, .gen = s->gen, .size = s->size };
    return true;
  }
  struct volume *v = find_volume_unlocked (st, ref);
  if (v) {
    *out = (struct view_ref) { .lin = v->lin, .gen = v->lin->cur_gen, .size = v->size };
    return true;
  }
  return false;
}

/* Do two views share any history (a lineage in both their chains)? */
static bool
related (struct lineage *a, struct lineage *b)
{
  for (struct lineage *x = a; x; x = x->base)
    for (struct lineage *y = b; y; y = y->base)
      if (x == y)
        return true;
  return false;
}

int
vol_diff (struct vol_store *st, const char *from, const char *to, vol_range_fn fn, void *opaque,
          char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct view_ref va, vb;
  bool fa = resolve_view (st, from, &va), fb = fa && resolve_view (st, to, &vb);
  if (!fa || !fb) {
    pthread_mutex_unlock (&st->lock);
    set_err (err, errlen, "\"%.120s\" is neither a snapshot (VOL@SNAP) nor a volume",
             fa ? to : from);
    return -ENOENT;
  }
  if (!related (va.lin, vb.lin)) {
    pthread_mutex_unlock (&st->lock);
    set_err (err, errlen, "%.120s and %.120s do not come from the same volume: there is no "
             "history to compare (diff a snapshot with a later snapshot or its volume)", from, to);
    return -EINVAL;
  }
  uint64_t size = va.size > vb.size ? va.size : vb.size;
  uint64_t nchunks = (size + st->chunk_size - 1) >> st->chunk_shift;
  ment_t **a = NULL, **b = NULL;
  uint64_t na = 0, nb = 0;
  int r = view_materialize (va.lin, va.gen, nchunks, &a, &na, false, NULL, NULL);
  if (r == 0)
    r = view_materialize (vb.lin, vb.gen, nchunks, &b, &nb, false, NULL, NULL);
  pthread_mutex_unlock (&st->lock);
  if (r == 0) {
    uint64_t start = 0, len = 0;
    for (uint64_t c = 0; c < nchunks && r == 0; c++) {
      uint64_t i = c >> LEAF_SHIFT, j = c & (LEAF_ENTRIES - 1);
      uint32_t pa = a[i] ? ME_PHYS1 (a[i][j]) : 0, pb = b[i] ? ME_PHYS1 (b[i][j]) : 0;
      bool differ = pa != pb;     /* every entry owns its chunk: same chunk, same data */
      if (differ && len && start + len == c << st->chunk_shift)
        len += st->chunk_size;
      else if (differ) {
        if (len)
          r = fn (opaque, start, len);
        start = c << st->chunk_shift;
        len = st->chunk_size;
      }
    }
    if (len && r == 0) {
      if (start + len > size)
        len = size - start;
      r = fn (opaque, start, len);
    }
  }
  for (uint64_t i = 0; i < na; i++)
    free (a[i]);
  for (uint64_t i = 0; i < nb; i++)
    free (b[i]);
  free (a);
  free (b);
  return r;
}
