/* blockd/api.c — the HTTP/JSON API (docs/API.md), on libmicrohttpd's own
 * thread.  It only manages volumes: no data goes through it. */
#include "blockd/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/size.h"

#define MAX_BODY (64 * 1024)

static struct MHD_Daemon *api_daemon;

struct req_ctx {
  char *body;
  size_t len;
  bool too_big;
  bool responded;               /* answered early (413): ignore the rest */
};

/* ---- responses --------------------------------------------------------------- */
static enum MHD_Result
send_json (struct MHD_Connection *conn, unsigned status, json_object *o)
{
  const char *s = o ? json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE) : "";
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (s), (void *) s,
                                                            MHD_RESPMEM_MUST_COPY);
  if (o)
    MHD_add_response_header (r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response (conn, status, r);
  MHD_destroy_response (r);
  json_object_put (o);
  return ret;
}

static const char *
code_of (unsigned status)
{
  switch (status) {
  case 400: return "invalid_argument";
  case 404: return "not_found";
  case 405: return "method_not_allowed";
  case 409: return "conflict";
  case 413: return "payload_too_large";
  case 507: return "no_space";
  default: return "internal";
  }
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t
utf8_len (const unsigned char *p, size_t n)
{
  unsigned c = p[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  else if ((c & 0xe0) == 0xc0) { len = 2; min = 0x80; c &= 0x1f; }
  else if ((c & 0xf0) == 0xe0) { len = 3; min = 0x800; c &= 0x0f; }
  else if ((c & 0xf8) == 0xf0) { len = 4; min = 0x10000; c &= 0x07; }
  else return 0;
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    c = c << 6 | (p[i] & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;  /* overlong, surrogate */
  return len;
}

/* Messages quote what the client sent: replace control characters and
 * bytes that are not UTF-8 so that the JSON body stays valid. */
static void
sanitize (char *s)
{
  size_t n = strlen (s);
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char) s[i];
    size_t l = utf8_len ((unsigned char *) s + i, n - i);
    if (l == 0 || c < 0x20 || c == 0x7f) {
      s[i] = '?';
      l = 1;
    }
    i += l;
  }
}

static enum MHD_Result
send_error (struct MHD_Connection *conn, unsigned status, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));
static enum MHD_Result
send_error (struct MHD_Connection *conn, unsigned status, const char *fmt, ...)
{
  char msg[1200];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  sanitize (msg);
  json_object *e = json_object_new_object ();
  json_object_object_add (e, "code", json_object_new_string (code_of (status)));
  json_object_object_add (e, "message", json_object_new_string (msg));
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "error", e);
  return send_json (conn, status, o);
}

static unsigned
status_of_errno (int err)
{
  switch (err) {
  case EINVAL: return 400;
  case ENOENT: return 404;
  case EEXIST: case EBUSY: return 409;
  case ENOSPC: return 507;
  default: return 500;
  }
}

/* Unix seconds as RFC 3339 UTC. */
static json_object *
json_time (int64_t secs)
{
  char buf[32];
  struct tm tm;
  time_t t = (time_t) secs;
  gmtime_r (&t, &tm);
  strftime (buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_object_new_string (buf);
}

static json_object *
volume_json (const struct vol_info *vi)
{
  char uri[400];
  blk_nbd_uri (vi->name, uri, sizeof uri);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "id", json_object_new_string (vi->id));
  json_object_object_add (o, "name", json_object_new_string (vi->name));
  json_object_object_add (o, "size", json_object_new_int64 ((int64_t) vi->size));
  json_object_object_add (o, "allocated", json_object_new_int64 ((int64_t) vi->allocated));
  json_object_object_add (o, "type", json_object_new_string (vi->type));
  json_object_object_add (o, "status", json_object_new_string (vol_status_name (vol_info_status (vi))));
  json_object_object_add (o, "created", json_time (vi->created));
  json_object_object_add (o, "connections", json_object_new_int ((int) vi->connections));
  json_object_object_add (o, "nbd_uri", json_object_new_string (uri));
  json_object_object_add (o, "source_snapshot",
                          vi->source[0] ? json_object_new_string (vi->source) : NULL);
  json_object_object_add (o, "snapshots", json_object_new_int ((int) vi->snapshots));
  json_object_object_add (o, "multi_attach", json_object_new_boolean (vi->multi_attach));
  json_object_object_add (o, "attached", json_object_new_boolean (vi->nattach > 0));
  json_object *arr = json_object_new_array ();
  for (unsigned i = 0; i < vi->nattach; i++) {
    json_object *a = json_object_new_object ();
    json_object_object_add (a, "instance", json_object_new_string (vi->attach[i].instance));
    json_object_object_add (a, "role", json_object_new_string (vol_role_name (vi->attach[i].role)));
    json_object_object_add (a, "since", json_time (vi->attach[i].since));
    json_object_array_add (arr, a);
  }
  json_object_object_add (o, "attachments", arr);
  return o;
}

