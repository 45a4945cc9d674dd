/* blockd/config.c — one table of settings drives the command-line flags,
 * the config file and --dump-config. */
#include "blockd/internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <unistd.h>

#include "common/log.h"
#include "common/size.h"
#include "volume/internal.h"

struct blk_config blk_cfg;

enum type { T_STRING, T_SIZE, T_INT, T_HOSTPORT };

struct setting {
  const char *name;
  enum type type;
  size_t off, len;            /* field in struct blk_config (len for strings) */
  int64_t min, max;           /* for T_INT and T_SIZE (max 0: none) */
  const char *def;            /* default as text; NULL: computed */
  const char *help;
};

#define S(field) offsetof (struct blk_config, field), sizeof ((struct blk_config *) 0)->field
static const struct setting settings[] = {
  { "data-dir", T_STRING, S (data_dir), 0, 0, "./var/blockd",
    "directory holding the pool file and the metadata" },
  { "capacity", T_SIZE, S (capacity), 0, 0, "0",
    "pool size (e.g. 100G); 0 keeps the existing pool or takes 90% of the free disk" },
  { "chunk-size", T_SIZE, S (chunk_size), 4096, 64 << 20, "1M",
    "allocation unit of a new store (power of two, 4K..64M)" },
  { "nbd", T_HOSTPORT, S (nbd), 0, 0, "127.0.0.1:10809",
    "NBD listen address HOST:PORT (\"none\" to disable)" },
  { "nbd-unix", T_STRING, S (nbd_unix), 0, 0, "",
    "NBD listen unix socket PATH (optional)" },
  { "api", T_HOSTPORT, S (api), 0, 0, "127.0.0.1:10810",
    "HTTP API listen address HOST:PORT" },
  { "threads", T_INT, S (threads), 1, 64, NULL,
    "event loop threads (default: number of CPUs)" },
  { "max-connections", T_INT, S (max_connections), 1, 1000000, "4096",
    "NBD connections accepted at once" },
  { "max-inflight", T_INT, S (max_inflight), 1, 4096, "256",
    "requests in flight per NBD connection before it stops reading" },
  { "poll-us", T_INT, S (poll_us), 0, 10000, "50",
    "microseconds a loop keeps polling for completions after its last I/O before it sleeps "
    "(lower latency at queue depth 1; 0: always sleep; an idle loop sleeps)" },
  { "batch-us", T_INT, S (batch_us), 0, 10000, "50",
    "while a single connection has many requests in flight on a loop, the loop waits for a "
    "batch of completions (a quarter of them): while the disk owes them all, for them (at "
    "most 10 ms), or else this many microseconds before it takes what has come (fewer "
    "wake-ups and disk notifications per request; 0: no batches, take the first; needs "
    "Linux 6.12)" },
  { "handshake-timeout", T_INT, S (handshake_timeout), 1, 3600, "30",
    "seconds a client may take to finish the NBD handshake" },
  { "hole-replies", T_INT, S (hole_replies), 0, 1, "1",
    "1: a read of never-written space is answered with an NBD hole chunk, not its zeros "
    "(clients with structured replies); 0: the zeros are sent" },
  { "read-ahead", T_SIZE, S (read_ahead), 0, 16 << 20, "2M",
    "bytes a connection reads ahead of each stream of a client's sequential reads (requests of "
    "4K to 256K, each where the one before ended; up to 4 streams, at most 64 reads in all; "
    "smaller requests are read ahead in blocks that answer several); a write from any "
    "connection to the same MiB of the volume discards what was read ahead there; 0: off" },
  { "log-level", T_STRING, S (log_level), 0, 0, "info", "error, warn, info or debug" },
  { "fault-injection", T_INT, S (fault_injection), 0, 1, "0",
    "1 enables POST /v1/debug/faults, which makes pool I/O fail or wait (for tests only)" },
};
#undef S
#define NSETTINGS (sizeof settings / sizeof settings[0])

