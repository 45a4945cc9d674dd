/* client/qmp.c — a small client of QMP, QEMU's JSON monitor protocol,
 * over a unix socket (qemu-system-x86_64 -qmp unix:PATH,server=on,wait=off).
 *
 * The protocol, as QEMU speaks it (docs/interop/qmp-spec.rst):
 *
 *   QEMU   {"QMP": {"version": {...}, "capabilities": ["oob"]}}   greeting
 *   us     {"execute": "qmp_capabilities", "id": 1}
 *   QEMU   {"return": {}, "id": 1}
 *   us     {"execute": "device_del", "arguments": {"id": "d"}, "id": 2}
 *   QEMU   {"event": "RESUME", "data": {}, "timestamp": {...}}  at any time
 *   QEMU   {"error": {"class": "GenericError", "desc": "..."}, "id": 2}
 *
 * Messages are JSON objects; QEMU ends each with "\r\n" but we do not rely
 * on it (with pretty=on they span lines): a json_tokener cuts the stream
 * into objects.  Events that arrive while we wait for a reply are queued,
 * so that ctl_qmp_wait_event also sees one that came before it was called
 * (DEVICE_DELETED may come right after device_del's reply, or before it).
 *
 * Nothing here prints: every failure is described in q->err (and, for an
 * error QEMU reported, its class in q->err_class), for the caller to put
 * into its one line.  A monitor socket takes one client at a time: while
 * another is connected (libvirt, a second blockctl), QEMU accepts the
 * connection but says nothing, which shows here as no greeting in time. */
#include "client/blockctl.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QMP_MAX_MESSAGE   (64u << 20)   /* bytes in one message we accept */
#define QMP_MAX_EVENTS    256           /* queued events; the oldest go first */
#define QMP_JSON_DEPTH    64

struct ctl_qmp {
  int fd;
  int64_t next_id;
  struct json_tokener *tok;
  char buf[16384];              /* received, not yet given to tok: [start, end) */
  size_t start, end;
  size_t msg_bytes;             /* bytes of the message being parsed so far */
  struct json_object *events;   /* array of queued event messages */
  char err[CTL_QMP_ERRLEN];
  char err_class[64];
};

static void __attribute__ ((format (printf, 2, 3)))
set_err (struct ctl_qmp *q, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (q->err, sizeof q->err, fmt, ap);
  va_end (ap);
  q->err_class[0] = '\0';
}

const char *
ctl_qmp_error (const struct ctl_qmp *q)
{
  return q->err;
}

const char *
ctl_qmp_error_class (const struct ctl_qmp *q)
{
  return q->err_class;
}

static int64_t
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until DEADLINE for poll(), at least 0. */
static int
left_ms (int64_t deadline)
{
  int64_t left = deadline - now_ms ();
  return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int) left;
}

/* Wait until fd is ready for EVENTS or DEADLINE passes.  Returns 0,
 * -ETIMEDOUT or -errno. */
static int
wait_fd (struct ctl_qmp *q, short events, int64_t deadline)
{
  struct pollfd p = { .fd = q->fd, .events = events };
  for (;;) {
    int n = poll (&p, 1, left_ms (deadline));
    if (n > 0)
      return 0;                 /* readable, writable, or hung up: see recv */
    if (n == 0)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
}

/* Send all of S.  Returns 0 or -errno (said in q->err). */
static int
send_all (struct ctl_qmp *q, const char *s, size_t len, int64_t deadline)
{
  while (len > 0) {
    ssize_t n = send (q->fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      s += n;
      len -= (size_t) n;
      continue;
    }
    int e = n < 0 ? errno : EPIPE;
    if (e == EINTR)
      continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int r = wait_fd (q, POLLOUT, deadline);
      if (r == -ETIMEDOUT) {
        set_err (q, "QEMU did not take our command within the time allowed");
        return r;
      }
      if (r < 0) {
        set_err (q, "waiting to write to QMP: %s", strerror (-r));
        return r;
      }
      continue;
    }
    set_err (q, "cannot write to QMP: %s (did QEMU exit?)", strerror (e));
    return -e;
  }
  return 0;
}

/* Read the next message, whatever it is, into *msg (caller owns).
 * Returns 0, or -ETIMEDOUT, -ECONNRESET (QEMU closed the connection),
 * -EPROTO (not QMP) or -errno, said in q->err. */
