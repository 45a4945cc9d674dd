/* volume/recover.c — opening a store (new or after any crash), closing it,
 * and checking its invariants (blockd --check). */
#include "volume/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define FORMAT_VERSION 2

/* Returns the old bit. */
static bool
bit_test_and_set (uint64_t *bm, uint64_t i)
{
  bool old = bm[i >> 6] >> (i & 63) & 1;
  bm[i >> 6] |= 1ULL << (i & 63);
  return old;
}

static int
mkdir_p (const char *dir)
{
  char tmp[256];
  snprintf (tmp, sizeof tmp, "%s", dir);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      if (mkdir (tmp, 0755) < 0 && errno != EEXIST)
        return -errno;
      *p = '/';
    }
  if (mkdir (tmp, 0755) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

static char *
db_get (rocksdb_t *db, rocksdb_readoptions_t *ro, const char *key, size_t klen, size_t *vlen)
{
  char *dberr = NULL;
  char *v = rocksdb_get (db, ro, key, klen, vlen, &dberr);
  if (dberr) {
    log_error ("metadata read failed: %s", dberr);
    free (dberr);
    return NULL;
  }
  return v;
}

static json_object *
parse_json (const char *v, size_t len)
{
  json_tokener *tok = json_tokener_new ();
  json_object *o = json_tokener_parse_ex (tok, v, (int) len);
  json_tokener_free (tok);
  return o;
}

static int64_t
jint (json_object *o, const char *k)
{
  json_object *x;
  return json_object_object_get_ex (o, k, &x) ? json_object_get_int64 (x) : 0;
}

static const char *
jstr (json_object *o, const char *k)
{
  json_object *x;
  return json_object_object_get_ex (o, k, &x) ? json_object_get_string (x) : "";
}

static rocksdb_t *
open_db (const char *dir, rocksdb_options_t **optsp, bool create, char *err, size_t errlen)
{
  char path[300];
  snprintf (path, sizeof path, "%s/meta", dir);
  rocksdb_options_t *o = rocksdb_options_create ();
  rocksdb_options_set_create_if_missing (o, create);
  rocksdb_options_set_max_background_jobs (o, 2);
  rocksdb_options_set_write_buffer_size (o, 16 << 20);
  rocksdb_options_set_keep_log_file_num (o, 4);
  rocksdb_options_set_info_log_level (o, 3);   /* errors only in the LOG file */
  char *dberr = NULL;
  /* --check opens read-only: no lock, so it can look at a live store too */
  rocksdb_t *db = create ? rocksdb_open (o, path, &dberr)
                         : rocksdb_open_for_read_only (o, path, 0, &dberr);
  if (dberr) {
    if (strstr (dberr, "lock"))
      set_err (err, errlen, "data directory %s is in use by another blockd (%s)", dir, dberr);
    else
      set_err (err, errlen, "cannot open metadata in %s: %s", path, dberr);
    free (dberr);
    rocksdb_options_destroy (o);
    return NULL;
  }
  *optsp = o;
  return db;
}

/* Store parameters: read them, or write them for a new store. */
static int
load_super (struct vol_store *st, const struct vol_store_params *p, uint64_t *capacity,
            char *err, size_t errlen)
{
  size_t len;
  char *v = db_get (st->db, st->ropts, "S", 1, &len);
  if (v) {
    json_object *o = parse_json (v, len);
    free (v);
    if (o == NULL) {
      set_err (err, errlen, "store parameters in %s/meta are corrupt", st->dir);
      return -EIO;
    }
    int64_t fmt = jint (o, "format");
    st->chunk_size = (uint32_t) jint (o, "chunk_size");
    *capacity = (uint64_t) jint (o, "capacity");
    json_object_put (o);
    if (fmt != FORMAT_VERSION) {
      set_err (err, errlen, "store in %s has format %lld; this blockd reads format %d",
               st->dir, (long long) fmt, FORMAT_VERSION);
      return -EINVAL;
    }
    if (p->chunk_size && p->chunk_size != st->chunk_size)
      log_warn ("store %s has chunk size %u; ignoring the requested %u", st->dir,
                st->chunk_size, p->chunk_size);
    return 0;
  }
  st->chunk_size = p->chunk_size ? p->chunk_size : VOL_DEFAULT_CHUNK;
  *capacity = 0;
  return 1;   /* new store */
}

/* Key "C" is present while the store is closed cleanly: written, synced,
 * by vol_store_close after its last collection; deleted, synced, when the
 * store is opened.  --check holds a store that has it to a stricter rule:
 * no entry may be left for the start-up collection. */
static int
set_clean (struct vol_store *st, bool clean)
{
  char *dberr = NULL;
  rocksdb_writeoptions_t *w = rocksdb_writeoptions_create ();
  rocksdb_writeoptions_set_sync (w, 1);
  if (clean)
    rocksdb_put (st->db, w, "C", 1, "1", 1, &dberr);
  else
    rocksdb_delete (st->db, w, "C", 1, &dberr);
  rocksdb_writeoptions_destroy (w);
  if (dberr) {
    log_error ("%s the clean-stop mark: %s", clean ? "writing" : "clearing", dberr);
    free (dberr);
    return -EIO;
  }
  return 0;
}

static bool
closed_clean (struct vol_store *st)
{
  size_t len = 0;
  char *v = db_get (st->db, st->ropts, "C", 1, &len);
  free (v);
  return v != NULL;
}

static int
save_super (struct vol_store *st)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "format", json_object_new_int (FORMAT_VERSION));
  json_object_object_add (o, "chunk_size", json_object_new_int64 (st->chunk_size));
  json_object_object_add (o, "capacity", json_object_new_int64 ((int64_t) (st->nchunks << st->chunk_shift)));
  const char *s = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN);
  char *dberr = NULL;
  rocksdb_writeoptions_t *w = rocksdb_writeoptions_create ();
  rocksdb_writeoptions_set_sync (w, 1);
  rocksdb_put (st->db, w, "S", 1, s, strlen (s), &dberr);
  rocksdb_writeoptions_destroy (w);
  json_object_put (o);
  if (dberr) {
    log_error ("writing store parameters: %s", dberr);
    free (dberr);
    return -EIO;
  }
  return 0;
}