/* A volume's I/O statistics (vol_stats_add): per kind of request, the
 * requests answered, bytes, errors, the microseconds they took and the
 * part of those spent on the store. */
static json_object *
stats_json (const struct vol_info *vi, const struct vol_stats *st)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "id", json_object_new_string (vi->id));
  json_object_object_add (o, "name", json_object_new_string (vi->name));
  json_object_object_add (o, "since", json_time (st->since));
  for (unsigned k = 0; k < VOL_STAT_KINDS; k++) {
    const struct vol_stat_count *n = &st->kind[k];
    json_object *c = json_object_new_object ();
    json_object_object_add (c, "ops", json_object_new_int64 ((int64_t) n->ops));
    json_object_object_add (c, "bytes", json_object_new_int64 ((int64_t) n->bytes));
    json_object_object_add (c, "errors", json_object_new_int64 ((int64_t) n->errors));
    json_object_object_add (c, "time_us", json_object_new_int64 ((int64_t) (n->time_ns / 1000)));
    json_object_object_add (c, "storage_time_us",
                            json_object_new_int64 ((int64_t) (n->storage_ns / 1000)));
    json_object_object_add (o, vol_stat_kind_name (k), c);
  }
  return o;
}

static enum MHD_Result
volume_stats (struct MHD_Connection *conn, const char *vol)
{
  char err[400];
  struct vol_info vi;
  struct vol_stats st;
  int r = vol_stats_get (blk_store, vol, &vi, &st, err, sizeof err);
  if (r < 0)
    return send_error (conn, status_of_errno (-r), "%s", err);
  return send_json (conn, 200, stats_json (&vi, &st));
}

/* GET /v1/stats: every volume's, by name (one call for a monitoring agent). */
static enum MHD_Result
all_stats (struct MHD_Connection *conn)
{
  struct vol_info_stats *vs;
  size_t n;
  if (vol_stats_list (blk_store, &vs, &n) < 0)
    return send_error (conn, 500, "out of memory listing volumes");
  json_object *arr = json_object_new_array ();
  for (size_t k = 0; k < n; k++)
    json_object_array_add (arr, stats_json (&vs[k].info, &vs[k].stats));
  free (vs);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "volumes", arr);
  return send_json (conn, 200, o);
}

static json_object *
snapshot_json (const struct vol_snap_info *si)
{
  char uri[400], full[2 * VOL_NAME_MAX + 2];
  snprintf (full, sizeof full, "%s@%s", si->vol_name, si->name);
  blk_nbd_uri (full, uri, sizeof uri);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "id", json_object_new_string (si->id));
  json_object_object_add (o, "name", json_object_new_string (si->name));
  json_object_object_add (o, "volume", json_object_new_string (si->vol_name));
  json_object_object_add (o, "volume_id", json_object_new_string (si->vol_id));
  json_object_object_add (o, "size", json_object_new_int64 ((int64_t) si->size));
  json_object_object_add (o, "created", json_time (si->created));
  json_object_object_add (o, "referenced", json_object_new_int64 ((int64_t) si->referenced));
  json_object_object_add (o, "exclusive", json_object_new_int64 ((int64_t) si->exclusive));
  json_object_object_add (o, "connections", json_object_new_int ((int) si->connections));
  json_object_object_add (o, "nbd_uri", json_object_new_string (uri));
  return o;
}

/* ---- request bodies ------------------------------------------------------------ */

/* Parse the body as a JSON object whose keys are all in allowed (NULL
 * terminated).  Returns the object, or NULL after sending a 400. */
static json_object *
parse_body (struct MHD_Connection *conn, struct req_ctx *rc, const char *const *allowed,
            enum MHD_Result *ret)
{
  if (rc->len == 0) {
    *ret = send_error (conn, 400, "request body is empty: send a JSON object");
    return NULL;
  }
  json_tokener *tok = json_tokener_new ();
  json_object *o = json_tokener_parse_ex (tok, rc->body, (int) rc->len);
  enum json_tokener_error jerr = json_tokener_get_error (tok);
  size_t used = json_tokener_get_parse_end (tok);
  json_tokener_free (tok);
  if (o == NULL || jerr != json_tokener_success) {
    json_object_put (o);
    *ret = send_error (conn, 400, "request body is not valid JSON: %s",
                       jerr == json_tokener_continue ? "it ends too early"
                                                     : json_tokener_error_desc (jerr));
    return NULL;
  }
  for (; used < rc->len; used++)
    if (!strchr (" \t\r\n", rc->body[used])) {
      json_object_put (o);
      *ret = send_error (conn, 400, "request body has data after the JSON object");
      return NULL;
    }
  if (!json_object_is_type (o, json_type_object)) {
    json_object_put (o);
    *ret = send_error (conn, 400, "request body must be a JSON object");
    return NULL;
  }
  json_object_object_foreach (o, key, val) {
    (void) val;
    bool ok = false;
    for (const char *const *a = allowed; *a; a++)
      ok |= strcmp (key, *a) == 0;
    if (!ok) {
      char list[128] = "";
      for (const char *const *a = allowed; *a; a++)
        snprintf (list + strlen (list), sizeof list - strlen (list), "%s%s",
                  a == allowed ? "" : ", ", *a);
      *ret = send_error (conn, 400, "unknown field \"%.64s\" (fields: %s)", key, list);
      json_object_put (o);
      return NULL;
    }
  }
  return o;
}

