/* client/http.c — one HTTP/JSON request to blockd with libcurl, and the
 * mapping of whatever comes back (or does not) to blockctl's exit codes:
 *
 *   2xx + JSON or empty body    -> CTL_EXIT_OK, the parsed body
 *   4xx/5xx {"error":{...}}     -> CTL_EXIT_SERVER, the server's message
 *   any other HTTP answer       -> CTL_EXIT_SERVER, "is --api pointing at blockd?"
 *   no HTTP answer at all       -> CTL_EXIT_UNREACHABLE
 *   an --api URL curl rejects   -> CTL_EXIT_USAGE
 *
 * The API is documented in docs/API.md. */
#include "client/blockctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define CTL_TIMEOUT_S          30L   /* whole request */
#define CTL_CONNECT_TIMEOUT_S  10L
#define CTL_MAX_ANSWER         (256u << 20)   /* bytes of body we accept */

/* The answer's body, grown by write_cb; owned by ctl_http. */
struct answer {
  char *data;
  size_t len, cap;
  bool too_big;
};

static size_t
write_cb (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct answer *a = opaque;
  size_t n = size * nmemb;

  if (n > CTL_MAX_ANSWER - a->len) {
    a->too_big = true;
    return 0;                     /* makes curl fail with CURLE_WRITE_ERROR */
  }
  if (a->len + n + 1 > a->cap) {
    size_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + n + 1)
      cap *= 2;
    char *p = realloc (a->data, cap);
    if (p == NULL)
      return 0;
    a->data = p;
    a->cap = cap;
  }
  memcpy (a->data + a->len, ptr, n);
  a->len += n;
  a->data[a->len] = '\0';
  return n;
}

char *
ctl_escape (const char *s)
{
  static const char hex[] = "0123456789ABCDEF";
  char *out = malloc (strlen (s) * 3 + 1), *o = out;

  if (out == NULL)
    return NULL;
  for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
    if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')
        || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'
        || *p == '~')
      *o++ = (char) *p;
    else {
      *o++ = '%';
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 15];
    }
  }
  *o = '\0';
  return out;
}

bool
ctl_query_add (char **q, const char *key, const char *value)
{
  char *esc = ctl_escape (value);
  size_t old = *q ? strlen (*q) : 0;
  char *p = esc ? realloc (*q, old + strlen (key) + strlen (esc) + 3) : NULL;

  if (p == NULL) {
    free (esc);
    return false;
  }
  sprintf (p + old, "%c%s=%s", old ? '&' : '?', key, esc);
  *q = p;
  free (esc);
  return true;
}

/* Parse all of DATA[0..len) as one JSON value.  Returns it (caller owns)
 * or NULL when it is not JSON or has something after the value. */
static struct json_object *
parse_json (const char *data, size_t len)
{
  struct json_tokener *tok = json_tokener_new ();
  struct json_object *obj;
  size_t end;

  if (tok == NULL || len > (size_t) INT32_MAX) {
    if (tok)
      json_tokener_free (tok);
    return NULL;
  }
  obj = json_tokener_parse_ex (tok, data, (int) len);
  if (obj == NULL && json_tokener_get_error (tok) == json_tokener_continue)
    obj = json_tokener_parse_ex (tok, "", 1);     /* a bare number at EOF */
  end = json_tokener_get_parse_end (tok);
  json_tokener_free (tok);
  if (obj == NULL)
    return NULL;
  for (; end < len; end++)
    if (!strchr (" \t\r\n", data[end])) {
      json_object_put (obj);
      return NULL;
    }
  return obj;
}

/* Say why no HTTP answer came back and return the exit code for it. */
static int
transport_error (const struct ctl_globals *g, CURL *h, CURLcode rc,
                 const char *errbuf, const char *method, const char *path)
{
  long os_errno = 0;
  curl_off_t connect_us = 0;
  char detail[CURL_ERROR_SIZE + 64];

  curl_easy_getinfo (h, CURLINFO_OS_ERRNO, &os_errno);
  curl_easy_getinfo (h, CURLINFO_CONNECT_TIME_T, &connect_us);

  switch (rc) {
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
    return ctl_usage_error ("blockd API address \"%s\" is not an http:// or "
                            "https:// URL (e.g. --api " CTL_DEFAULT_API ")",
                            g->api);
  case CURLE_OPERATION_TIMEDOUT:
    if (connect_us > 0) {
      ctl_error ("blockd at %s did not answer %s %s within %ld seconds",
                 g->api, method, path, CTL_TIMEOUT_S);
      return CTL_EXIT_UNREACHABLE;
    }
    snprintf (detail, sizeof detail, "no connection within %ld seconds",
              CTL_CONNECT_TIMEOUT_S);
    break;
  default:
    if (os_errno != 0)
      snprintf (detail, sizeof detail, "%s", strerror ((int) os_errno));
    else if (errbuf[0] != '\0')
      snprintf (detail, sizeof detail, "%s", errbuf);
    else
      snprintf (detail, sizeof detail, "%s", curl_easy_strerror (rc));
    if (connect_us > 0) {
      /* Connected, then the exchange broke (reset, empty reply...). */
      ctl_error ("lost the connection to blockd at %s during %s %s: %s",
                 g->api, method, path, detail);
      return CTL_EXIT_UNREACHABLE;
    }
    break;
  }
  ctl_error ("cannot reach blockd at %s: %s (is blockd running? use --api "
             "or BLOCKD_API)", g->api, detail);
  return CTL_EXIT_UNREACHABLE;
}