static int
read_message (struct ctl_qmp *q, int64_t deadline, struct json_object **msg)
{
  *msg = NULL;
  for (;;) {
    while (q->start < q->end) {
      size_t avail = q->end - q->start;
      struct json_object *o = json_tokener_parse_ex (q->tok, q->buf + q->start,
                                                     (int) avail);
      enum json_tokener_error e = json_tokener_get_error (q->tok);
      size_t used = o ? json_tokener_get_parse_end (q->tok) : avail;
      if (o == NULL && e != json_tokener_continue) {
        set_err (q, "QEMU sent something that is not JSON (%s): is this a "
                 "QMP socket?", json_tokener_error_desc (e));
        return -EPROTO;
      }
      q->start += used;
      q->msg_bytes += used;
      if (o == NULL && q->msg_bytes > QMP_MAX_MESSAGE) {
        set_err (q, "QEMU sent a message larger than %u MiB",
                 QMP_MAX_MESSAGE >> 20);
        return -EPROTO;
      }
      if (o != NULL) {
        q->msg_bytes = 0;
        if (!json_object_is_type (o, json_type_object)) {
          json_object_put (o);
          set_err (q, "QEMU sent JSON that is not an object: is this a "
                   "QMP socket?");
          return -EPROTO;
        }
        *msg = o;
        return 0;
      }
    }
    q->start = q->end = 0;

    ssize_t n = recv (q->fd, q->buf, sizeof q->buf, MSG_DONTWAIT);
    if (n > 0) {
      q->end = (size_t) n;
      continue;
    }
    if (n == 0) {
      set_err (q, "QEMU closed the QMP connection (did it exit?)");
      return -ECONNRESET;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      int e = errno;
      set_err (q, "cannot read from QMP: %s", strerror (e));
      return -e;
    }
    int r = wait_fd (q, POLLIN, deadline);
    if (r == -ETIMEDOUT) {
      set_err (q, "no answer from QEMU within the time allowed");
      return r;
    }
    if (r < 0) {
      set_err (q, "waiting for QMP: %s", strerror (-r));
      return r;
    }
  }
}

/* Queue event message EV (consumed). */
static void
queue_event (struct ctl_qmp *q, struct json_object *ev)
{
  if (json_object_array_length (q->events) >= QMP_MAX_EVENTS)
    json_object_array_del_idx (q->events, 0, 1);
  json_object_array_add (q->events, ev);
}

static bool
is_event (struct json_object *m)
{
  struct json_object *e;
  return json_object_object_get_ex (m, "event", &e)
    && json_object_is_type (e, json_type_string);
}

void
ctl_qmp_close (struct ctl_qmp *q)
{
  if (q == NULL)
    return;
  if (q->fd >= 0)
    close (q->fd);
  if (q->tok)
    json_tokener_free (q->tok);
  json_object_put (q->events);
  free (q);
}

struct ctl_qmp *
ctl_qmp_open_fd (int fd, int timeout_ms, char *err, size_t errlen)
{
  struct ctl_qmp *q = calloc (1, sizeof *q);
  struct json_object *greeting = NULL, *v;
  int64_t deadline = now_ms () + timeout_ms;
  int r;

  if (q == NULL) {
    close (fd);
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  q->fd = fd;
  q->next_id = 1;
  q->tok = json_tokener_new_ex (QMP_JSON_DEPTH);
  q->events = json_object_new_array ();
  if (q->tok == NULL || q->events == NULL) {
    snprintf (err, errlen, "out of memory");
    goto fail;
  }

  /* The greeting, skipping any event that might precede it. */
  do {
    json_object_put (greeting);
    if ((r = read_message (q, deadline, &greeting)) < 0) {
      if (r == -ETIMEDOUT)
        snprintf (err, errlen, "no QMP greeting from QEMU within %d ms (is "
                  "another client connected to this monitor? it takes one "
                  "at a time)", timeout_ms);
      else
        snprintf (err, errlen, "%s", q->err);
      goto fail;
    }
  } while (is_event (greeting));
  if (!json_object_object_get_ex (greeting, "QMP", &v)
      || !json_object_is_type (v, json_type_object)) {
    snprintf (err, errlen, "the socket did not greet us with QMP's "
              "{\"QMP\": ...}: is it a QMP socket (-qmp), not an HMP one "
              "(-monitor)?");
    goto fail;
  }
  json_object_put (greeting);
  greeting = NULL;

  r = ctl_qmp_execute (q, "qmp_capabilities", NULL, left_ms (deadline), NULL);
  if (r != 0) {
    snprintf (err, errlen, "qmp_capabilities failed: %s", q->err);
    goto fail;
  }
  return q;

 fail:
  json_object_put (greeting);
  ctl_qmp_close (q);
  return NULL;
}

struct ctl_qmp *
ctl_qmp_connect (const char *path, int timeout_ms, char *err, size_t errlen)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;

  if (strlen (path) >= sizeof sun.sun_path) {
    snprintf (err, errlen, "the socket path is longer than %zu bytes",
              sizeof sun.sun_path - 1);
    return NULL;
  }
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf (err, errlen, "socket: %s", strerror (errno));
    return NULL;
  }
  while (connect (fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
    int e = errno;
    if (e == EINTR)
      continue;
    close (fd);
    if (e == ENOENT)
      snprintf (err, errlen, "no such socket (is the instance running, with "
                "-qmp unix:%s,server=on,wait=off?)", path);
    else if (e == ECONNREFUSED)
      snprintf (err, errlen, "nobody is listening on it (has QEMU exited?)");
    else
      snprintf (err, errlen, "%s", strerror (e));
    return NULL;
  }
  return ctl_qmp_open_fd (fd, timeout_ms, err, errlen);
}