/* Size from a JSON integer or a string with a suffix.  Returns 0, or -1
 * after sending a 400. */
static int
json_size (struct MHD_Connection *conn, json_object *v, const char *what, uint64_t *out,
           enum MHD_Result *ret)
{
  if (json_object_is_type (v, json_type_int)) {
    int64_t i = json_object_get_int64 (v);
    if (i == INT64_MAX) {
      errno = 0;
      uint64_t u = json_object_get_uint64 (v);
      if (errno == 0 && u != UINT64_MAX) {
        *out = u;
        return 0;
      }
      *ret = send_error (conn, 400, "%s is too large (at most 256T)", what);
      return -1;
    }
    if (i <= 0) {
      *ret = send_error (conn, 400, "%s %lld is invalid (must be a positive multiple of 512 bytes)",
                         what, (long long) i);
      return -1;
    }
    *out = (uint64_t) i;
    return 0;
  }
  if (json_object_is_type (v, json_type_string)) {
    const char *s = json_object_get_string (v);
    int r = size_parse (s, out);
    if (r == -ERANGE) {
      *ret = send_error (conn, 400, "%s \"%.40s\" is too large (at most 256T)", what, s);
      return -1;
    }
    if (r < 0) {
      *ret = send_error (conn, 400, "%s \"%.40s\" is not a size (use bytes or a suffix: 512, 4K, 10G, 2T)",
                         what, s);
      return -1;
    }
    return 0;
  }
  *ret = send_error (conn, 400, "%s must be a whole number of bytes or a string such as \"10G\"", what);
  return -1;
}

/* ---- handlers ---------------------------------------------------------------- */
static int
cmp_size (const void *a, const void *b)
{
  uint64_t x = ((const struct vol_info *) a)->size, y = ((const struct vol_info *) b)->size;
  return x < y ? -1 : x > y ? 1 : strcmp (((const struct vol_info *) a)->name, ((const struct vol_info *) b)->name);
}

static int
cmp_created (const void *a, const void *b)
{
  int64_t x = ((const struct vol_info *) a)->created, y = ((const struct vol_info *) b)->created;
  return x < y ? -1 : x > y ? 1 : strcmp (((const struct vol_info *) a)->name, ((const struct vol_info *) b)->name);
}

static bool
attached_to (const struct vol_info *v, const char *instance)
{
  for (unsigned i = 0; i < v->nattach; i++)
    if (strcmp (v->attach[i].instance, instance) == 0)
      return true;
  return false;
}

static enum MHD_Result
list_volumes (struct MHD_Connection *conn)
{
  const char *prefix = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "prefix");
  const char *status = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "status");
  const char *sort = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "sort");
  const char *order = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "order");
  const char *attached = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "attached");
  const char *instance = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "instance");
  if (attached && strcmp (attached, "true") && strcmp (attached, "false"))
    return send_error (conn, 400, "attached \"%.40s\" is invalid (true or false)", attached);
  if (status && strcmp (status, "available") && strcmp (status, "in-use"))
    return send_error (conn, 400, "status \"%.40s\" is invalid (available or in-use)", status);
  if (sort && strcmp (sort, "name") && strcmp (sort, "size") && strcmp (sort, "created"))
    return send_error (conn, 400, "sort \"%.40s\" is invalid (name, size or created)", sort);
  if (order && strcmp (order, "asc") && strcmp (order, "desc"))
    return send_error (conn, 400, "order \"%.40s\" is invalid (asc or desc)", order);

  struct vol_info *vi;
  size_t n;
  if (vol_list (blk_store, &vi, &n) < 0)
    return send_error (conn, 500, "out of memory listing volumes");
  if (sort && strcmp (sort, "size") == 0)
    qsort (vi, n, sizeof *vi, cmp_size);
  else if (sort && strcmp (sort, "created") == 0)
    qsort (vi, n, sizeof *vi, cmp_created);
  bool desc = order && strcmp (order, "desc") == 0;
  json_object *arr = json_object_new_array ();
  for (size_t k = 0; k < n; k++) {
    const struct vol_info *v = &vi[desc ? n - 1 - k : k];
    if (prefix && strncmp (v->name, prefix, strlen (prefix)) != 0)
      continue;
    if (status && strcmp (status, vol_status_name (vol_info_status (v))) != 0)
      continue;
    if (attached && (v->nattach > 0) != (strcmp (attached, "true") == 0))
      continue;
    if (instance && !attached_to (v, instance))
      continue;
    json_object_array_add (arr, volume_json (v));
  }
  free (vi);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "volumes", arr);
  return send_json (conn, 200, o);
}

