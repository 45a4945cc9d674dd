/* client/qemu-disk.c — how a blockd volume is plugged into QEMU: the NBD
 * server from the volume's nbd_uri, the block node and device names, the
 * virtio-blk serial, and the same disk as QMP arguments (blockdev-add,
 * device_add) or as command-line options (-blockdev, -device).
 *
 * Pure functions, no I/O: tests/unit/test-qmp.c checks them.
 *
 *   node-name / device id   "blockd-NAME" if that fits QEMU's 31 characters,
 *                           else "blockd_" + the first 24 hex digits of the
 *                           volume's id ('_' keeps the two kinds apart)
 *   serial                  the first 20 characters of the volume's id:
 *                           virtio-blk reports at most 20 bytes, and udev
 *                           names the disk /dev/disk/by-id/virtio-SERIAL */
#include "client/blockctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_PREFIX      "blockd-"
#define NODE_ID_PREFIX   "blockd_"
#define NBD_DEFAULT_PORT "10809"

static int __attribute__ ((format (printf, 3, 4)))
einval (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
  return -EINVAL;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decode S[0..len) into OUT (room for outlen bytes with the NUL).
 * Returns false when it does not fit, has a bad escape or a NUL byte. */
static bool
pct_decode (const char *s, size_t len, char *out, size_t outlen)
{
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '%') {
      int hi, lo;
      if (len - i < 3 || (hi = hexval (s[i + 1])) < 0
          || (lo = hexval (s[i + 2])) < 0 || (hi | lo) == 0)
        return false;
      c = (char) (hi << 4 | lo);
      i += 2;
    }
    if (o + 1 >= outlen)
      return false;
    out[o++] = c;
  }
  out[o] = '\0';
  return true;
}

int
ctl_nbd_uri_parse (const char *uri, struct ctl_nbd_server *out,
                   char *err, size_t errlen)
{
  memset (out, 0, sizeof *out);

  if (strncmp (uri, "nbd+unix:///", 12) == 0) {
    const char *name = uri + 12, *q = strchr (name, '?');
    if (q == NULL)
      return einval (err, errlen, "NBD URI \"%s\" has no ?socket=PATH", uri);
    if (!pct_decode (name, (size_t) (q - name), out->export_name,
                     sizeof out->export_name))
      return einval (err, errlen, "NBD URI \"%s\": bad export name", uri);
    /* The query: socket=PATH among other parameters. */
    for (const char *p = q + 1; *p; ) {
      const char *amp = strchr (p, '&');
      size_t plen = amp ? (size_t) (amp - p) : strlen (p);
      if (plen > 7 && strncmp (p, "socket=", 7) == 0
          && !pct_decode (p + 7, plen - 7, out->path, sizeof out->path))
        return einval (err, errlen, "NBD URI \"%s\": bad or too long "
                       "socket path", uri);
      p += plen + (amp != NULL);
    }
    if (out->path[0] == '\0')
      return einval (err, errlen, "NBD URI \"%s\" has no ?socket=PATH", uri);
    out->unix_socket = true;
    return 0;
  }

  if (strncmp (uri, "nbd://", 6) != 0)
    return einval (err, errlen, "NBD URI \"%s\" is not nbd://HOST:PORT/NAME "
                   "or nbd+unix:///NAME?socket=PATH (TLS, nbds://, is not "
                   "supported here)", uri);
  const char *h = uri + 6, *slash = strchr (h, '/'), *hend, *port = NULL;
  if (slash == NULL)
    slash = h + strlen (h);
  if (*h == '[') {                      /* [IPv6]:PORT */
    const char *rb = memchr (h, ']', (size_t) (slash - h));
    if (rb == NULL)
      return einval (err, errlen, "NBD URI \"%s\": unterminated [address]",
                     uri);
    if (rb + 1 < slash && rb[1] != ':')
      return einval (err, errlen, "NBD URI \"%s\": junk after ]", uri);
    if (rb + 1 < slash)
      port = rb + 2;
    hend = rb;
    h++;
  }
  else {
    const char *colon = memchr (h, ':', (size_t) (slash - h));
    hend = colon ? colon : slash;
    if (colon)
      port = colon + 1;
  }
  if (hend == h || (size_t) (hend - h) >= sizeof out->host)
    return einval (err, errlen, "NBD URI \"%s\": bad host", uri);
  memcpy (out->host, h, (size_t) (hend - h));
  if (port) {
    size_t plen = (size_t) (slash - port);
    if (plen == 0 || plen >= sizeof out->port
        || strspn (port, "0123456789") < plen)
      return einval (err, errlen, "NBD URI \"%s\": bad port", uri);
    memcpy (out->port, port, plen);
  }
  else
    strcpy (out->port, NBD_DEFAULT_PORT);
  const char *name = *slash ? slash + 1 : slash;
  size_t nlen = strcspn (name, "?#");
  if (!pct_decode (name, nlen, out->export_name, sizeof out->export_name))
    return einval (err, errlen, "NBD URI \"%s\": bad export name", uri);
  return 0;
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
static bool
qemu_id_ok (const char *s)
{
  if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
    return false;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')
          || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'
          || *s == '_'))
      return false;
  return true;
}