/* Turn a non-2xx answer into one line on stderr; returns the exit code. */
static int
server_error (const struct ctl_globals *g, long status, struct json_object *j,
              const char *method, const char *path)
{
  struct json_object *err, *msg, *code;

  if (j != NULL && json_object_object_get_ex (j, "error", &err)
      && json_object_is_type (err, json_type_object)) {
    if (json_object_object_get_ex (err, "message", &msg)
        && json_object_is_type (msg, json_type_string)
        && json_object_get_string_len (msg) > 0) {
      ctl_error ("%s", json_object_get_string (msg));
      return CTL_EXIT_SERVER;
    }
    if (json_object_object_get_ex (err, "code", &code)
        && json_object_is_type (code, json_type_string)) {
      ctl_error ("%s %s failed: %s (HTTP %ld)", method, path,
                 json_object_get_string (code), status);
      return CTL_EXIT_SERVER;
    }
  }
  ctl_error ("the server at %s answered %s %s with HTTP %ld and no blockd "
             "error (is --api pointing at blockd?)",
             g->api, method, path, status);
  return CTL_EXIT_SERVER;
}

int
ctl_http (const struct ctl_globals *g, const char *method, const char *path,
          struct json_object *body, struct json_object **out)
{
  struct answer a = { NULL, 0, 0, false };
  struct curl_slist *hdrs = NULL, *h2;
  char errbuf[CURL_ERROR_SIZE] = "";
  char *url = NULL;
  CURL *h = NULL;
  long status = 0;
  int r = CTL_EXIT_SERVER;
  CURLcode rc;

  *out = NULL;
  h = curl_easy_init ();
  url = malloc (strlen (g->api) + strlen (path) + 1);
  if (h == NULL || url == NULL) {
    ctl_error ("out of memory");
    goto out;
  }
  strcpy (url, g->api);
  strcat (url, path);

  hdrs = curl_slist_append (hdrs, "Accept: application/json");
  if (body != NULL && hdrs != NULL) {
    h2 = curl_slist_append (hdrs, "Content-Type: application/json");
    hdrs = h2 ? curl_slist_append (h2, "Expect:") : NULL;
  }
  if (hdrs == NULL) {
    ctl_error ("out of memory");
    goto out;
  }

  curl_easy_setopt (h, CURLOPT_URL, url);
  curl_easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (h, CURLOPT_TIMEOUT, CTL_TIMEOUT_S);
  curl_easy_setopt (h, CURLOPT_CONNECTTIMEOUT, CTL_CONNECT_TIMEOUT_S);
  curl_easy_setopt (h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt (h, CURLOPT_PATH_AS_IS, 1L);    /* no "/../" folding */
  curl_easy_setopt (h, CURLOPT_USERAGENT, "blockctl/" CTL_VERSION);
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, &a);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt (h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  if (body != NULL) {
    /* The string is owned by BODY and lives until the caller puts it. */
    const char *s = json_object_to_json_string_ext (body,
        JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    curl_easy_setopt (h, CURLOPT_POSTFIELDS, s);
    curl_easy_setopt (h, CURLOPT_POSTFIELDSIZE, (long) strlen (s));
  }
  if (strcmp (method, "GET") != 0 && strcmp (method, "POST") != 0)
    curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, method);

  rc = curl_easy_perform (h);
  if (rc != CURLE_OK) {
    if (a.too_big)
      ctl_error ("blockd's answer to %s %s is larger than %u MiB",
                 method, path, CTL_MAX_ANSWER >> 20);
    else if (rc == CURLE_WRITE_ERROR)
      ctl_error ("out of memory reading blockd's answer to %s %s",
                 method, path);
    else
      r = transport_error (g, h, rc, errbuf, method, path);
    goto out;
  }

  curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &status);
  struct json_object *j = a.len > 0 ? parse_json (a.data, a.len) : NULL;
  if (status < 200 || status > 299) {
    r = server_error (g, status, j, method, path);
    json_object_put (j);
  }
  else if (a.len > 0 && j == NULL)
    ctl_error ("the server at %s answered %s %s with something that is not "
               "JSON (is --api pointing at blockd?)", g->api, method, path);
  else {
    *out = j;
    r = CTL_EXIT_OK;
  }

 out:
  curl_slist_free_all (hdrs);
  if (h)
    curl_easy_cleanup (h);
  free (url);
  free (a.data);
  return r;
}

int
ctl_get_list (const struct ctl_globals *g, const char *base, char *q, const char *key,
              int (*table) (struct json_object *list))
{
  char *path = malloc (strlen (base) + (q ? strlen (q) : 0) + 1);
  if (path == NULL) {
    free (q);
    ctl_error ("out of memory");
    return CTL_EXIT_SERVER;
  }
  sprintf (path, "%s%s", base, q ? q : "");
  free (q);

  struct json_object *j, *list;
  int r = ctl_http (g, "GET", path, NULL, &j);
  if (r == CTL_EXIT_OK) {
    if (!json_object_is_type (j, json_type_object)
        || !json_object_object_get_ex (j, key, &list)
        || !json_object_is_type (list, json_type_array)) {
      ctl_error ("blockd at %s sent an unexpected answer to GET %s (no "
                 "\"%s\" list)", g->api, path, key);
      r = CTL_EXIT_SERVER;
    }
    else if (g->json)
      ctl_print_json (j);
    else
      r = table (list);
  }
  json_object_put (j);
  free (path);
  return r;
}