static uint32_t
probe_dio_align (int fd)
{
#ifdef STATX_DIOALIGN
  struct statx stx;
  if (statx (fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0
      && (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
    return stx.stx_dio_offset_align < 512 ? 512 : stx.stx_dio_offset_align;
#endif
  (void) fd;
  return 4096;
}

static int
open_pool (struct vol_store *st, uint64_t want, uint64_t recorded, char *err, size_t errlen)
{
  char path[300];
  snprintf (path, sizeof path, "%s/pool.dat", st->dir);
  st->pool_fd = open (path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (st->pool_fd < 0 && errno == EINVAL) {
    /* tmpfs and a few others refuse O_DIRECT: work, but say what it costs */
    log_warn ("%s: the filesystem refuses O_DIRECT; using the page cache (slower, "
              "and FLUSH has to write it back)", path);
    st->pool_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    st->ahead_off = true;         /* what it is for is O_DIRECT's (store.c) */
  }
  if (st->pool_fd < 0) {
    set_err (err, errlen, "cannot open pool file %s: %s", path, strerror (errno));
    return -errno;
  }
  st->dio_align = probe_dio_align (st->pool_fd);

  uint64_t cap = recorded;
  if (want > recorded)
    cap = want;                   /* a larger --capacity grows the pool */
  else if (want && want < recorded)
    log_warn ("pool %s is %llu bytes; --capacity %llu ignored (pools cannot shrink)",
              path, (unsigned long long) recorded, (unsigned long long) want);
  if (cap == 0) {
    /* Fit the disk: 90% of the space free now. */
    struct statvfs sv;
    if (fstatvfs (st->pool_fd, &sv) < 0) {
      set_err (err, errlen, "cannot stat %s: %s", st->dir, strerror (errno));
      return -errno;
    }
    cap = (uint64_t) sv.f_bavail * sv.f_frsize / 10 * 9;
    log_info ("pool capacity not set: using %llu bytes (90%% of the free space in %s)",
              (unsigned long long) cap, st->dir);
  }
  st->nchunks = cap >> st->chunk_shift;
  if (st->nchunks == 0) {
    set_err (err, errlen, "capacity %llu is smaller than one chunk (%u bytes)",
             (unsigned long long) cap, st->chunk_size);
    return -EINVAL;
  }
  if (st->nchunks > UINT32_MAX - 1) {
    set_err (err, errlen, "capacity %llu is too large for chunk size %u",
             (unsigned long long) cap, st->chunk_size);
    return -EINVAL;
  }
  if (ftruncate (st->pool_fd, (off_t) (st->nchunks << st->chunk_shift)) < 0) {
    set_err (err, errlen, "cannot size pool file %s: %s", path, strerror (errno));
    return -errno;
  }
  return 0;
}

/* ---- loading the records ------------------------------------------------------ */
static struct lineage *
find_lineage (struct vol_store *st, const char *id)
{
  for (struct lineage *l = st->lineages; l; l = l->next)
    if (strcmp (l->id, id) == 0)
      return l;
  return NULL;
}

static struct lineage *
find_lineage_uuid (struct vol_store *st, const unsigned char *u)
{
  for (struct lineage *l = st->lineages; l; l = l->next)
    if (memcmp (l->uuid, u, 16) == 0)
      return l;
  return NULL;
}

typedef int (*record_fn) (struct vol_store *st, json_object *o, FILE *report, long *problems);

static int
for_records (struct vol_store *st, char prefix, record_fn fn, FILE *report, long *problems)
{
  rocksdb_iterator_t *it = rocksdb_create_iterator (st->db, st->ropts);
  int r = 0;
  for (rocksdb_iter_seek (it, &prefix, 1); r == 0 && rocksdb_iter_valid (it); rocksdb_iter_next (it)) {
    size_t klen, vlen;
    const char *k = rocksdb_iter_key (it, &klen);
    if (klen == 0 || k[0] != prefix)
      break;
    const char *val = rocksdb_iter_value (it, &vlen);
    json_object *o = parse_json (val, vlen);
    if (o == NULL) {
      (*problems)++;
      if (report)
        fprintf (report, "record %.*s is corrupt\n", (int) klen, k);
      log_error ("record %.*s is corrupt; skipped", (int) klen, k);
      continue;
    }
    r = fn (st, o, report, problems);
    json_object_put (o);
  }
  rocksdb_iter_destroy (it);
  return r;
}

static int
load_lineage (struct vol_store *st, json_object *o, FILE *report, long *problems)
{
  struct lineage *l = calloc (1, sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  snprintf (l->id, sizeof l->id, "%s", jstr (o, "id"));
  if (uuid_parse (l->id, l->uuid) < 0) {
    free (l);
    (*problems)++;
    if (report)
      fprintf (report, "lineage record with a bad id\n");
    return 0;
  }
  l->base_gen = (uint32_t) jint (o, "base_gen");
  l->cur_gen = (uint32_t) jint (o, "cur_gen");
  /* the base is resolved once every lineage is loaded: keep its id here */
  l->base = (struct lineage *) strdup (jstr (o, "base"));
  l->next = st->lineages;
  st->lineages = l;
  return 0;
}

static int
load_volume (struct vol_store *st, json_object *o, FILE *report, long *problems)
{
  struct volume *v = volume_new (st);
  if (v == NULL)
    return -ENOMEM;
  snprintf (v->id, sizeof v->id, "%s", jstr (o, "id"));
  snprintf (v->name, sizeof v->name, "%s", jstr (o, "name"));
  snprintf (v->type, sizeof v->type, "%s", jstr (o, "type"));
  snprintf (v->source, sizeof v->source, "%s", jstr (o, "source"));
  v->size = (uint64_t) jint (o, "size");
  v->created = jint (o, "created");
  uuid_parse (v->id, v->uuid);
  int bad = attach_from_json (v, o);
  if (bad) {
    (*problems)++;
    if (report)
      fprintf (report, "volume %s (%s): %d invalid attachment record%s dropped\n", v->name, v->id,
               bad, bad == 1 ? "" : "s");
  }
  v->lin = find_lineage (st, jstr (o, "lineage"));
  if (v->lin == NULL || v->lin->live) {
    (*problems)++;
    if (report)
      fprintf (report, "volume %s (%s): lineage %s missing or shared\n", v->name, v->id,
               jstr (o, "lineage"));
    log_error ("volume %s: its lineage is missing; skipped", v->name);
    volume_put (v);
    return 0;
  }
  v->lin->live = v;
  if (map_grow (v, v->size) < 0 || registry_add (st, v) < 0) {
    volume_put (v);
    return -ENOMEM;
  }
  return 0;
}

static int
load_snapshot (struct vol_store *st, json_object *o, FILE *report, long *problems)
{
  struct snapshot *s = calloc (1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  snprintf (s->id, sizeof s->id, "%s", jstr (o, "id"));
  snprintf (s->name, sizeof s->name, "%s", jstr (o, "name"));
  snprintf (s->vol_name, sizeof s->vol_name, "%s", jstr (o, "volume"));
  snprintf (s->vol_id, sizeof s->vol_id, "%s", jstr (o, "volume_id"));
  uuid_parse (s->id, s->uuid);
  s->gen = (uint32_t) jint (o, "gen");
  s->size = (uint64_t) jint (o, "size");
  s->created = jint (o, "created");
  s->lin = find_lineage (st, jstr (o, "lineage"));
  if (s->lin == NULL || s->gen == 0 || s->gen >= s->lin->cur_gen) {
    (*problems)++;
    if (report)
      fprintf (report, "snapshot %s@%s: lineage %s missing, or generation %u invalid\n",
               s->vol_name, s->name, jstr (o, "lineage"), s->gen);
    free (s);
    return 0;
  }
  if (lin_view_add (s->lin, s->gen) < 0) {
    free (s);
    return -ENOMEM;
  }
  s->next = st->snaps;
  st->snaps = s;
  return 0;
}

/* Resolve bases (held as id strings while loading). */
static void
link_lineages (struct vol_store *st, FILE *report, long *problems)
{
  for (struct lineage *l = st->lineages; l; l = l->next) {
    char *bid = (char *) l->base;
    l->base = NULL;
    if (bid && *bid) {
      l->base = find_lineage (st, bid);
      if (l->base == NULL) {
        (*problems)++;
        if (report)
          fprintf (report, "lineage %s: base lineage %s missing\n", l->id, bid);
        log_error ("lineage %s: its base %s is missing; its clone data is lost", l->id, bid);
      }
    }
    free (bid);
  }
  for (struct lineage *l = st->lineages; l; l = l->next)
    if (l->base) {
      l->base->nchildren++;
      lin_view_add (l->base, l->base_gen);
    }
}

/* Walk every chunk map entry.  fix: repair (delete orphans and duplicates)
 * as recovery does; otherwise only count problems (for --check). */
static long
load_entries (struct vol_store *st, bool fix, FILE *report)
{
  long problems = 0;
  rocksdb_iterator_t *it = rocksdb_create_iterator (st->db, st->ropts);
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create ();
  for (rocksdb_iter_seek (it, "M", 1); rocksdb_iter_valid (it); rocksdb_iter_next (it)) {
    size_t klen, vlen;
    const char *k = rocksdb_iter_key (it, &klen);
    if (klen == 0 || k[0] != 'M')
      break;
    const unsigned char *val = (const unsigned char *) rocksdb_iter_value (it, &vlen);
    const char *why = NULL;
    struct lineage *l = NULL;
    uint64_t chunk = 0;
    uint32_t gen = 0, phys = 0;
    if (klen != 29 || vlen != 4)
      why = "malformed entry";
    else {
      for (int i = 0; i < 8; i++)
        chunk = chunk << 8 | (unsigned char) k[17 + i];
      for (int i = 0; i < 4; i++)
        gen = gen << 8 | (unsigned char) k[25 + i];
      phys = (uint32_t) val[0] << 24 | (uint32_t) val[1] << 16 | (uint32_t) val[2] << 8 | val[3];
      l = find_lineage_uuid (st, (const unsigned char *) k + 1);
      if (l == NULL)
        why = "entry of a lineage that does not exist";
      else if (gen == 0 || gen > l->cur_gen)
        why = "entry with an invalid generation";
      else if (phys != TOMB && phys >= st->nchunks)
        why = "entry points beyond the pool";
      else if (phys != TOMB && bit_test_and_set (st->bitmap, phys))
        why = "chunk owned twice";
    }
    if (why) {
      problems++;
      if (report)
        fprintf (report, "chunk map: %s (lineage %s, chunk %llu, generation %u, pool chunk %u)\n",
                 why, l ? l->id : "?", (unsigned long long) chunk, gen, phys);
      if (fix)
        rocksdb_writebatch_delete (wb, k, klen);
      continue;
    }
    if (lin_hist_set (l, chunk, gen, phys) < 0) {
      problems++;
      break;
    }
  }
  rocksdb_iter_destroy (it);
  if (fix && problems) {
    char *dberr = NULL;
    rocksdb_write (st->db, st->wopts, wb, &dberr);
    if (dberr) {
      log_error ("repairing chunk maps: %s", dberr);
      free (dberr);
    }
    log_warn ("recovery removed %ld bad chunk map entries", problems);
  }
  rocksdb_writebatch_destroy (wb);
  return problems;
}

/* Every live volume's chunk map, from its lineage. */
static int
build_live_maps (struct vol_store *st)
{
  for (size_t i = 0; i < st->nvols; i++) {
    struct volume *v = st->vols[i];
    uint64_t nchunks = (v->size + st->chunk_size - 1) >> st->chunk_shift;
    ment_t **lv;
    uint64_t nl, own;
    int r = view_materialize (v->lin, v->lin->cur_gen, nchunks, &lv, &nl, false, &own, v);
    if (r < 0)
      return r;
    map_free (v);
    v->leaves = lv;
    v->nleaves = nl;
    v->nmapped = own;
  }
  return 0;
}

static long
load_all (struct vol_store *st, bool fix, FILE *report)
{
  long problems = 0;
  if (for_records (st, 'L', load_lineage, report, &problems) < 0)
    return -ENOMEM;
  link_lineages (st, report, &problems);
  if (for_records (st, 'V', load_volume, report, &problems) < 0
      || for_records (st, 'P', load_snapshot, report, &problems) < 0)
    return -ENOMEM;
  problems += load_entries (st, fix, report);
  if (build_live_maps (st) < 0)
    return -ENOMEM;
  return problems;
}

/* Punch every free range of the pool so reused chunks read as zeros. */
static void
punch_free (struct vol_store *st)
{
  uint64_t i = 0, nfree = 0;
  while (i < st->nchunks) {
    if (st->bitmap[i >> 6] >> (i & 63) & 1) { i++; continue; }
    uint64_t j = i;
    while (j < st->nchunks && !(st->bitmap[j >> 6] >> (j & 63) & 1))
      j++;
    if (fallocate (st->pool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   (off_t) (i << st->chunk_shift), (off_t) ((j - i) << st->chunk_shift)) < 0)
      log_warn ("punching free space in the pool: %s", strerror (errno));
    nfree += j - i;
    i = j;
  }
  st->nfree = nfree;
}

static struct vol_store *
store_alloc (const char *dir)
{
  struct vol_store *st = calloc (1, sizeof *st);
  if (st == NULL)
    return NULL;
  snprintf (st->dir, sizeof st->dir, "%s", dir);
  st->pool_fd = -1;
  st->ahead_group = UINT64_MAX;
  pthread_mutex_init (&st->lock, NULL);
  pthread_mutex_init (&st->alloc_lock, NULL);
  st->wopts = rocksdb_writeoptions_create ();
  st->ropts = rocksdb_readoptions_create ();
  return st;
}

static void
store_free (struct vol_store *st)
{
  for (size_t i = 0; i < st->nvols; i++)
    volume_put (st->vols[i]);
  free (st->vols);
  while (st->snaps) {
    struct snapshot *s = st->snaps;
    st->snaps = s->next;
    if (s->view)
      volume_put (s->view);
    free (s);
  }
  while (st->lineages) {
    struct lineage *l = st->lineages;
    st->lineages = l->next;
    lin_free (l);
  }
  if (st->db)
    rocksdb_close (st->db);
  if (st->dbopts)
    rocksdb_options_destroy (st->dbopts);
  rocksdb_writeoptions_destroy (st->wopts);
  rocksdb_readoptions_destroy (st->ropts);
  if (st->pool_fd >= 0)
    close (st->pool_fd);
  free (st->bitmap);
  free (st->limbo);
  free ((void *) st->pins);
  pthread_mutex_destroy (&st->lock);
  pthread_mutex_destroy (&st->alloc_lock);
  free (st);
}

static int
store_load (struct vol_store *st, const struct vol_store_params *p, bool create,
            char *err, size_t errlen)
{
  int r;
  if (create && (r = mkdir_p (st->dir)) < 0) {
    set_err (err, errlen, "cannot create data directory %s: %s", st->dir, strerror (-r));
    return r;
  }
  st->db = open_db (st->dir, &st->dbopts, create, err, errlen);
  if (st->db == NULL)
    return -EIO;
  uint64_t recorded;
  int is_new = load_super (st, p, &recorded, err, errlen);
  if (is_new < 0)
    return is_new;
  if (is_new && !create) {
    set_err (err, errlen, "%s holds no blockd store", st->dir);
    return -ENOENT;
  }
  if (st->chunk_size < 4096 || (st->chunk_size & (st->chunk_size - 1))
      || st->chunk_size > (64u << 20)) {
    set_err (err, errlen, "chunk size %u is invalid (a power of two from 4K to 64M)",
             st->chunk_size);
    return -EINVAL;
  }
  st->chunk_shift = (uint32_t) __builtin_ctz (st->chunk_size);
  if (!create)
    st->nchunks = recorded >> st->chunk_shift;
  else if ((r = open_pool (st, p->capacity, recorded, err, errlen)) < 0)
    return r;
  if ((is_new || (st->nchunks << st->chunk_shift) != recorded) && create
      && (r = save_super (st)) < 0) {
    set_err (err, errlen, "cannot write store parameters in %s", st->dir);
    return r;
  }
  st->bitmap = calloc ((st->nchunks + 63) / 64, sizeof (uint64_t));
  st->pins = calloc (st->nchunks, sizeof (uint32_t));
  if (st->bitmap == NULL || st->pins == NULL)
    return -ENOMEM;
  return 0;
}

int
vol_store_open (const struct vol_store_params *p, struct vol_store **out, char *err, size_t errlen)
{
  struct vol_store *st = store_alloc (p->dir);
  if (st == NULL)
    return -ENOMEM;
  int r = store_load (st, p, true, err, errlen);
  if (r < 0) {
    store_free (st);
    return r;
  }
  if (load_all (st, true, NULL) < 0) {
    set_err (err, errlen, "out of memory loading the store");
    store_free (st);
    return -ENOMEM;
  }
  /* whatever a crash left half-collected (a delete's garbage) goes now */
  pthread_mutex_lock (&st->lock);
  r = store_gc (st, NULL, err, errlen);
  pthread_mutex_unlock (&st->lock);
  if (r < 0)
    log_warn ("collecting unused space at start-up: %s", err);
  if (set_clean (st, false) < 0) {
    set_err (err, errlen, "cannot write to the metadata store in %s", st->dir);
    store_free (st);
    return -EIO;
  }
  punch_free (st);
  if ((r = sync_start (st)) < 0) {
    set_err (err, errlen, "cannot start the sync thread: %s", strerror (-r));
    store_free (st);
    return r;
  }
  unsigned nsnaps = 0;
  for (struct snapshot *s = st->snaps; s; s = s->next)
    nsnaps++;
  log_info ("store %s: %zu volumes, %u snapshots, pool %llu bytes in %llu chunks of %u bytes, %llu free, "
            "O_DIRECT alignment %u", st->dir, st->nvols, nsnaps,
            (unsigned long long) (st->nchunks << st->chunk_shift),
            (unsigned long long) st->nchunks, st->chunk_size,
            (unsigned long long) st->nfree, st->dio_align);
  *out = st;
  return 0;
}

int
vol_store_sync (struct vol_store *st)
{
  return sync_now (st);
}

void
vol_store_close (struct vol_store *st)
{
  sync_stop (st);
  /* a full collection, not only when a write asked for one: the clean
   * mark promises that nothing is left for the next start */
  char err[300];
  pthread_mutex_lock (&st->lock);
  int g = store_gc (st, NULL, err, sizeof err);
  pthread_mutex_unlock (&st->lock);
  if (g < 0)
    log_warn ("collecting unused chunks at stop: %s (the next start does it)", err);
  int r = sync_now (st);
  if (r < 0)
    log_error ("final sync of %s failed: %s", st->dir, strerror (-r));
  else if (g == 0)
    set_clean (st, true);
  store_free (st);
}

int
vol_store_check (const char *dir, FILE *out)
{
  char err[512] = "";
  struct vol_store_params p = { .dir = dir };
  struct vol_store *st = store_alloc (dir);
  if (st == NULL)
    return -ENOMEM;
  int r = store_load (st, &p, false, err, sizeof err);
  if (r < 0) {
    fprintf (out, "check: %s\n", err);
    store_free (st);
    return r;
  }
  long problems = load_all (st, false, out);
  if (problems < 0) {
    fprintf (out, "check: out of memory\n");
    store_free (st);
    return -ENOMEM;
  }
  uint64_t used = 0;
  for (uint64_t i = 0; i < st->nchunks; i++)
    used += st->bitmap[i >> 6] >> (i & 63) & 1;
  for (size_t i = 0; i < st->nvols; i++) {
    struct volume *v = st->vols[i];
    const char *why = vol_name_invalid (v->name);
    if (why == NULL)
      why = vol_size_invalid (v->size);
    if (why) {
      fprintf (out, "volume %s: %s\n", v->id, why);
      problems++;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp (st->vols[j]->name, v->name) == 0) {
        fprintf (out, "volume name %s is used twice\n", v->name);
        problems++;
      }
  }
  for (struct lineage *l = st->lineages; l; l = l->next) {
    if (!l->live && !l->nv && !l->nchildren) {
      fprintf (out, "lineage %s is not used by any volume, snapshot or clone%s\n", l->id,
               lin_empty (l) ? "" : " and holds data");
      problems++;
    }
  }
  /* Every chunk in use must be seen by some volume or snapshot.  A
   * copy-on-write can leave an older entry that nobody sees; the running
   * daemon collects it within a second or so, and a crash in between
   * leaves it to the collection at start-up.  After a crash that is not a
   * problem; after a clean stop, which collects first, it is.  An entry
   * the collection would keep is a problem either way. */
  bool clean = closed_clean (st);
  long freed = store_gc_in_memory (st);
  if (freed > 0 && clean) {
    fprintf (out, "%ld pool chunks are held by entries no volume or snapshot sees, after a "
             "clean stop (leaked space; blockd frees them when it next starts)\n", freed);
    problems++;
  }
  else if (freed > 0)
    fprintf (out, "%ld pool chunks are held by entries no volume or snapshot sees any more "
             "(left by a crash); blockd frees them when it next starts\n", freed);
  struct holders h;
  if (holders_compute (st, &h) == 0) {
    if (h.leaked) {
      fprintf (out, "%llu chunks are held by entries no volume or snapshot sees, and the "
               "collection at start-up would keep them (leaked space)\n",
               (unsigned long long) h.leaked);
      problems++;
    }
    holders_free (&h);
  }
  unsigned nsnaps = 0;
  for (struct snapshot *s = st->snaps; s; s = s->next)
    nsnaps++;
  fprintf (out, "check %s (%s): %zu volumes, %u snapshots, %llu of %llu chunks in use "
           "(%u bytes each): %s\n", dir, clean ? "stopped cleanly" : "not stopped cleanly",
           st->nvols, nsnaps, (unsigned long long) used, (unsigned long long) st->nchunks,
           st->chunk_size, problems ? "PROBLEMS FOUND" : "consistent");
  store_free (st);
  return problems ? 1 : 0;
}