int
ctl_qmp_execute (struct ctl_qmp *q, const char *cmd, struct json_object *args,
                 int timeout_ms, struct json_object **ret)
{
  int64_t deadline = now_ms () + timeout_ms;
  int64_t id = q->next_id++;
  struct json_object *m = json_object_new_object (), *reply = NULL, *v;
  int r;

  if (ret)
    *ret = NULL;
  if (m == NULL) {
    json_object_put (args);
    set_err (q, "out of memory");
    return -ENOMEM;
  }
  json_object_object_add (m, "execute", json_object_new_string (cmd));
  if (args)
    json_object_object_add (m, "arguments", args);     /* m owns it now */
  json_object_object_add (m, "id", json_object_new_int64 (id));
  const char *s = json_object_to_json_string_ext (m, JSON_C_TO_STRING_PLAIN
                                                  | JSON_C_TO_STRING_NOSLASHESCAPE);
  size_t len = strlen (s);
  char *line = malloc (len + 2);
  if (line == NULL) {
    json_object_put (m);
    set_err (q, "out of memory");
    return -ENOMEM;
  }
  memcpy (line, s, len);
  line[len] = '\n';
  json_object_put (m);
  r = send_all (q, line, len + 1, deadline);
  free (line);
  if (r < 0)
    return r;

  for (;;) {
    if ((r = read_message (q, deadline, &reply)) < 0) {
      if (r == -ETIMEDOUT)
        set_err (q, "QEMU did not answer %s within %d ms", cmd, timeout_ms);
      return r;
    }
    if (is_event (reply)) {
      queue_event (q, reply);
      continue;
    }
    /* A reply to another command (none is outstanding) is not ours. */
    if (!json_object_object_get_ex (reply, "id", &v)
        || !json_object_is_type (v, json_type_int)
        || json_object_get_int64 (v) != id) {
      json_object_put (reply);
      continue;
    }
    break;
  }

  if (json_object_object_get_ex (reply, "return", &v)) {
    if (ret)
      *ret = json_object_get (v);
    r = 0;
  }
  else if (json_object_object_get_ex (reply, "error", &v)
           && json_object_is_type (v, json_type_object)) {
    struct json_object *desc, *cls;
    const char *d = json_object_object_get_ex (v, "desc", &desc)
      ? json_object_get_string (desc) : "(no description)";
    set_err (q, "%s", d);
    if (json_object_object_get_ex (v, "class", &cls))
      snprintf (q->err_class, sizeof q->err_class, "%s",
                json_object_get_string (cls));
    r = 1;
  }
  else {
    set_err (q, "QEMU answered %s with neither \"return\" nor \"error\"", cmd);
    r = -EPROTO;
  }
  json_object_put (reply);
  return r;
}

/* Is message EV one of event NAMES, with data member KEY equal to VALUE? */
static bool
event_matches (struct json_object *ev, const char *const *names,
               const char *key, const char *value)
{
  struct json_object *e, *data, *v;
  if (!json_object_object_get_ex (ev, "event", &e))
    return false;
  const char *name = json_object_get_string (e);
  bool found = false;
  for (int i = 0; names[i] && !found; i++)
    found = strcmp (name, names[i]) == 0;
  if (!found)
    return false;
  if (key == NULL)
    return true;
  return json_object_object_get_ex (ev, "data", &data)
    && json_object_object_get_ex (data, key, &v)
    && json_object_is_type (v, json_type_string)
    && strcmp (json_object_get_string (v), value) == 0;
}

int
ctl_qmp_wait_event (struct ctl_qmp *q, const char *const *names,
                    const char *key, const char *value, int timeout_ms,
                    struct json_object **event)
{
  int64_t deadline = now_ms () + timeout_ms;
  struct json_object *m;
  int r;

  if (event)
    *event = NULL;
  for (size_t i = 0; i < json_object_array_length (q->events); i++) {
    m = json_object_array_get_idx (q->events, i);
    if (event_matches (m, names, key, value)) {
      if (event)
        *event = json_object_get (m);
      json_object_array_del_idx (q->events, i, 1);
      return 0;
    }
  }
  for (;;) {
    if ((r = read_message (q, deadline, &m)) < 0) {
      if (r == -ETIMEDOUT)
        set_err (q, "no %s event within %d ms", names[0], timeout_ms);
      return r;
    }
    if (!is_event (m)) {
      json_object_put (m);      /* a late reply: nothing waits for it */
      continue;
    }
    if (event_matches (m, names, key, value)) {
      if (event)
        *event = m;
      else
        json_object_put (m);
      return 0;
    }
    queue_event (q, m);
  }
}
