/* client/snapshot-cmd.c — "blockctl snapshot ...": create, list, show,
 * delete and diff the snapshots of volumes (docs/API.md, "Snapshots").
 *
 * A snapshot is named on the command line as VOLUME@SNAPSHOT, the source
 * volume's name and the snapshot's, both following the volume name rules;
 * anything else is a usage error (exit 2) before any request.  The '@' is
 * sent as is in paths and queries ("/v1/snapshots/data1@s1"). */
#include "client/blockctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_CREATE "blockctl snapshot create VOLUME SNAPSHOT"
#define USAGE_SHOW   "blockctl snapshot show VOLUME@SNAPSHOT"
#define USAGE_DELETE "blockctl snapshot delete VOLUME@SNAPSHOT"
#define USAGE_DIFF   "blockctl snapshot diff VOLUME@SNAPSHOT " \
                     "VOLUME@SNAPSHOT|VOLUME"
#define SNAPSHOT_SUBCOMMANDS "create, list, show, delete or diff"

int
ctl_check_snapshot_ref (const char *ref)
{
  const char *at = strchr (ref, '@');
  char *vol = at ? strndup (ref, (size_t) (at - ref)) : NULL;
  bool ok = at != NULL && vol != NULL && ctl_valid_name (vol)
    && ctl_valid_name (at + 1);

  free (vol);
  if (ok)
    return 0;
  return ctl_usage_error ("snapshot \"%s\" is invalid (use VOLUME@SNAPSHOT, "
                          "e.g. data1@s1: two names of 1-63 characters from "
                          "A-Z a-z 0-9 . _ -, not starting with '.' or '-')",
                          ref);
}

char *
ctl_escape_ref (const char *ref)
{
  const char *at = strchr (ref, '@');
  char *vol = at ? strndup (ref, (size_t) (at - ref)) : strdup (ref);
  char *ev = vol ? ctl_escape (vol) : NULL;
  char *es = at ? ctl_escape (at + 1) : NULL;
  char *out = NULL;

  if (ev != NULL && (at == NULL || es != NULL)
      && (out = malloc (strlen (ev) + (es ? strlen (es) + 1 : 0) + 1)))
    sprintf (out, "%s%s%s", ev, es ? "@" : "", es ? es : "");
  free (vol);
  free (ev);
  free (es);
  return out;
}

char *
ctl_ref_path (const char *prefix, const char *ref, const char *suffix)
{
  char *esc = ctl_escape_ref (ref), *path = NULL;

  if (esc != NULL
      && (path = malloc (strlen (prefix) + strlen (esc) + strlen (suffix)
                         + 1)) != NULL)
    sprintf (path, "%s%s%s", prefix, esc, suffix);
  free (esc);
  if (path == NULL)
    ctl_error ("out of memory");
  return path;
}

static int
cmd_create (const struct ctl_globals *g, int argc, char **argv)
{
  const char *pos[2];
  const struct ctl_opt opts[] = { { NULL, NULL, NULL } };
  int npos, r;

  if ((r = ctl_parse_opts ("snapshot create", argc, argv, opts, pos, 2,
                           &npos)))
    return r;
  if (npos < 2)
    return ctl_usage_error ("snapshot create: missing %s (usage: "
                            USAGE_CREATE ")",
                            npos == 0 ? "VOLUME" : "SNAPSHOT");
  if ((r = ctl_check_name ("volume", pos[0]))
      || (r = ctl_check_name ("snapshot", pos[1])))
    return r;

  char *path = ctl_ref_path ("/v1/volumes/", pos[0], "/snapshots");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  struct json_object *body = json_object_new_object ();
  json_object_object_add (body, "name", json_object_new_string (pos[1]));
  r = ctl_request_and_print (g, "POST", path, body, ctl_print_snapshot);
  free (path);
  return r;
}

/* "snapshot list [VOLUME]": GET /v1/snapshots?volume=VOLUME rather than
 * /v1/volumes/VOLUME/snapshots, so that the snapshots of a deleted volume
 * can still be listed by its name. */