static enum MHD_Result
create_volume (struct MHD_Connection *conn, struct req_ctx *rc)
{
  static const char *const fields[] = { "name", "size", "type", "from_snapshot", "multi_attach", NULL };
  enum MHD_Result ret;
  json_object *o = parse_body (conn, rc, fields, &ret);
  if (o == NULL)
    return ret;
  json_object *jn, *js = NULL, *jt, *jf, *jm;
  const char *from = NULL;
  unsigned flags = 0;
  if (json_object_object_get_ex (o, "multi_attach", &jm)) {
    if (!json_object_is_type (jm, json_type_boolean)) {
      json_object_put (o);
      return send_error (conn, 400, "field \"multi_attach\" must be true or false");
    }
    if (json_object_get_boolean (jm))
      flags |= VOL_CREATE_MULTI_ATTACH;
  }
  if (json_object_object_get_ex (o, "from_snapshot", &jf) && !json_object_is_type (jf, json_type_null)) {
    if (!json_object_is_type (jf, json_type_string)) {
      json_object_put (o);
      return send_error (conn, 400, "field \"from_snapshot\" must be a string such as \"data1@s1\"");
    }
    from = json_object_get_string (jf);
  }
  if (!json_object_object_get_ex (o, "name", &jn) || !json_object_is_type (jn, json_type_string)) {
    json_object_put (o);
    return send_error (conn, 400, "field \"name\" is required and must be a string");
  }
  if (!json_object_object_get_ex (o, "size", &js) && from == NULL) {
    json_object_put (o);
    return send_error (conn, 400, "field \"size\" is required (bytes, or a string such as \"10G\")");
  }
  const char *type = NULL;
  if (json_object_object_get_ex (o, "type", &jt)) {
    if (!json_object_is_type (jt, json_type_string)) {
      json_object_put (o);
      return send_error (conn, 400, "field \"type\" must be a string");
    }
    type = json_object_get_string (jt);
  }
  const char *name = json_object_get_string (jn);
  if (strlen (name) != (size_t) json_object_get_string_len (jn)) {
    json_object_put (o);
    return send_error (conn, 400, "volume name must not contain NUL characters");
  }
  uint64_t size = 0;
  char what[120];
  snprintf (what, sizeof what, "volume \"%.63s\": size", name);
  if (js && json_size (conn, js, what, &size, &ret) < 0) {
    json_object_put (o);
    return ret;
  }
  char err[400];
  struct vol_info vi;
  int r = vol_create_from (blk_store, name, size, type, from, flags, &vi, err, sizeof err);
  json_object_put (o);
  if (r < 0)
    return send_error (conn, status_of_errno (-r), "%s", err);
  return send_json (conn, 201, volume_json (&vi));
}

static enum MHD_Result
resize_volume (struct MHD_Connection *conn, const char *name, struct req_ctx *rc)
{
  static const char *const fields[] = { "size", NULL };
  enum MHD_Result ret;
  json_object *o = parse_body (conn, rc, fields, &ret);
  if (o == NULL)
    return ret;
  json_object *js;
  if (!json_object_object_get_ex (o, "size", &js)) {
    json_object_put (o);
    return send_error (conn, 400, "field \"size\" is required (bytes, or a string such as \"20G\")");
  }
  uint64_t size;
  char what[120];
  snprintf (what, sizeof what, "volume \"%.63s\": size", name);
  int r = json_size (conn, js, what, &size, &ret);
  json_object_put (o);
  if (r < 0)
    return ret;
  char err[400];
  struct vol_info vi;
  if ((r = vol_resize (blk_store, name, size, &vi, err, sizeof err)) < 0)
    return send_error (conn, status_of_errno (-r), "%s", err);
  return send_json (conn, 200, volume_json (&vi));
}

static enum MHD_Result
volume_item (struct MHD_Connection *conn, const char *method, const char *name, struct req_ctx *rc)
{
  char err[400];
  struct vol_info vi;
  int r;
  if (strcmp (method, "GET") == 0) {
    if ((r = vol_stat (blk_store, name, &vi, err, sizeof err)) < 0)
      return send_error (conn, status_of_errno (-r), "%s", err);
    return send_json (conn, 200, volume_json (&vi));
  }
  if (strcmp (method, "PATCH") == 0)
    return resize_volume (conn, name, rc);
  if (strcmp (method, "DELETE") == 0) {
    const char *f = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "force");
    bool force = f && (strcmp (f, "true") == 0 || strcmp (f, "1") == 0 || strcmp (f, "yes") == 0);
    if ((r = vol_delete (blk_store, name, force, err, sizeof err)) < 0)
      return send_error (conn, status_of_errno (-r), "%s", err);
    return send_json (conn, 204, NULL);
  }
  return MHD_NO + 2;   /* not handled: method not allowed */
}

