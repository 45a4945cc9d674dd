/* client/stats-cmd.c — "blockctl volume stats NAME": what clients asked of
 * a volume (GET /v1/volumes/NAME/stats), as totals, or every --interval
 * seconds as rates, the way iostat shows a disk. */
#include "client/blockctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/size.h"

#define USAGE_STATS "blockctl volume stats NAME [--interval SECONDS [--count N]]"

/* The kinds of request, in the API's order (volume/volume.h). */
enum { READ, WRITE, FLUSH, TRIM, ZERO, NKINDS };
static const char *const kinds[NKINDS] = { "read", "write", "flush", "trim", "zero" };

struct sample {
  uint64_t n[NKINDS][5];        /* ops, bytes, errors, time_us, storage_time_us */
  bool has_storage;             /* storage_time_us was there (a blockd from before it: no) */
  char id[64], since[32];       /* whose counts, counted since when */
  double t;                     /* CLOCK_MONOTONIC seconds when read */
};

/* Read the counters of a stats object into *s.  Returns false if one is
 * missing or not a count (storage_time_us may be missing everywhere: a
 * blockd from before it). */
static bool
parse_sample (struct json_object *j, struct sample *s)
{
  static const char *const fields[5] = { "ops", "bytes", "errors", "time_us", "storage_time_us" };
  unsigned with_storage = 0;
  for (unsigned k = 0; k < NKINDS; k++) {
    struct json_object *o;
    if (!json_object_object_get_ex (j, kinds[k], &o))
      return false;
    for (unsigned f = 0; f < 5; f++) {
      s->n[k][f] = 0;
      if (f == 4 && !json_object_object_get_ex (o, fields[f], NULL))
        continue;                 /* a blockd from before the store's count */
      if (!ctl_json_u64 (o, fields[f], &s->n[k][f]))
        return false;
      if (f == 4)
        with_storage++;
    }
  }
  if (with_storage != 0 && with_storage != NKINDS)
    return false;
  s->has_storage = with_storage != 0;
  struct json_object *v;
  snprintf (s->id, sizeof s->id, "%s",
            json_object_object_get_ex (j, "id", &v) ? json_object_get_string (v) : "");
  snprintf (s->since, sizeof s->since, "%s",
            json_object_object_get_ex (j, "since", &v) ? json_object_get_string (v) : "");
  s->t = ctl_now_s ();
  return true;
}

/* Are b's counts a continuation of a's: the same volume, counted since
 * the same time, none lower?  (Not so after blockd restarted, or the
 * volume was deleted and made again under its name.) */
static bool
continues (const struct sample *a, const struct sample *b)
{
  if (strcmp (a->id, b->id) || strcmp (a->since, b->since))
    return false;
  for (unsigned k = 0; k < NKINDS; k++)
    for (unsigned f = 0; f < 5; f++)
      if (b->n[k][f] < a->n[k][f])
        return false;
  return true;
}

/* GET path into *s (and the object into *out, when wanted).  Returns an
 * exit code. */
static int
get_sample (const struct ctl_globals *g, const char *path, struct sample *s,
            struct json_object **out)
{
  struct json_object *j;
  int r = ctl_http (g, "GET", path, NULL, &j);
  if (r != CTL_EXIT_OK)
    return r;
  if (!json_object_is_type (j, json_type_object) || !parse_sample (j, s)) {
    ctl_error ("blockd at %s sent an unexpected answer to GET %s (not volume "
               "statistics)", g->api, path);
    json_object_put (j);
    return CTL_EXIT_SERVER;
  }
  if (out)
    *out = j;
  else
    json_object_put (j);
  return CTL_EXIT_OK;
}

static void
print_totals (struct json_object *j, const struct sample *s)
{
  struct json_object *v;
  const char *name = json_object_object_get_ex (j, "name", &v) ? json_object_get_string (v) : "?";
  printf ("volume: %s\nsince: %s\n", name, s->since);
  printf ("%-6s %12s %10s %8s %14s %14s\n", "kind", "requests", "bytes", "errors", "avg latency",
          "on the store");
  for (unsigned k = 0; k < NKINDS; k++) {
    char b[32], lat[32] = "-", st[32] = "-";
    const uint64_t *n = s->n[k];
    if (n[0]) {
      snprintf (lat, sizeof lat, "%.0f us", (double) n[3] / (double) n[0]);
      if (s->has_storage)
        snprintf (st, sizeof st, "%.0f us", (double) n[4] / (double) n[0]);
    }
    printf ("%-6s %12llu %10s %8llu %14s %14s\n", kinds[k], (unsigned long long) n[0],
            k == FLUSH ? "-" : size_format (n[1], b, sizeof b), (unsigned long long) n[2], lat, st);
  }
}

/* Per second over the interval from a to b: requests, MiB, the average
 * latency of kind k, and the average number of requests in flight (the
 * time they took, summed, per second: Little's law). */
static double
rate (const struct sample *a, const struct sample *b, unsigned k, unsigned f)
{
  double dt = b->t - a->t;
  return dt > 0 ? (double) (b->n[k][f] - a->n[k][f]) / dt : 0;
}

/* The average of counter f (time_us, storage_time_us) per request of
 * kind k over the interval from a to b. */
static double
latency_us (const struct sample *a, const struct sample *b, unsigned k, unsigned f)
{
  uint64_t ops = b->n[k][0] - a->n[k][0];
  return ops ? (double) (b->n[k][f] - a->n[k][f]) / (double) ops : 0;
}

