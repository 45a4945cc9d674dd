/* tests/fuzz/fuzz-api.c — the HTTP API's request bodies: the input is sent
 * as the JSON body of POST /v1/volumes (create) and of PATCH
 * /v1/volumes/disk (resize), each over its own loopback TCP connection to
 * the real API (libmicrohttpd, its own thread), and of POST
 * /v1/volumes/disk/snapshots (take a snapshot).
 *
 * Every answer must be a complete HTTP response; every status but 204 must
 * come with a JSON object body (for errors, {"error": {"code", "message"}}
 * with strings); a 5xx is a failure (nothing here should fail inside).
 * Volumes and snapshots the input creates are deleted again so that the
 * store stays small. */
#include <errno.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "blockd/internal.h"
#include "tests/fuzz/harness.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fz_default_flags (argc, argv);
  fz_init ("api", FZ_API, 0);
  return 0;
}

static void
send_all (int fd, const void *p, size_t n)
{
  while (n) {
    ssize_t k = send (fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return;      /* the server answered early (413) and closed */
    p = (const char *) p + k;
    n -= (size_t) k;
  }
}

/* One request; returns the status, the body in *body (malloc'd). */
static int
http (const char *method, const char *path, const uint8_t *data, size_t size, char **body)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) fz_api_port ()),
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  struct timeval tv = { .tv_sec = 5 };
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect (fd, (struct sockaddr *) &a, sizeof a) < 0) {
    /* libFuzzer's timers interrupt: the connection goes on in the background */
    int e = errno, err = 0;
    socklen_t elen = sizeof err;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    if (e == EINTR) {
      while (poll (&p, 1, 5000) < 0 && errno == EINTR)
        ;
      getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &elen);
    }
    if (e != EINTR || err != 0 || !(p.revents & POLLOUT))
      fz_fail ("connect to the API: %s", strerror (e != EINTR ? e : err ? err : ETIMEDOUT));
  }
  char head[256];
  int hl = snprintf (head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", method, path, size);
  send_all (fd, head, (size_t) hl);
  send_all (fd, data, size);

  size_t cap = 4096, len = 0;
  char *buf = malloc (cap + 1);
  for (;;) {
    if (len == cap)
      buf = realloc (buf, (cap *= 2) + 1);
    ssize_t k = recv (fd, buf + len, cap - len, 0);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fz_fail ("%s %s: no complete response within 5 s", method, path);
    if (k <= 0)
      break;
    len += (size_t) k;
  }
  /* RST rather than TIME_WAIT: millions of runs would use up the ports */
  struct linger lg = { .l_onoff = 1, .l_linger = 0 };
  setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close (fd);
  buf[len] = '\0';

  int status;
  if (sscanf (buf, "HTTP/1.%*[01] %3d ", &status) != 1)
    fz_fail ("%s %s: no HTTP status line in a %zu-byte response: %.80s", method, path, len, buf);
  char *end = strstr (buf, "\r\n\r\n");
  if (end == NULL)
    fz_fail ("%s %s: response headers never end", method, path);
  const char *cl = strcasestr (buf, "\r\nContent-Length:");
  size_t blen = (size_t) (len - (size_t) (end + 4 - buf));
  if (cl && cl < end && strtoull (cl + 17, NULL, 10) != blen)
    fz_fail ("%s %s: Content-Length %llu but %zu bytes of body", method, path,
             strtoull (cl + 17, NULL, 10), blen);
  *body = strdup (end + 4);
  free (buf);
  return status;
}

/* The body of a status: a JSON object; for errors a well-formed error. */
static json_object *
check_body (const char *what, int status, const char *body)
{
  if (status >= 500)
    fz_fail ("%s: status %d: %s", what, status, body);
  if (status == 204)
    return NULL;
  json_tokener *tok = json_tokener_new ();
  json_object *o = json_tokener_parse_ex (tok, body, (int) strlen (body));
  enum json_tokener_error e = json_tokener_get_error (tok);
  json_tokener_free (tok);
  if (o == NULL || e != json_tokener_success || !json_object_is_type (o, json_type_object))
    fz_fail ("%s: status %d with a body that is not a JSON object: %.200s", what, status, body);
  if (status >= 400) {
    json_object *err, *code, *msg;
    if (!json_object_object_get_ex (o, "error", &err)
        || !json_object_object_get_ex (err, "code", &code)
        || !json_object_object_get_ex (err, "message", &msg)
        || !json_object_is_type (code, json_type_string)
        || !json_object_is_type (msg, json_type_string))
      fz_fail ("%s: status %d without {\"error\": {\"code\", \"message\"}}: %.200s", what, status, body);
    if (status != 400 && status != 404 && status != 409 && status != 413)
      fz_fail ("%s: unexpected status %d: %.200s", what, status, body);
  }
  else if (status != 200 && status != 201)
    fz_fail ("%s: unexpected status %d", what, status);
  return o;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *body;
  int st = http ("POST", "/v1/volumes", data, size, &body);
  json_object *o = check_body ("POST /v1/volumes", st, body);
  if (st == 201) {
    json_object *n;
    if (!json_object_object_get_ex (o, "name", &n) || !json_object_is_type (n, json_type_string))
      fz_fail ("201 without a volume name: %s", body);
  }
  json_object_put (o);
  free (body);

  st = http ("PATCH", "/v1/volumes/" FZ_VOLUME, data, size, &body);
  o = check_body ("PATCH /v1/volumes/" FZ_VOLUME, st, body);
  json_object_put (o);
  free (body);

  st = http ("POST", "/v1/volumes/" FZ_VOLUME "/snapshots", data, size, &body);
  o = check_body ("POST /v1/volumes/" FZ_VOLUME "/snapshots", st, body);
  json_object_put (o);
  free (body);

  /* Keep the store as it was: only "disk" (resizes only grow it, thinly)
   * and its snapshot "s1" (clones from it go first). */
  struct vol_info *vi;
  size_t n;
  if (vol_list (blk_store, &vi, &n) == 0) {
    for (size_t i = 0; i < n; i++)
      if (strcmp (vi[i].name, FZ_VOLUME) != 0) {
        char err[400];
        if (vol_delete (blk_store, vi[i].id, true, err, sizeof err) < 0)
          fz_fail ("vol_delete %s: %s", vi[i].name, err);
      }
    free (vi);
  }
  struct vol_snap_info *si;
  if (vol_snapshot_list (blk_store, NULL, &si, &n) == 0) {
    for (size_t i = 0; i < n; i++)
      if (strcmp (si[i].name, FZ_SNAPSHOT) != 0 || strcmp (si[i].vol_name, FZ_VOLUME) != 0) {
        char err[400];
        if (vol_snapshot_delete (blk_store, si[i].id, true, err, sizeof err) < 0)
          fz_fail ("vol_snapshot_delete %s@%s: %s", si[i].vol_name, si[i].name, err);
      }
    free (si);
  }
  return 0;
}