int
ctl_qemu_id (const char *name, const char *id, char out[CTL_QEMU_ID_MAX + 1])
{
  if (strlen (NODE_PREFIX) + strlen (name) <= CTL_QEMU_ID_MAX) {
    snprintf (out, CTL_QEMU_ID_MAX + 1, NODE_PREFIX "%s", name);
    if (qemu_id_ok (out))
      return 0;
  }
  /* From the id: its hex digits, enough for 96 bits. */
  size_t n = strlen (NODE_ID_PREFIX);
  strcpy (out, NODE_ID_PREFIX);
  for (const char *p = id; *p && n < CTL_QEMU_ID_MAX; p++)
    if (hexval (*p) >= 0)
      out[n++] = *p;
    else if (*p != '-')
      return -EINVAL;
  out[n] = '\0';
  return n == CTL_QEMU_ID_MAX ? 0 : -EINVAL;
}

void
ctl_qemu_serial (const char *id, char out[CTL_SERIAL_MAX + 1])
{
  snprintf (out, CTL_SERIAL_MAX + 1, "%s", id);
}

struct json_object *
ctl_qemu_blockdev (const struct ctl_nbd_server *s, const char *node)
{
  struct json_object *a = json_object_new_object ();
  struct json_object *srv = json_object_new_object ();

  json_object_object_add (a, "driver", json_object_new_string ("nbd"));
  json_object_object_add (a, "node-name", json_object_new_string (node));
  if (s->unix_socket) {
    json_object_object_add (srv, "type", json_object_new_string ("unix"));
    json_object_object_add (srv, "path", json_object_new_string (s->path));
  }
  else {
    json_object_object_add (srv, "type", json_object_new_string ("inet"));
    json_object_object_add (srv, "host", json_object_new_string (s->host));
    /* InetSocketAddress.port is a string (it may be a service name). */
    json_object_object_add (srv, "port", json_object_new_string (s->port));
  }
  json_object_object_add (a, "server", srv);
  json_object_object_add (a, "export", json_object_new_string (s->export_name));
  /* The guest's discards (fstrim, blkdiscard, mount -o discard) go on to
   * blockd as trims, which give whole chunks back to the pool; QEMU's
   * default, "ignore", answers them without passing them on, and the
   * volume keeps space its guest has freed. */
  json_object_object_add (a, "discard", json_object_new_string ("unmap"));
  /* When the connection to blockd breaks (blockd restarted or upgraded),
   * QEMU reconnects and holds the guest's requests for up to this long
   * instead of failing them: the guest sees a pause, not I/O errors.  Not
   * longer: a QEMU told to quit while blockd is down waits it out too. */
  json_object_object_add (a, "reconnect-delay", json_object_new_int (CTL_NBD_RECONNECT_DELAY));
  return a;
}