static enum MHD_Result
not_allowed (struct MHD_Connection *conn, const char *method, const char *url, const char *allow)
{
  json_object *e = json_object_new_object ();
  char msg[300];
  snprintf (msg, sizeof msg, "method %.16s is not allowed on %.200s (allowed: %s)", method, url, allow);
  json_object_object_add (e, "code", json_object_new_string ("method_not_allowed"));
  json_object_object_add (e, "message", json_object_new_string (msg));
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "error", e);
  const char *s = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY);
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (s), (void *) s, MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header (r, "Content-Type", "application/json");
  MHD_add_response_header (r, "Allow", allow);
  enum MHD_Result ret = MHD_queue_response (conn, 405, r);
  MHD_destroy_response (r);
  json_object_put (o);
  return ret;
}

/* ---- snapshots ----------------------------------------------------------------- */
static const char *
json_name_field (json_object *o, const char *k)
{
  json_object *x;
  if (!json_object_object_get_ex (o, k, &x) || !json_object_is_type (x, json_type_string))
    return NULL;
  return json_object_get_string (x);
}

static enum MHD_Result
snapshot_create (struct MHD_Connection *conn, const char *vol, struct req_ctx *rc)
{
  static const char *const fields[] = { "name", NULL };
  enum MHD_Result ret;
  json_object *o = parse_body (conn, rc, fields, &ret);
  if (o == NULL)
    return ret;
  const char *name = json_name_field (o, "name");
  if (name == NULL) {
    json_object_put (o);
    return send_error (conn, 400, "field \"name\" is required and must be a string");
  }
  char err[400];
  struct vol_snap_info si;
  int r = vol_snapshot_create (blk_store, vol, name, &si, err, sizeof err);
  json_object_put (o);
  if (r < 0)
    return send_error (conn, status_of_errno (-r), "%s", err);
  return send_json (conn, 201, snapshot_json (&si));
}

static enum MHD_Result
snapshot_list (struct MHD_Connection *conn, const char *vol)
{
  struct vol_snap_info *si;
  size_t n;
  if (vol) {
    struct vol_info vi;
    char err[400];
    int r = vol_stat (blk_store, vol, &vi, err, sizeof err);
    if (r < 0)
      return send_error (conn, status_of_errno (-r), "%s", err);
    vol = vi.id;
    if (vol_snapshot_list (blk_store, vol, &si, &n) < 0)
      return send_error (conn, 500, "out of memory listing snapshots");
  }
  else {
    const char *q = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "volume");
    if (vol_snapshot_list (blk_store, q, &si, &n) < 0)
      return send_error (conn, 500, "out of memory listing snapshots");
  }
  json_object *arr = json_object_new_array ();
  for (size_t i = 0; i < n; i++)
    json_object_array_add (arr, snapshot_json (&si[i]));
  free (si);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "snapshots", arr);
  return send_json (conn, 200, o);
}

/* ---- attachments ---------------------------------------------------------------- */
/* POST /v1/volumes/VOL/attach {"instance", "role"} and .../detach {"instance"}. */
static enum MHD_Result
attach_detach (struct MHD_Connection *conn, const char *vol, struct req_ctx *rc, bool attach)
{
  static const char *const afields[] = { "instance", "role", NULL };
  static const char *const dfields[] = { "instance", NULL };
  enum MHD_Result ret;
  json_object *o = parse_body (conn, rc, attach ? afields : dfields, &ret);
  if (o == NULL)
    return ret;
  json_object *x;
  const char *instance = json_name_field (o, "instance");
  if (instance == NULL && (attach || json_object_object_get_ex (o, "instance", &x))) {
    json_object_put (o);
    return send_error (conn, 400, "field \"instance\" %s a string: the name of the VM",
                       attach ? "is required and must be" : "must be");
  }
  enum vol_role role = VOL_ROLE_DATA;
  if (attach && json_object_object_get_ex (o, "role", &x)
      && (!json_object_is_type (x, json_type_string)
          || vol_role_parse (json_object_get_string (x), &role) < 0)) {
    json_object_put (o);
    return send_error (conn, 400, "field \"role\" must be \"system\" (the disk the instance "
                       "boots from) or \"data\"");
  }
  char err[VOL_ATTACH_MAX * 80 + 400];
  struct vol_info vi;
  int r = attach ? vol_attach (blk_store, vol, instance, role, &vi, err, sizeof err)
                 : vol_detach (blk_store, vol, instance, &vi, err, sizeof err);
  json_object_put (o);
  if (r < 0)
    return send_error (conn, status_of_errno (-r), "%s", err);
  return send_json (conn, 200, volume_json (&vi));
}