int
blk_split_hostport (const char *s, char *host, size_t hostlen, int *port)
{
  const char *colon;
  const char *h = s;
  size_t hl;
  if (s[0] == '[') {
    const char *rb = strchr (s, ']');
    if (rb == NULL || rb[1] != ':')
      return -EINVAL;
    h = s + 1;
    hl = (size_t) (rb - h);
    colon = rb + 1;
  }
  else {
    colon = strrchr (s, ':');
    if (colon == NULL)
      return -EINVAL;
    hl = (size_t) (colon - s);
  }
  if (hl == 0 || hl >= hostlen)
    return -EINVAL;
  char *end;
  long p = strtol (colon + 1, &end, 10);
  if (*end || end == colon + 1 || p < 0 || p > 65535)
    return -EINVAL;
  memcpy (host, h, hl);
  host[hl] = '\0';
  *port = (int) p;
  return 0;
}

int
blk_resolve (const char *hostport, struct addrinfo **out, char *err, size_t errlen)
{
  char host[128], port[16];
  int p;
  if (blk_split_hostport (hostport, host, sizeof host, &p) < 0) {
    snprintf (err, errlen, "\"%s\" is not HOST:PORT", hostport);
    return -EINVAL;
  }
  snprintf (port, sizeof port, "%d", p);
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
  int r = getaddrinfo (host, port, &hints, out);
  if (r) {
    snprintf (err, errlen, "cannot resolve %s: %s", hostport, gai_strerror (r));
    return -EINVAL;
  }
  return 0;
}

static int
set_one (struct blk_config *c, const struct setting *s, const char *value, char *err, size_t errlen)
{
  char *field = (char *) c + s->off;
  switch (s->type) {
  case T_HOSTPORT: {
    char host[128];
    int port;
    if (strcmp (value, "none") != 0 && strcmp (value, "") != 0
        && blk_split_hostport (value, host, sizeof host, &port) < 0) {
      set_err (err, errlen, "%s: \"%s\" is not HOST:PORT (e.g. 127.0.0.1:10809)", s->name, value);
      return -EINVAL;
    }
    if (strcmp (value, "none") == 0)
      value = "";
  }
    /* fall through */
  case T_STRING:
    if (strlen (value) >= s->len) {
      set_err (err, errlen, "%s: value is longer than %zu characters", s->name, s->len - 1);
      return -EINVAL;
    }
    memcpy (field, value, strlen (value) + 1);
    return 0;
  case T_SIZE: {
    uint64_t v;
    if (size_parse (value, &v) < 0) {
      set_err (err, errlen, "%s: \"%s\" is not a size (e.g. 512, 4K, 10G, 2T)", s->name, value);
      return -EINVAL;
    }
    if ((s->min && v < (uint64_t) s->min) || (s->max && v > (uint64_t) s->max)) {
      set_err (err, errlen, "%s: %s is out of range", s->name, value);
      return -EINVAL;
    }
    memcpy (field, &v, sizeof v);
    return 0;
  }
  case T_INT: {
    char *end;
    errno = 0;
    long long v = strtoll (value, &end, 10);
    if (errno || *end || end == value || v < s->min || v > s->max) {
      set_err (err, errlen, "%s: \"%s\" is not a whole number from %lld to %lld", s->name,
               value, (long long) s->min, (long long) s->max);
      return -EINVAL;
    }
    int64_t x = v;
    memcpy (field, &x, sizeof x);
    return 0;
  }
  }
  return -EINVAL;
}

void
blk_config_defaults (struct blk_config *c)
{
  memset (c, 0, sizeof *c);
  for (size_t i = 0; i < NSETTINGS; i++)
    if (settings[i].def)
      set_one (c, &settings[i], settings[i].def, NULL, 0);
  long n = sysconf (_SC_NPROCESSORS_ONLN);
  c->threads = n > 0 ? (n > 64 ? 64 : n) : 1;
}

int
blk_config_set (struct blk_config *c, const char *name, const char *value, char *err, size_t errlen)
{
  for (size_t i = 0; i < NSETTINGS; i++)
    if (strcmp (settings[i].name, name) == 0)
      return set_one (c, &settings[i], value, err, errlen);
  set_err (err, errlen, "unknown setting \"%s\" (see --help)", name);
  return -EINVAL;
}

