/* client/volume-cmd.c — "blockctl volume ..." and "blockctl pool ...":
 * check the arguments locally (a bad NAME, SIZE or snapshot is a usage
 * error, exit 2, before any request), send one request, print the answer.
 * The checks and request helpers here are shared with snapshot-cmd.c. */
#include "client/blockctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/size.h"

#define USAGE_CREATE "blockctl volume create NAME --size SIZE [--type TYPE] [--multi-attach]"
#define USAGE_RESIZE "blockctl volume resize NAME --size SIZE"
#define USAGE_ROLLBACK "blockctl volume rollback NAME --to SNAPSHOT"
#define VOLUME_SUBCOMMANDS "create, list, show, stats, resize, rollback, delete, " \
                           "import or export"

/* Names: 1-63 of [A-Za-z0-9._-], not starting with '.' or '-'.  Volume
 * ids (UUIDs) pass this too, so it also guards "show/resize/delete ID". */
bool
ctl_valid_name (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n > 63 || s[0] == '.' || s[0] == '-')
    return false;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')
          || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_'
          || *s == '-'))
      return false;
  return true;
}

int
ctl_check_name (const char *what, const char *name)
{
  if (ctl_valid_name (name))
    return 0;
  return ctl_usage_error ("%s name \"%s\" is invalid (use 1-63 "
                          "characters from A-Z a-z 0-9 . _ -, not starting "
                          "with '.' or '-')", what, name);
}

/* Check SIZE for volume NAME as the server will; the upper limit is left
 * to the server, which knows it.  Returns 0 or CTL_EXIT_USAGE. */
static int
check_size (const char *name, const char *size)
{
  uint64_t n;
  int r = size_parse (size, &n);

  if (r == -ERANGE)
    return ctl_usage_error ("volume \"%s\": size \"%s\" is too large",
                            name, size);
  if (r < 0)
    return ctl_usage_error ("volume \"%s\": size \"%s\" is invalid (use a "
                            "number of bytes or a number with a K, M, G, T "
                            "or P suffix, e.g. 10G)", name, size);
  if (n == 0 || n % 512 != 0)
    return ctl_usage_error ("volume \"%s\": size \"%s\" is invalid (must be "
                            "a positive multiple of 512 bytes)", name, size);
  return 0;
}

/* An answer that should be one object: print it, or say it is not. */
static int
print_object (const struct ctl_globals *g, struct json_object *j,
              const char *method, const char *path,
              void (*print) (struct json_object *))
{
  if (!json_object_is_type (j, json_type_object)) {
    ctl_error ("blockd at %s sent an unexpected answer to %s %s (not a "
               "JSON object)", g->api, method, path);
    return CTL_EXIT_SERVER;
  }
  if (g->json)
    ctl_print_json (j);
  else
    print (j);
  return CTL_EXIT_OK;
}

int
ctl_request_and_print (const struct ctl_globals *g, const char *method,
                       const char *path, struct json_object *body,
                       void (*print) (struct json_object *))
{
  struct json_object *j;
  int r = ctl_http (g, method, path, body, &j);

  json_object_put (body);
  if (r == CTL_EXIT_OK)
    r = print_object (g, j, method, path, print);
  json_object_put (j);
  return r;
}

/* "volume create NAME --size SIZE", or a clone of a snapshot with
 * "--from-snapshot VOL@SNAP", whose size defaults to the snapshot's. */