static int
cmd_list (const struct ctl_globals *g, int argc, char **argv)
{
  const char *pos[1];
  const struct ctl_opt opts[] = { { NULL, NULL, NULL } };
  int npos, r;

  if ((r = ctl_parse_opts ("snapshot list", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 1 && (r = ctl_check_name ("volume", pos[0])))
    return r;

  char *q = NULL;
  if (npos == 1 && !ctl_query_add (&q, "volume", pos[0])) {
    ctl_error ("out of memory");
    return CTL_EXIT_SERVER;
  }
  return ctl_get_list (g, "/v1/snapshots", q, "snapshots", ctl_print_snapshot_table);
}

/* Parse the one VOLUME@SNAPSHOT of "snapshot show/delete" into *REF.
 * Returns 0 or CTL_EXIT_USAGE (said). */
static int
one_ref (const char *cmd, const char *usage, int argc, char **argv,
         const char **ref)
{
  const char *pos[1];
  const struct ctl_opt opts[] = { { NULL, NULL, NULL } };
  int npos, r;

  if ((r = ctl_parse_opts (cmd, argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("%s: missing VOLUME@SNAPSHOT (usage: %s)",
                            cmd, usage);
  if ((r = ctl_check_snapshot_ref (pos[0])))
    return r;
  *ref = pos[0];
  return 0;
}

static int
cmd_show (const struct ctl_globals *g, int argc, char **argv)
{
  const char *ref;
  int r;

  if ((r = one_ref ("snapshot show", USAGE_SHOW, argc, argv, &ref)))
    return r;
  char *path = ctl_ref_path ("/v1/snapshots/", ref, "");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  r = ctl_request_and_print (g, "GET", path, NULL, ctl_print_snapshot);
  free (path);
  return r;
}

static int
cmd_delete (const struct ctl_globals *g, int argc, char **argv)
{
  const char *ref;
  int r;

  if ((r = one_ref ("snapshot delete", USAGE_DELETE, argc, argv, &ref)))
    return r;
  char *path = ctl_ref_path ("/v1/snapshots/", ref, "");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  struct json_object *j;
  r = ctl_http (g, "DELETE", path, NULL, &j);
  json_object_put (j);              /* 204: nothing; anything else: unused */
  free (path);
  if (r != CTL_EXIT_OK)
    return r;
  ctl_print_deleted (g, "snapshot", ref);
  return CTL_EXIT_OK;
}

/* Check a diff answer: a "ranges" array of {"offset","length"} integers.
 * Sets *ranges and *changed (the server's changed_bytes, else the sum of
 * the lengths).  Returns false when the answer is not like that. */
static bool
diff_answer (struct json_object *j, struct json_object **ranges,
             uint64_t *changed)
{
  uint64_t sum = 0, off, len;

  if (!json_object_is_type (j, json_type_object)
      || !json_object_object_get_ex (j, "ranges", ranges)
      || !json_object_is_type (*ranges, json_type_array))
    return false;
  for (size_t i = 0; i < json_object_array_length (*ranges); i++) {
    struct json_object *rg = json_object_array_get_idx (*ranges, i);
    if (!json_object_is_type (rg, json_type_object)
        || !ctl_json_u64 (rg, "offset", &off)
        || !ctl_json_u64 (rg, "length", &len))
      return false;
    sum += len;
  }
  if (!ctl_json_u64 (j, "changed_bytes", changed))
    *changed = sum;
  return true;
}

/* "snapshot diff VOL@A VOL@B|VOL": the byte ranges that may differ, one
 * "OFFSET LENGTH" line each (in bytes, so that a backup script can feed
 * them to dd or nbdcopy), then "N ranges, X bytes changed". */
static int
cmd_diff (const struct ctl_globals *g, int argc, char **argv)
{
  const char *pos[2];
  const struct ctl_opt opts[] = { { NULL, NULL, NULL } };
  int npos, r;

  if ((r = ctl_parse_opts ("snapshot diff", argc, argv, opts, pos, 2, &npos)))
    return r;
  if (npos < 2)
    return ctl_usage_error ("snapshot diff: missing %s (usage: " USAGE_DIFF
                            ")", npos == 0 ? "VOLUME@SNAPSHOT"
                            : "the second snapshot or volume");
  if ((r = ctl_check_snapshot_ref (pos[0]))
      || (r = strchr (pos[1], '@') ? ctl_check_snapshot_ref (pos[1])
                                   : ctl_check_name ("volume", pos[1])))
    return r;

  char *to = ctl_escape_ref (pos[1]), *path = NULL;
  if (to != NULL) {
    char *suffix = malloc (strlen ("/diff?to=") + strlen (to) + 1);
    if (suffix != NULL) {
      sprintf (suffix, "/diff?to=%s", to);
      path = ctl_ref_path ("/v1/snapshots/", pos[0], suffix);
      free (suffix);
    }
    else
      ctl_error ("out of memory");
    free (to);
  }
  else
    ctl_error ("out of memory");
  if (path == NULL)
    return CTL_EXIT_SERVER;

  struct json_object *j, *ranges;
  uint64_t changed;
  r = ctl_http (g, "GET", path, NULL, &j);
  if (r == CTL_EXIT_OK) {
    if (!diff_answer (j, &ranges, &changed)) {
      ctl_error ("blockd at %s sent an unexpected answer to GET %s (no "
                 "\"ranges\" list of offsets and lengths)", g->api, path);
      r = CTL_EXIT_SERVER;
    }
    else if (g->json)
      ctl_print_json (j);
    else {
      size_t n = json_object_array_length (ranges);
      uint64_t off, len;
      for (size_t i = 0; i < n; i++) {
        struct json_object *rg = json_object_array_get_idx (ranges, i);
        ctl_json_u64 (rg, "offset", &off);
        ctl_json_u64 (rg, "length", &len);
        printf ("%llu %llu\n", (unsigned long long) off,
                (unsigned long long) len);
      }
      printf ("%zu range%s, %llu bytes changed\n", n, n == 1 ? "" : "s",
              (unsigned long long) changed);
    }
  }
  json_object_put (j);
  free (path);
  return r;
}

int
ctl_cmd_snapshot (const struct ctl_globals *g, int argc, char **argv)
{
  static const struct {
    const char *name;
    int (*fn) (const struct ctl_globals *, int, char **);
  } subs[] = {
    { "create", cmd_create }, { "list", cmd_list }, { "show", cmd_show },
    { "delete", cmd_delete }, { "diff", cmd_diff }, { NULL, NULL }
  };

  if (argc < 2)
    return ctl_usage_error ("snapshot: missing subcommand ("
                            SNAPSHOT_SUBCOMMANDS "; see \"blockctl snapshot "
                            "--help\")");
  if (strcmp (argv[1], "help") == 0) {
    ctl_help_snapshot ();
    return CTL_EXIT_OK;
  }
  for (int i = 0; subs[i].name; i++)
    if (strcmp (argv[1], subs[i].name) == 0)
      return subs[i].fn (g, argc - 2, argv + 2);
  return ctl_usage_error ("snapshot: unknown subcommand \"%s\" ("
                          SNAPSHOT_SUBCOMMANDS ")", argv[1]);
}