static enum MHD_Result
rollback (struct MHD_Connection *conn, const char *vol, struct req_ctx *rc)
{
  static const char *const fields[] = { "snapshot", NULL };
  enum MHD_Result ret;
  json_object *o = parse_body (conn, rc, fields, &ret);
  if (o == NULL)
    return ret;
  const char *snap = json_name_field (o, "snapshot");
  if (snap == NULL) {
    json_object_put (o);
    return send_error (conn, 400, "field \"snapshot\" is required: the snapshot to roll back to");
  }
  char err[400];
  struct vol_info vi;
  int r = vol_rollback (blk_store, vol, snap, &vi, err, sizeof err);
  json_object_put (o);
  if (r < 0)
    return send_error (conn, status_of_errno (-r), "%s", err);
  return send_json (conn, 200, volume_json (&vi));
}

struct diff_ctx {
  json_object *arr;
  uint64_t bytes;
};

static int
diff_range (void *opaque, uint64_t offset, uint64_t length)
{
  struct diff_ctx *d = opaque;
  json_object *r = json_object_new_object ();
  json_object_object_add (r, "offset", json_object_new_int64 ((int64_t) offset));
  json_object_object_add (r, "length", json_object_new_int64 ((int64_t) length));
  json_object_array_add (d->arr, r);
  d->bytes += length;
  return 0;
}

static enum MHD_Result
snapshot_diff (struct MHD_Connection *conn, const char *from)
{
  const char *to = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "to");
  if (to == NULL || *to == '\0')
    return send_error (conn, 400, "diff needs ?to=VOL@SNAP or ?to=VOL (what to compare %s with)", from);
  struct diff_ctx d = { .arr = json_object_new_array () };
  char err[400];
  int r = vol_diff (blk_store, from, to, diff_range, &d, err, sizeof err);
  if (r < 0) {
    json_object_put (d.arr);
    return send_error (conn, status_of_errno (-r), "%s", err);
  }
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "from", json_object_new_string (from));
  json_object_object_add (o, "to", json_object_new_string (to));
  json_object_object_add (o, "ranges", d.arr);
  json_object_object_add (o, "changed_bytes", json_object_new_int64 ((int64_t) d.bytes));
  return send_json (conn, 200, o);
}

static enum MHD_Result
snapshot_item (struct MHD_Connection *conn, const char *method, const char *url, const char *ref)
{
  char err[400];
  int r;
  if (strcmp (method, "GET") == 0) {
    struct vol_snap_info si;
    if ((r = vol_snapshot_stat (blk_store, ref, &si, err, sizeof err)) < 0)
      return send_error (conn, status_of_errno (-r), "%s", err);
    return send_json (conn, 200, snapshot_json (&si));
  }
  if (strcmp (method, "DELETE") == 0) {
    const char *f = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "force");
    bool force = f && (strcmp (f, "true") == 0 || strcmp (f, "1") == 0 || strcmp (f, "yes") == 0);
    if ((r = vol_snapshot_delete (blk_store, ref, force, err, sizeof err)) < 0)
      return send_error (conn, status_of_errno (-r), "%s", err);
    return send_json (conn, 204, NULL);
  }
  return not_allowed (conn, method, url, "GET, DELETE");
}

/* POST /v1/debug/faults {"volume": NAME, "op": "read|write|trim|zero",
 * "error": "EIO|ENOSPC", "count": N}: the next N pool operations fail;
 * with "delay_ms": MS instead of "error", they wait MS milliseconds before
 * they start.  Only with --fault-injection 1. */