static int
cmd_create (const struct ctl_globals *g, int argc, char **argv)
{
  const char *size = NULL, *type = NULL, *from = NULL, *pos[1];
  bool multi = false;
  const struct ctl_opt opts[] = {
    { "--size", &size, NULL }, { "--type", &type, NULL },
    { "--from-snapshot", &from, NULL }, { "--multi-attach", NULL, &multi },
    { NULL, NULL, NULL }
  };
  int npos, r;

  if ((r = ctl_parse_opts ("volume create", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume create: missing NAME (usage: "
                            USAGE_CREATE ")");
  if (size == NULL && from == NULL)
    return ctl_usage_error ("volume create: missing --size (usage: "
                            USAGE_CREATE ")");
  if ((r = ctl_check_name ("volume", pos[0]))
      || (size != NULL && (r = check_size (pos[0], size)))
      || (from != NULL && (r = ctl_check_snapshot_ref (from))))
    return r;

  struct json_object *body = json_object_new_object ();
  json_object_object_add (body, "name", json_object_new_string (pos[0]));
  if (from != NULL)
    json_object_object_add (body, "from_snapshot",
                            json_object_new_string (from));
  if (size != NULL)
    json_object_object_add (body, "size", json_object_new_string (size));
  if (type != NULL)
    json_object_object_add (body, "type", json_object_new_string (type));
  if (multi)
    json_object_object_add (body, "multi_attach", json_object_new_boolean (true));
  return ctl_request_and_print (g, "POST", "/v1/volumes", body, ctl_print_volume);
}

static int
cmd_list (const struct ctl_globals *g, int argc, char **argv)
{
  const char *prefix = NULL, *status = NULL, *sort = NULL, *instance = NULL, *pos[1];
  bool reverse = false, attached = false, detached = false;
  const struct ctl_opt opts[] = {
    { "--prefix", &prefix, NULL }, { "--status", &status, NULL },
    { "--sort", &sort, NULL }, { "--reverse", NULL, &reverse },
    { "--attached", NULL, &attached }, { "--detached", NULL, &detached },
    { "--instance", &instance, NULL }, { NULL, NULL, NULL }
  };
  int npos, r;

  if ((r = ctl_parse_opts ("volume list", argc, argv, opts, pos, 0, &npos)))
    return r;
  if (status && strcmp (status, "available") && strcmp (status, "in-use"))
    return ctl_usage_error ("volume list: --status must be \"available\" or "
                            "\"in-use\", not \"%s\"", status);
  if (sort && strcmp (sort, "name") && strcmp (sort, "size")
      && strcmp (sort, "created"))
    return ctl_usage_error ("volume list: --sort must be \"name\", \"size\" "
                            "or \"created\", not \"%s\"", sort);
  if (attached && detached)
    return ctl_usage_error ("volume list: --attached and --detached exclude each other");
  if (instance && (r = ctl_check_name ("instance", instance)))
    return r;

  char *q = NULL;
  if ((prefix && !ctl_query_add (&q, "prefix", prefix))
      || (status && !ctl_query_add (&q, "status", status))
      || (sort && !ctl_query_add (&q, "sort", sort))
      || (reverse && !ctl_query_add (&q, "order", "desc"))
      || ((attached || detached) && !ctl_query_add (&q, "attached", attached ? "true" : "false"))
      || (instance && !ctl_query_add (&q, "instance", instance))) {
    free (q);
    ctl_error ("out of memory");
    return CTL_EXIT_SERVER;
  }
  return ctl_get_list (g, "/v1/volumes", q, "volumes", ctl_print_volume_table);
}

static int
cmd_show (const struct ctl_globals *g, int argc, char **argv)
{
  const char *pos[1];
  const struct ctl_opt opts[] = { { NULL, NULL, NULL } };
  int npos, r;

  if ((r = ctl_parse_opts ("volume show", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume show: missing NAME (usage: blockctl "
                            "volume show NAME)");
  if ((r = ctl_check_name ("volume", pos[0])))
    return r;

  char *path = ctl_ref_path ("/v1/volumes/", pos[0], "");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  r = ctl_request_and_print (g, "GET", path, NULL, ctl_print_volume);
  free (path);
  return r;
}

static int
cmd_resize (const struct ctl_globals *g, int argc, char **argv)
{
  const char *size = NULL, *pos[1];
  const struct ctl_opt opts[] = {
    { "--size", &size, NULL }, { NULL, NULL, NULL }
  };
  int npos, r;

  if ((r = ctl_parse_opts ("volume resize", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume resize: missing NAME (usage: "
                            USAGE_RESIZE ")");
  if (size == NULL)
    return ctl_usage_error ("volume resize: missing --size (usage: "
                            USAGE_RESIZE ")");
  if ((r = ctl_check_name ("volume", pos[0]))
      || (r = check_size (pos[0], size)))
    return r;

  char *path = ctl_ref_path ("/v1/volumes/", pos[0], "");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  struct json_object *body = json_object_new_object ();
  json_object_object_add (body, "size", json_object_new_string (size));
  r = ctl_request_and_print (g, "PATCH", path, body, ctl_print_volume);
  free (path);
  return r;
}

static int
cmd_delete (const struct ctl_globals *g, int argc, char **argv)
{
  const char *pos[1];
  bool force = false;
  const struct ctl_opt opts[] = {
    { "--force", NULL, &force }, { NULL, NULL, NULL }
  };
  int npos, r;

  if ((r = ctl_parse_opts ("volume delete", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume delete: missing NAME (usage: blockctl "
                            "volume delete NAME [--force])");
  if ((r = ctl_check_name ("volume", pos[0])))
    return r;

  char *path = ctl_ref_path ("/v1/volumes/", pos[0], force ? "?force=true" : "");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  struct json_object *j;
  r = ctl_http (g, "DELETE", path, NULL, &j);
  json_object_put (j);              /* 204: nothing; anything else: unused */
  free (path);
  if (r != CTL_EXIT_OK)
    return r;

  ctl_print_deleted (g, "volume", pos[0]);
  return CTL_EXIT_OK;
}

void
ctl_print_deleted (const struct ctl_globals *g, const char *kind,
                   const char *what)
{
  if (g->json) {
    struct json_object *out = json_object_new_object ();
    json_object_object_add (out, "deleted", json_object_new_string (what));
    ctl_print_json (out);
    json_object_put (out);
  }
  else
    printf ("deleted %s \"%s\"\n", kind, what);
}

/* "volume rollback NAME --to SNAP": SNAP is a snapshot name of NAME or a
 * full "VOL@SNAP"; the server resolves it (and refuses while in use). */
static int
cmd_rollback (const struct ctl_globals *g, int argc, char **argv)
{
  const char *to = NULL, *pos[1];
  const struct ctl_opt opts[] = {
    { "--to", &to, NULL }, { NULL, NULL, NULL }
  };
  int npos, r;

  if ((r = ctl_parse_opts ("volume rollback", argc, argv, opts, pos, 1,
                           &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume rollback: missing NAME (usage: "
                            USAGE_ROLLBACK ")");
  if (to == NULL)
    return ctl_usage_error ("volume rollback: missing --to (usage: "
                            USAGE_ROLLBACK ")");
  if ((r = ctl_check_name ("volume", pos[0]))
      || (r = strchr (to, '@') ? ctl_check_snapshot_ref (to)
                               : ctl_check_name ("snapshot", to)))
    return r;

  char *path = ctl_ref_path ("/v1/volumes/", pos[0], "/rollback");
  if (path == NULL)
    return CTL_EXIT_SERVER;
  struct json_object *body = json_object_new_object ();
  json_object_object_add (body, "snapshot", json_object_new_string (to));
  r = ctl_request_and_print (g, "POST", path, body, ctl_print_volume);
  free (path);
  return r;
}

int
ctl_cmd_volume (const struct ctl_globals *g, int argc, char **argv)
{
  static const struct {
    const char *name;
    int (*fn) (const struct ctl_globals *, int, char **);
  } subs[] = {
    { "create", cmd_create }, { "list", cmd_list },
    { "show", cmd_show }, { "stats", ctl_cmd_volume_stats }, { "resize", cmd_resize },
    { "rollback", cmd_rollback }, { "delete", cmd_delete },
    { "import", ctl_cmd_volume_import }, { "export", ctl_cmd_volume_export },
    { NULL, NULL }
  };

  if (argc < 2)
    return ctl_usage_error ("volume: missing subcommand (" VOLUME_SUBCOMMANDS
                            "; see \"blockctl volume --help\")");
  if (strcmp (argv[1], "help") == 0) {
    ctl_help_volume ();
    return CTL_EXIT_OK;
  }
  for (int i = 0; subs[i].name; i++)
    if (strcmp (argv[1], subs[i].name) == 0)
      return subs[i].fn (g, argc - 2, argv + 2);
  return ctl_usage_error ("volume: unknown subcommand \"%s\" ("
                          VOLUME_SUBCOMMANDS ")", argv[1]);
}

int
ctl_cmd_pool (const struct ctl_globals *g, int argc, char **argv)
{
  const char *pos[1];
  const struct ctl_opt opts[] = { { NULL, NULL, NULL } };
  int npos, r;

  if (argc < 2)
    return ctl_usage_error ("pool: missing subcommand (show; see \"blockctl "
                            "pool --help\")");
  if (strcmp (argv[1], "help") == 0) {
    ctl_help_pool ();
    return CTL_EXIT_OK;
  }
  if (strcmp (argv[1], "show") != 0)
    return ctl_usage_error ("pool: unknown subcommand \"%s\" (show)",
                            argv[1]);
  if ((r = ctl_parse_opts ("pool show", argc - 2, argv + 2, opts, pos, 0,
                           &npos)))
    return r;
  return ctl_request_and_print (g, "GET", "/v1/pool", NULL, ctl_print_pool);
}