struct json_object *
ctl_qemu_device (const char *node, const char *serial, bool boot,
                 const char *bus)
{
  struct json_object *a = json_object_new_object ();

  json_object_object_add (a, "driver", json_object_new_string ("virtio-blk-pci"));
  json_object_object_add (a, "id", json_object_new_string (node));
  json_object_object_add (a, "drive", json_object_new_string (node));
  json_object_object_add (a, "serial", json_object_new_string (serial));
  if (bus)
    json_object_object_add (a, "bus", json_object_new_string (bus));
  /* A request that fails because blockd is away (QEMU's NBD client fails
   * the one that finds the connection broken; reconnect-delay covers the
   * rest) pauses the VM instead of reaching the guest as an I/O error, as
   * a cloud disk stalls rather than fails: "cont" retries it once blockd
   * is back. */
  json_object_object_add (a, "rerror", json_object_new_string ("stop"));
  json_object_object_add (a, "werror", json_object_new_string ("stop"));
  /* 1, not 0: direct kernel boot (-kernel) takes bootindex 0 for itself,
   * and 1 still puts the system disk before every other disk. */
  if (boot)
    json_object_object_add (a, "bootindex", json_object_new_int (1));
  return a;
}

/* Append S to the growing string *BUF (length *LEN), doubling commas when
 * ESCAPE (QEMU's option syntax: ",," is a literal comma).  Returns false
 * on out of memory (*BUF freed and NULL). */
static bool
append (char **buf, size_t *len, const char *s, bool escape)
{
  size_t extra = strlen (s);
  if (escape)
    for (const char *p = s; *p; p++)
      extra += *p == ',';
  char *b = realloc (*buf, *len + extra + 1);
  if (b == NULL) {
    free (*buf);
    *buf = NULL;
    return false;
  }
  for (; *s; s++) {
    b[(*len)++] = *s;
    if (escape && *s == ',')
      b[(*len)++] = ',';
  }
  b[*len] = '\0';
  *buf = b;
  return true;
}

/* Append OBJ's members as ",PREFIXkey=value", nested objects with dotted
 * keys.  IMPLIED: a member written first as its bare value ("driver"). */
static bool
flatten (char **buf, size_t *len, struct json_object *obj, const char *prefix,
         const char *implied)
{
  json_object_object_foreach (obj, key, val) {
    if (implied && strcmp (key, implied) == 0)
      continue;
    char full[256];
    snprintf (full, sizeof full, "%s%s", prefix, key);
    if (json_object_is_type (val, json_type_object)) {
      char sub[sizeof full + 1];
      snprintf (sub, sizeof sub, "%s.", full);
      if (!flatten (buf, len, val, sub, NULL))
        return false;
      continue;
    }
    if (!append (buf, len, *len ? "," : "", false)
        || !append (buf, len, full, false) || !append (buf, len, "=", false)
        || !append (buf, len, json_object_get_string (val), true))
      return false;
  }
  return true;
}

char *
ctl_qemu_optstr (struct json_object *args, const char *implied)
{
  char *buf = NULL;
  size_t len = 0;
  struct json_object *v;

  if (!append (&buf, &len, "", false))
    return NULL;
  if (implied && json_object_object_get_ex (args, implied, &v)
      && !append (&buf, &len, json_object_get_string (v), true))
    return NULL;
  if (!flatten (&buf, &len, args, "", implied))
    return NULL;
  return buf;
}

char *
ctl_shell_quote (const char *s)
{
  /* Words made only of these need no quotes. */
  static const char safe[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                             "0123456789,._+:@%/=-";
  if (*s && strspn (s, safe) == strlen (s))
    return strdup (s);
  /* 'it'\''s': each ' closes, escapes one, reopens. */
  size_t n = 2;
  for (const char *p = s; *p; p++)
    n += *p == '\'' ? 4 : 1;
  char *out = malloc (n + 1), *o = out;
  if (out == NULL)
    return NULL;
  *o++ = '\'';
  for (const char *p = s; *p; p++) {
    if (*p == '\'') {
      memcpy (o, "'\\''", 4);
      o += 4;
    }
    else
      *o++ = *p;
  }
  *o++ = '\'';
  *o = '\0';
  return out;
}