static char *
trim (char *s)
{
  while (isspace ((unsigned char) *s)) s++;
  char *e = s + strlen (s);
  while (e > s && isspace ((unsigned char) e[-1])) e--;
  *e = '\0';
  return s;
}

int
blk_config_load (struct blk_config *c, const char *path, char *err, size_t errlen)
{
  FILE *f = fopen (path, "r");
  if (f == NULL) {
    set_err (err, errlen, "cannot read config file %s: %s", path, strerror (errno));
    return -errno;
  }
  char line[1024];
  int lineno = 0, r = 0;
  while (r == 0 && fgets (line, sizeof line, f)) {
    lineno++;
    char *hash = strchr (line, '#');
    if (hash)
      *hash = '\0';
    char *s = trim (line);
    if (*s == '\0')
      continue;
    char *eq = strchr (s, '=');
    if (eq == NULL) {
      set_err (err, errlen, "%s:%d: expected \"name = value\"", path, lineno);
      r = -EINVAL;
      break;
    }
    *eq = '\0';
    char *name = trim (s), *value = trim (eq + 1);
    size_t vl = strlen (value);
    if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
      value[vl - 1] = '\0';
      value++;
    }
    char sub[400];
    if ((r = blk_config_set (c, name, value, sub, sizeof sub)) < 0)
      set_err (err, errlen, "%s:%d: %s", path, lineno, sub);
  }
  fclose (f);
  return r;
}

void
blk_config_dump (const struct blk_config *c, FILE *out)
{
  for (size_t i = 0; i < NSETTINGS; i++) {
    const struct setting *s = &settings[i];
    const char *field = (const char *) c + s->off;
    fprintf (out, "# %s\n", s->help);
    switch (s->type) {
    case T_STRING:
    case T_HOSTPORT:
      fprintf (out, "%s = \"%s\"\n", s->name, *field ? field : (s->type == T_HOSTPORT ? "none" : ""));
      break;
    case T_SIZE: {
      uint64_t v;
      char buf[32];
      memcpy (&v, field, sizeof v);
      fprintf (out, "%s = %s\n", s->name, size_format (v, buf, sizeof buf));
      break;
    }
    case T_INT: {
      int64_t v;
      memcpy (&v, field, sizeof v);
      fprintf (out, "%s = %lld\n", s->name, (long long) v);
      break;
    }
    }
  }
}

void
blk_config_usage (FILE *out)
{
  fprintf (out,
           "Usage: blockd [OPTIONS]\n"
           "       blockd --check [--data-dir DIR]\n"
           "\n"
           "Serves thin-provisioned volumes over NBD, managed through an HTTP/JSON API\n"
           "(see blockctl).  Runs in the foreground and logs to stderr.\n"
           "\n"
           "Settings (each also a \"name = value\" line in --config FILE):\n");
  for (size_t i = 0; i < NSETTINGS; i++) {
    const struct setting *s = &settings[i];
    const char *arg = s->type == T_SIZE ? "SIZE" : s->type == T_INT ? "N"
                    : s->type == T_HOSTPORT ? "HOST:PORT" : "VALUE";
    char left[64];
    snprintf (left, sizeof left, "--%s %s", s->name, arg);
    fprintf (out, "  %-28s %s", left, s->help);
    if (s->def && *s->def)
      fprintf (out, " [%s]", s->def);
    fputc ('\n', out);
  }
  fprintf (out,
           "\nOther options:\n"
           "  --config FILE                read settings from FILE (flags given later win)\n"
           "  --dump-config                print the effective settings and exit\n"
           "  --check                      verify the store in --data-dir and exit\n"
           "                               (0 consistent, 1 problems found, 2 unreadable)\n"
           "  --run CMD                    start, run CMD with $BLOCKD_API and $BLOCKD_NBD\n"
           "                               (a volume's URI is $BLOCKD_NBD/NAME; with --nbd-unix,\n"
           "                               $BLOCKD_NBD_UNIX is the socket) set, stop when it\n"
           "                               exits and exit with its status\n"
           "  --help                       this text\n"
           "\nSizes take binary suffixes: 512, 4K, 10G, 2T.\n");
}