static double
in_flight (const struct sample *a, const struct sample *b)
{
  double us = 0;
  for (unsigned k = 0; k < NKINDS; k++)
    us += (double) (b->n[k][3] - a->n[k][3]);
  return b->t > a->t ? us / 1e6 / (b->t - a->t) : 0;
}

static void
print_rates (const struct ctl_globals *g, const struct sample *a, const struct sample *b)
{
  if (g->json) {
    struct json_object *o = json_object_new_object ();
    json_object_object_add (o, "id", json_object_new_string (b->id));
    json_object_object_add (o, "seconds", json_object_new_double (b->t - a->t));
    for (unsigned k = 0; k < NKINDS; k++) {
      struct json_object *c = json_object_new_object ();
      json_object_object_add (c, "ops_per_second", json_object_new_double (rate (a, b, k, 0)));
      json_object_object_add (c, "bytes_per_second", json_object_new_double (rate (a, b, k, 1)));
      json_object_object_add (c, "errors",
                              json_object_new_int64 ((int64_t) (b->n[k][2] - a->n[k][2])));
      json_object_object_add (c, "latency_us", json_object_new_double (latency_us (a, b, k, 3)));
      json_object_object_add (c, "storage_latency_us",
                              b->has_storage ? json_object_new_double (latency_us (a, b, k, 4))
                                             : NULL);
      json_object_object_add (o, kinds[k], c);
    }
    json_object_object_add (o, "in_flight", json_object_new_double (in_flight (a, b)));
    puts (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN));
    json_object_put (o);
  }
  else {
    char rst[32] = "-", wst[32] = "-";
    if (b->has_storage) {
      snprintf (rst, sizeof rst, "%.0f", latency_us (a, b, READ, 4));
      snprintf (wst, sizeof wst, "%.0f", latency_us (a, b, WRITE, 4));
    }
    printf ("%9.0f %8.1f %8.0f %8s %9.0f %8.1f %8.0f %8s %7.0f %8.0f %7.0f %8.2f\n",
            rate (a, b, READ, 0), rate (a, b, READ, 1) / 1048576, latency_us (a, b, READ, 3), rst,
            rate (a, b, WRITE, 0), rate (a, b, WRITE, 1) / 1048576, latency_us (a, b, WRITE, 3), wst,
            rate (a, b, FLUSH, 0), latency_us (a, b, FLUSH, 3),
            rate (a, b, TRIM, 0) + rate (a, b, ZERO, 0), in_flight (a, b));
  }
  fflush (stdout);
}

/* A decimal number (digits, at most one '.') from min to max. */
static int
parse_count (const char *what, const char *s, double min, double max, double *out)
{
  char *end;
  errno = 0;
  double v = s ? strtod (s, &end) : 0;
  bool plain = s && s[0] && strspn (s, "0123456789.") == strlen (s)
               && strchr (s, '.') == strrchr (s, '.');
  if (s && (!plain || errno || end == s || *end || !(v >= min && v <= max)))
    return ctl_usage_error ("volume stats: %s \"%s\" is invalid (a number from %.15g to %.15g)",
                            what, s, min, max);
  *out = v;
  return 0;
}

int
ctl_cmd_volume_stats (const struct ctl_globals *g, int argc, char **argv)
{
  const char *interval = NULL, *count = NULL, *pos[1];
  const struct ctl_opt opts[] = {
    { "--interval", &interval, NULL }, { "--count", &count, NULL }, { NULL, NULL, NULL }
  };
  int npos, r;
  double every = 0, times = 0;

  if ((r = ctl_parse_opts ("volume stats", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume stats: missing NAME (usage: " USAGE_STATS ")");
  if ((r = ctl_check_name ("volume", pos[0]))
      || (r = parse_count ("--interval", interval, 0.1, 86400, &every))
      || (r = parse_count ("--count", count, 1, 1e9, &times)))
    return r;
  if (count && !interval)
    return ctl_usage_error ("volume stats: --count needs --interval (usage: " USAGE_STATS ")");
  if (times != (double) (long long) times)
    return ctl_usage_error ("volume stats: --count \"%s\" is not a whole number", count);

  char *path = ctl_ref_path ("/v1/volumes/", pos[0], "/stats");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  struct sample a, b;
  struct json_object *j = NULL;
  r = get_sample (g, path, &a, interval ? NULL : &j);
  if (r == CTL_EXIT_OK && !interval) {
    if (g->json)
      ctl_print_json (j);
    else
      print_totals (j, &a);
    json_object_put (j);
  }
  if (r == CTL_EXIT_OK && interval && !g->json)
    printf ("%9s %8s %8s %8s %9s %8s %8s %8s %7s %8s %7s %8s\n", "r/s", "rMiB/s", "r_lat_us",
            "r_st_us", "w/s", "wMiB/s", "w_lat_us", "w_st_us", "f/s", "f_lat_us", "d/s", "inflight");
  for (long long i = 0; r == CTL_EXIT_OK && interval && (!count || i < (long long) times); i++) {
    struct timespec ts = { (time_t) every, (long) ((every - (double) (time_t) every) * 1e9) };
    while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
      ;
    if ((r = get_sample (g, path, &b, NULL)) != CTL_EXIT_OK)
      break;
    if (continues (&a, &b))
      print_rates (g, &a, &b);
    else {
      fprintf (stderr, "blockctl: the counts of \"%s\" started again (blockd restarted, or the "
               "volume was made anew): rates from the next line on\n", pos[0]);
      i--;                        /* that interval is not one of the N */
    }
    a = b;
  }
  free (path);
  return r;
}
