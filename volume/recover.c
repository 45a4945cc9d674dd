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

#define FORMAT_VERSION 1

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

static struct volume *
find_by_uuid (struct vol_store *st, const unsigned char *u)
{
  for (size_t i = 0; i < st->nvols; i++)
    if (memcmp (st->vols[i]->uuid, u, 16) == 0)
      return st->vols[i];
  return NULL;
}

static int
load_volumes (struct vol_store *st)
{
  rocksdb_iterator_t *it = rocksdb_create_iterator (st->db, st->ropts);
  int r = 0;
  for (rocksdb_iter_seek (it, "V", 1); rocksdb_iter_valid (it); rocksdb_iter_next (it)) {
    size_t klen, vlen;
    const char *k = rocksdb_iter_key (it, &klen);
    if (klen == 0 || k[0] != 'V')
      break;
    const char *val = rocksdb_iter_value (it, &vlen);
    json_object *o = parse_json (val, vlen);
    struct volume *v = calloc (1, sizeof *v);
    if (o == NULL || v == NULL) {
      log_error ("volume record %.*s is corrupt; skipped", (int) klen, k);
      json_object_put (o);
      free (v);
      continue;
    }
    v->st = st;
    atomic_init (&v->refs, 1);
    pthread_mutex_init (&v->lock, NULL);
    snprintf (v->id, sizeof v->id, "%s", jstr (o, "id"));
    snprintf (v->name, sizeof v->name, "%s", jstr (o, "name"));
    snprintf (v->type, sizeof v->type, "%s", jstr (o, "type"));
    v->size = (uint64_t) jint (o, "size");
    v->created = jint (o, "created");
    json_object_put (o);
    uuid_parse (v->id, v->uuid);
    uint64_t nchunks = (v->size + st->chunk_size - 1) >> st->chunk_shift;
    v->nleaves = (nchunks + LEAF_ENTRIES - 1) >> LEAF_SHIFT;
    v->leaves = calloc (v->nleaves ? v->nleaves : 1, sizeof *v->leaves);
    if (st->nvols == st->capvols) {
      st->capvols = st->capvols ? 2 * st->capvols : 16;
      st->vols = realloc (st->vols, st->capvols * sizeof *st->vols);
    }
    if (v->leaves == NULL || st->vols == NULL) {
      r = -ENOMEM;
      break;
    }
    st->vols[st->nvols++] = v;
  }
  rocksdb_iter_destroy (it);
  return r;
}

/* Walk every chunk map entry.  fix: repair (delete orphans and duplicates)
 * as recovery does; otherwise only count problems (for --check). */
static long
load_maps (struct vol_store *st, bool fix, FILE *report)
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
    struct volume *v = NULL;
    uint64_t chunk = 0;
    uint32_t phys = 0;
    if (klen != 25 || vlen != 4)
      why = "malformed entry";
    else {
      for (int i = 0; i < 8; i++)
        chunk = chunk << 8 | (unsigned char) k[17 + i];
      phys = (uint32_t) val[0] << 24 | (uint32_t) val[1] << 16 | (uint32_t) val[2] << 8 | val[3];
      v = find_by_uuid (st, (const unsigned char *) k + 1);
      if (v == NULL)
        why = "entry of a volume that does not exist";
      else if ((chunk << st->chunk_shift) >= v->size)
        why = "entry beyond the end of its volume";
      else if (phys >= st->nchunks)
        why = "entry points beyond the pool";
      else if (bit_test_and_set (st->bitmap, phys))
        why = "chunk owned twice";
    }
    if (why) {
      problems++;
      if (report)
        fprintf (report, "chunk map: %s (volume %s, chunk %llu, pool chunk %u)\n", why,
                 v ? v->name : "?", (unsigned long long) chunk, phys);
      if (fix)
        rocksdb_writebatch_delete (wb, k, klen);
      continue;
    }
    map_set (v, chunk, phys + 1);
  }
  rocksdb_iter_destroy (it);
  if (fix && problems) {
    char *dberr = NULL;
    rocksdb_write (st->db, st->wopts, wb, &dberr);
    if (dberr) {
      log_error ("repairing chunk maps: %s", dberr);
      free (dberr);
    }
    log_warn ("recovery removed %ld stale chunk map entries", problems);
  }
  rocksdb_writebatch_destroy (wb);
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
  if ((r = load_volumes (st)) < 0) {
    set_err (err, errlen, "out of memory loading volumes");
    return r;
  }
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
  load_maps (st, true, NULL);
  punch_free (st);
  if ((r = sync_start (st)) < 0) {
    set_err (err, errlen, "cannot start the sync thread: %s", strerror (-r));
    store_free (st);
    return r;
  }
  log_info ("store %s: %zu volumes, pool %llu bytes in %llu chunks of %u bytes, %llu free, "
            "O_DIRECT alignment %u", st->dir, st->nvols,
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
  int r = sync_now (st);
  if (r < 0)
    log_error ("final sync of %s failed: %s", st->dir, strerror (-r));
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
  long problems = load_maps (st, false, out);
  uint64_t used = 0, mapped = 0;
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
    mapped += v->nmapped;
  }
  if (mapped != used) {
    fprintf (out, "chunk counts disagree: %llu mapped, %llu in use\n",
             (unsigned long long) mapped, (unsigned long long) used);
    problems++;
  }
  fprintf (out, "check %s: %zu volumes, %llu of %llu chunks in use (%u bytes each): %s\n",
           dir, st->nvols, (unsigned long long) used, (unsigned long long) st->nchunks,
           st->chunk_size, problems ? "PROBLEMS FOUND" : "consistent");
  store_free (st);
  return problems ? 1 : 0;
}