static enum MHD_Result
debug_faults (struct MHD_Connection *conn, struct req_ctx *rc)
{
  static const char *const fields[] = { "volume", "op", "error", "count", "delay_ms", NULL };
  enum MHD_Result ret;
  json_object *o = parse_body (conn, rc, fields, &ret);
  if (o == NULL)
    return ret;
  json_object *jv = NULL, *jo = NULL, *je = NULL, *jc = NULL, *jd = NULL;
  json_object_object_get_ex (o, "volume", &jv);
  json_object_object_get_ex (o, "op", &jo);
  json_object_object_get_ex (o, "error", &je);
  json_object_object_get_ex (o, "count", &jc);
  bool delay = json_object_object_get_ex (o, "delay_ms", &jd);   /* (jd is NULL for null) */
  const char *op = jo ? json_object_get_string (jo) : "write";
  const char *er = je ? json_object_get_string (je) : "EIO";
  enum vol_op vop = strcmp (op, "read") == 0 ? VOL_OP_READ : strcmp (op, "write") == 0 ? VOL_OP_WRITE
                  : strcmp (op, "trim") == 0 ? VOL_OP_TRIM : strcmp (op, "zero") == 0 ? VOL_OP_ZERO
                  : VOL_OP_FLUSH;
  int err = strcmp (er, "EIO") == 0 ? EIO : strcmp (er, "ENOSPC") == 0 ? ENOSPC : 0;
  int64_t count = jc ? json_object_get_int64 (jc) : 1;
  int64_t ms = json_object_is_type (jd, json_type_int) ? json_object_get_int64 (jd) : 0;
  const char *name = jv ? json_object_get_string (jv) : NULL;
  bool ok = vop != VOL_OP_FLUSH && count >= 0 && count <= 1000000 && !(delay && je);
  int r = -EINVAL;
  if (ok && delay && ms >= 1 && ms <= 10000)
    r = vol_fault_delay (name, vop, (unsigned) ms, (unsigned) count);
  else if (ok && !delay && err)
    r = vol_fault_set (name, vop, err, (unsigned) count);
  if (r == 0 && delay)   /* op and er point into o */
    log_warn ("fault injection: next %lld pool %s operations wait %lld ms", (long long) count, op,
              (long long) ms);
  else if (r == 0)
    log_warn ("fault injection: next %lld pool %s operations fail with %s", (long long) count, op, er);
  json_object_put (o);
  if (r < 0)
    return send_error (conn, 400, "fault: op must be read, write, trim or zero; error EIO or ENOSPC, "
                       "or delay_ms 1 to 10000; count 0 (clear) to 1000000");
  return send_json (conn, 204, NULL);
}

static enum MHD_Result
route (struct MHD_Connection *conn, const char *url, const char *method, struct req_ctx *rc)
{
  if (strcmp (url, "/v1/debug/faults") == 0 && blk_cfg.fault_injection) {
    if (strcmp (method, "POST"))
      return not_allowed (conn, method, url, "POST");
    return debug_faults (conn, rc);
  }
  if (strcmp (url, "/v1/health") == 0) {
    if (strcmp (method, "GET"))
      return not_allowed (conn, method, url, "GET");
    json_object *o = json_object_new_object ();
    json_object_object_add (o, "status", json_object_new_string ("ok"));
    json_object_object_add (o, "version", json_object_new_string (BLOCKD_VERSION));
    return send_json (conn, 200, o);
  }
  if (strcmp (url, "/v1/pool") == 0) {
    if (strcmp (method, "GET"))
      return not_allowed (conn, method, url, "GET");
    struct vol_pool_info pi;
    vol_store_pool_info (blk_store, &pi);
    json_object *o = json_object_new_object ();
    json_object_object_add (o, "capacity", json_object_new_int64 ((int64_t) pi.capacity));
    json_object_object_add (o, "allocated", json_object_new_int64 ((int64_t) pi.allocated));
    json_object_object_add (o, "free", json_object_new_int64 ((int64_t) pi.free));
    json_object_object_add (o, "chunk_size", json_object_new_int64 (pi.chunk_size));
    json_object_object_add (o, "volumes", json_object_new_int ((int) pi.volumes));
    json_object_object_add (o, "snapshots", json_object_new_int ((int) pi.snapshots));
    json_object_object_add (o, "shared", json_object_new_int64 ((int64_t) pi.shared));
    json_object_object_add (o, "leaked", json_object_new_int64 ((int64_t) pi.leaked));
    json_object_object_add (o, "data_dir", json_object_new_string (pi.dir));
    return send_json (conn, 200, o);
  }
  if (strcmp (url, "/v1/stats") == 0) {
    if (strcmp (method, "GET") == 0)
      return all_stats (conn);
    return not_allowed (conn, method, url, "GET");
  }
  if (strcmp (url, "/v1/volumes") == 0 || strcmp (url, "/v1/volumes/") == 0) {
    if (strcmp (method, "GET") == 0)
      return list_volumes (conn);
    if (strcmp (method, "POST") == 0)
      return create_volume (conn, rc);
    return not_allowed (conn, method, url, "GET, POST");
  }
  if (strncmp (url, "/v1/volumes/", 12) == 0 && url[12] && !strchr (url + 12, '/')) {
    enum MHD_Result r = volume_item (conn, method, url + 12, rc);
    if (r == MHD_NO + 2)
      return not_allowed (conn, method, url, "GET, PATCH, DELETE");
    return r;
  }
  const char *slash;
  if (strncmp (url, "/v1/volumes/", 12) == 0 && (slash = strchr (url + 12, '/')) != NULL
      && slash > url + 12 && (size_t) (slash - url - 12) <= VOL_NAME_MAX + VOL_ID_LEN) {
    char vol[VOL_NAME_MAX + VOL_ID_LEN + 1];
    snprintf (vol, sizeof vol, "%.*s", (int) (slash - url - 12), url + 12);
    if (strcmp (slash, "/snapshots") == 0) {
      if (strcmp (method, "POST") == 0)
        return snapshot_create (conn, vol, rc);
      if (strcmp (method, "GET") == 0)
        return snapshot_list (conn, vol);
      return not_allowed (conn, method, url, "GET, POST");
    }
    if (strcmp (slash, "/attach") == 0 || strcmp (slash, "/detach") == 0) {
      if (strcmp (method, "POST") == 0)
        return attach_detach (conn, vol, rc, slash[1] == 'a');
      return not_allowed (conn, method, url, "POST");
    }
    if (strcmp (slash, "/stats") == 0) {
      if (strcmp (method, "GET") == 0)
        return volume_stats (conn, vol);
      return not_allowed (conn, method, url, "GET");
    }
    if (strcmp (slash, "/rollback") == 0) {
      if (strcmp (method, "POST") == 0)
        return rollback (conn, vol, rc);
      return not_allowed (conn, method, url, "POST");
    }
  }
  if (strcmp (url, "/v1/snapshots") == 0 || strcmp (url, "/v1/snapshots/") == 0) {
    if (strcmp (method, "GET") == 0)
      return snapshot_list (conn, NULL);
    return not_allowed (conn, method, url, "GET (create snapshots with POST /v1/volumes/VOL/snapshots)");
  }
  if (strncmp (url, "/v1/snapshots/", 14) == 0 && url[14]) {
    const char *ref = url + 14;
    slash = strchr (ref, '/');
    if (slash == NULL)
      return snapshot_item (conn, method, url, ref);
    if (strcmp (slash, "/diff") == 0 && (size_t) (slash - ref) < 2 * VOL_NAME_MAX + 2) {
      char from[2 * VOL_NAME_MAX + 2];
      snprintf (from, sizeof from, "%.*s", (int) (slash - ref), ref);
      if (strcmp (method, "GET") == 0)
        return snapshot_diff (conn, from);
      return not_allowed (conn, method, url, "GET");
    }
  }
  return send_error (conn, 404, "no such API path: %s %.200s (see docs/API.md)", method, url);
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
            const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
  struct req_ctx *rc = *con_cls;
  if (rc == NULL) {
    rc = calloc (1, sizeof *rc);
    if (rc == NULL)
      return MHD_NO;
    *con_cls = rc;
    /* A body announced too large is refused before it is sent. */
    const char *cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull (cl, NULL, 10) > MAX_BODY) {
      rc->responded = true;
      return send_error (conn, 413, "request body is larger than %d bytes", MAX_BODY);
    }
    return MHD_YES;
  }
  if (rc->responded) {
    *upload_data_size = 0;        /* a response is queued: drop the rest */
    return MHD_YES;
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (rc->too_big || rc->len + n > MAX_BODY) {
      rc->too_big = true;
      return MHD_YES;           /* keep reading, answer 413 at the end */
    }
    char *b = realloc (rc->body, rc->len + n + 1);
    if (b == NULL)
      return MHD_NO;
    memcpy (b + rc->len, upload_data, n);
    rc->body = b;
    rc->len += n;
    rc->body[rc->len] = '\0';
    return MHD_YES;
  }
  if (rc->too_big)
    return send_error (conn, 413, "request body is larger than %d bytes", MAX_BODY);
  log_debug ("api: %s %s", method, url);
  return route (conn, url, method, rc);
}

static void
on_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
  struct req_ctx *rc = *con_cls;
  if (rc) {
    free (rc->body);
    free (rc);
  }
  *con_cls = NULL;
}

static void
on_mhd_log (void *cls, const char *fmt, va_list ap)
{
  char msg[300];
  vsnprintf (msg, sizeof msg, fmt, ap);
  size_t n = strlen (msg);
  if (n && msg[n - 1] == '\n')
    msg[n - 1] = '\0';
  log_warn ("api: %s", msg);
}

int
blk_api_start (const char *hostport, char *err, size_t errlen)
{
  struct addrinfo *ai;
  char sub[300];
  int r = blk_resolve (hostport, &ai, sub, sizeof sub);
  if (r < 0) {
    snprintf (err, errlen, "api: %s", sub);
    return r;
  }
  int p = ntohs (ai->ai_family == AF_INET6 ? ((struct sockaddr_in6 *) ai->ai_addr)->sin6_port
                                           : ((struct sockaddr_in *) ai->ai_addr)->sin_port);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  api_daemon = MHD_start_daemon (flags, (uint16_t) p, NULL, NULL, on_request, NULL,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                                 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                 MHD_OPTION_CONNECTION_LIMIT, 256u,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                                 MHD_OPTION_END);
  freeaddrinfo (ai);
  if (api_daemon == NULL) {
    snprintf (err, errlen, "api: cannot listen on %s (address in use?)", hostport);
    return -EADDRINUSE;
  }
  return 0;
}

void
blk_api_stop (void)
{
  if (api_daemon)
    MHD_stop_daemon (api_daemon);
  api_daemon = NULL;
}
