/* client/blockctl.c — blockctl's entry point: global options, command
 * dispatch, help, and the option parser the subcommands share.
 *
 * Global options (--api, --json, --help, --version) may appear anywhere on
 * the command line, so they are taken out first; what remains is
 * "COMMAND [SUBCOMMAND] [ARGS...]" and goes to the command's handler. */
#include "client/blockctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

double
ctl_now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void
ctl_error (const char *fmt, ...)
{
  char line[1024];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  /* One line, whatever the message holds (server text included). */
  for (char *p = line; *p; p++)
    if (*p == '\n' || *p == '\r' || *p == '\t')
      *p = ' ';
  fprintf (stderr, "blockctl: %s\n", line);
}

int
ctl_usage_error (const char *fmt, ...)
{
  char line[1024];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  ctl_error ("%s", line);
  return CTL_EXIT_USAGE;
}

static void
help_main (void)
{
  fputs ("Usage: blockctl [--api URL] [--json] COMMAND [ARGS...]\n"
         "\n"
         "Manage the volumes and snapshots of a blockd storage daemon through\n"
         "its HTTP API.\n"
         "\n"
         "Commands:\n"
         "  volume create NAME --size SIZE [--type TYPE] [--multi-attach]\n"
         "                              create a volume\n"
         "  volume create NAME --from-snapshot VOL@SNAP [--size SIZE] [--type TYPE]\n"
         "                              create a volume from a snapshot (a clone)\n"
         "  volume list [--prefix P] [--status available|in-use]\n"
         "              [--sort name|size|created] [--reverse]\n"
         "              [--attached|--detached] [--instance NAME]\n"
         "                              list volumes (a table; sorted by name)\n"
         "  volume show NAME            show one volume (NAME may also be its id)\n"
         "  volume stats NAME [--interval SECS [--count N]]\n"
         "                              what clients asked of a volume: requests,\n"
         "                              bytes, errors, latency; rates every SECS\n"
         "  volume resize NAME --size SIZE\n"
         "                              grow a volume to SIZE\n"
         "  volume rollback NAME --to SNAP\n"
         "                              return a volume to one of its snapshots\n"
         "  volume delete NAME [--force]\n"
         "                              delete a volume (--force: even while an\n"
         "                              NBD client is connected)\n"
         "  volume import NAME --from FILE [--format raw|qcow2] [--size SIZE]\n"
         "                [--type TYPE] [--multi-attach]\n"
         "                              create a volume from a raw or qcow2 image\n"
         "  volume export NAME|VOL@SNAP --to FILE [--format raw|qcow2] [--force]\n"
         "                              write a volume or snapshot to an image file\n"
         "  snapshot create VOL SNAP    snapshot volume VOL as VOL@SNAP\n"
         "  snapshot list [VOL]         list snapshots (of VOL only)\n"
         "  snapshot show VOL@SNAP      show one snapshot\n"
         "  snapshot delete VOL@SNAP    delete a snapshot\n"
         "  snapshot diff VOL@SNAP VOL@SNAP2|VOL\n"
         "                              the byte ranges that changed between two\n"
         "                              snapshots, or a snapshot and its volume\n"
         "  pool show                   show the storage pool's capacity and usage\n"
         "  attach VOL --instance NAME --qmp SOCKET [--role system|data]\n"
         "                              attach a volume to a VM and hot-plug it\n"
         "                              into its QEMU over QMP\n"
         "  attach VOL --instance NAME --print-args [--shell] [--role ...]\n"
         "                              attach it and print the QEMU options\n"
         "                              (-blockdev, -device) for a VM to start\n"
         "  detach VOL [--instance NAME] [--qmp SOCKET] [--timeout SECS]\n"
         "                              unplug it (with --qmp) and detach it; without\n"
         "                              --qmp only the record (the VM is stopped)\n"
         "  help [volume|snapshot|pool|attach]\n"
         "                              show help\n"
         "\n"
         "Global options (before or after the command):\n"
         "  --api URL     blockd's API address (default: $BLOCKD_API if set,\n"
         "                else " CTL_DEFAULT_API ")\n"
         "  --json        print blockd's JSON answer instead of text\n"
         "  -h, --help    show help\n"
         "  --version     print blockctl's version\n"
         "\n"
         "SIZE is a number of bytes, or a number with a binary suffix K, M, G, T\n"
         "or P (10G = 10 GiB, 1.5T); it must be a positive multiple of 512 bytes.\n"
         "\n"
         "Exit status: 0 done, 1 blockd reported an error, 2 usage error,\n"
         "3 blockd cannot be reached, 4 QEMU refused or failed (attach, detach).\n",
         stdout);
}

void
ctl_help_volume (void)
{
  fputs ("Usage:\n"
         "  blockctl volume create NAME --size SIZE [--type TYPE] [--multi-attach]\n"
         "  blockctl volume create NAME --from-snapshot VOL@SNAP [--size SIZE]\n"
         "                         [--type TYPE]\n"
         "  blockctl volume list [--prefix P] [--status available|in-use]\n"
         "                       [--sort name|size|created] [--reverse]\n"
         "                       [--attached|--detached] [--instance NAME]\n"
         "  blockctl volume show NAME\n"
         "  blockctl volume stats NAME [--interval SECONDS [--count N]]\n"
         "  blockctl volume resize NAME --size SIZE\n"
         "  blockctl volume rollback NAME --to SNAP\n"
         "  blockctl volume delete NAME [--force]\n"
         "  blockctl volume import NAME --from FILE [--format raw|qcow2]\n"
         "                         [--size SIZE] [--type TYPE] [--multi-attach]\n"
         "  blockctl volume export NAME|VOL@SNAP --to FILE [--format raw|qcow2]\n"
         "                         [--force]\n"
         "\n"
         "NAME is 1-63 characters from A-Z a-z 0-9 . _ - and does not start\n"
         "with '.' or '-'; show, resize, rollback and delete also accept a\n"
         "volume's id.  SIZE is bytes or a number with a binary suffix K, M, G,\n"
         "T or P (e.g. 10G), a positive multiple of 512 bytes.  Volumes only\n"
         "grow.  VOL@SNAP names snapshot SNAP of volume VOL.\n"
         "\n"
         "Options:\n"
         "  --size SIZE       the volume's (new) size; for a clone, at least the\n"
         "                    snapshot's size (the default)\n"
         "  --type TYPE       the disk type (default: the server's, \"standard\")\n"
         "  --from-snapshot VOL@SNAP\n"
         "                    create the volume as a clone of snapshot VOL@SNAP:\n"
         "                    instant, it shares the snapshot's data\n"
         "  --multi-attach    let the volume be attached to several instances at\n"
         "                    once (a shared disk); the default is one at a time\n"
         "  --to SNAP         the snapshot to roll back to, a snapshot name of the\n"
         "                    volume or VOL@SNAP; refused while an NBD client is\n"
         "                    connected; later snapshots are kept\n"
         "  --prefix P        list only volumes whose name starts with P\n"
         "  --status S        list only volumes that are \"available\" or \"in-use\"\n"
         "                    (in use: attached to an instance or connected)\n"
         "  --attached        list only volumes attached to an instance\n"
         "  --detached        list only volumes attached to none\n"
         "  --instance NAME   list only the volumes attached to instance NAME\n"
         "  --sort KEY        sort the list by name (default), size or created\n"
         "  --reverse         sort in descending order\n"
         "  --force           delete even while an NBD client is connected;\n"
         "                    export: overwrite FILE if it exists\n"
         "  --from FILE       import: the image to read, raw or qcow2 (told apart\n"
         "                    by its first bytes)\n"
         "  --to FILE         export: the file to write (refused if it exists)\n"
         "  --format F        import: read FILE as \"raw\" or \"qcow2\" whatever it\n"
         "                    looks like; export: write \"raw\" (default) or \"qcow2\"\n"
         "  --interval SECS   stats: a line of rates every SECS seconds (requests\n"
         "                    and MiB a second, latency in blockd and its part on\n"
         "                    the store, requests in flight), as iostat; without\n"
         "                    it, the totals\n"
         "  --count N         stats: stop after N lines\n"
         "\n"
         "import creates volume NAME with the image's virtual size rounded up to\n"
         "512 bytes (--size: larger) and writes the image's data into it over\n"
         "NBD; holes and all-zero blocks are skipped, so the volume stays thin.\n"
         "qcow2 images are read through qemu-nbd.  If anything fails, the volume\n"
         "is deleted again.  export copies a volume, or a snapshot VOL@SNAP, into\n"
         "a sparse raw file or a qcow2 image (made by qemu-img); if it fails, FILE\n"
         "is removed.  On a terminal both show their progress on stderr; the\n"
         "summary line goes to stdout (with --json: the volume, or the figures).\n"
         "Exit status 1 when the copy fails, 3 when blockd's NBD server cannot\n"
         "be reached.\n"
         "\n"
         "Global options: --api URL, --json (see blockctl --help).\n", stdout);
}

void
ctl_help_snapshot (void)
{
  fputs ("Usage:\n"
         "  blockctl snapshot create VOL SNAP\n"
         "  blockctl snapshot list [VOL]\n"
         "  blockctl snapshot show VOL@SNAP\n"
         "  blockctl snapshot delete VOL@SNAP\n"
         "  blockctl snapshot diff VOL@SNAP VOL@SNAP2|VOL\n"
         "\n"
         "A snapshot is a crash-consistent, read-only copy of a volume taken\n"
         "while clients write.  VOL@SNAP names snapshot SNAP of volume VOL; both\n"
         "are 1-63 characters from A-Z a-z 0-9 . _ - not starting with '.' or '-'.\n"
         "Snapshots outlive their volume: they stay listed under its name until\n"
         "deleted.  Deleting one frees the space nothing else still uses.\n"
         "\n"
         "  create  snapshot the volume now; prints the snapshot\n"
         "  list    a table of all snapshots, or those of volume VOL, with the\n"
         "          space each references and holds exclusively\n"
         "  show    one snapshot\n"
         "  delete  delete a snapshot\n"
         "  diff    the byte ranges that may differ between a snapshot and a\n"
         "          later snapshot (or the live volume) of the same volume, one\n"
         "          \"OFFSET LENGTH\" line each in bytes, then a total; for\n"
         "          incremental backups\n"
         "\n"
         "Clone a snapshot with \"blockctl volume create NEW --from-snapshot\n"
         "VOL@SNAP\", roll a volume back with \"blockctl volume rollback VOL --to\n"
         "SNAP\".  Snapshots are exported read-only over NBD as VOL@SNAP.\n"
         "\n"
         "Global options: --api URL, --json (see blockctl --help).\n", stdout);
}

void
ctl_help_pool (void)
{
  fputs ("Usage:\n"
         "  blockctl pool show\n"
         "\n"
         "Show the storage pool: capacity, allocated and free space, chunk size,\n"
         "number of volumes and the data directory.\n"
         "\n"
         "Global options: --api URL, --json (see blockctl --help).\n", stdout);
}

/* Print the help for TOPIC (NULL: the main help).  Returns the exit code. */
static int
help_topic (const char *topic)
{
  if (topic == NULL)
    help_main ();
  else if (strcmp (topic, "volume") == 0)
    ctl_help_volume ();
  else if (strcmp (topic, "snapshot") == 0)
    ctl_help_snapshot ();
  else if (strcmp (topic, "pool") == 0)
    ctl_help_pool ();
  else if (strcmp (topic, "attach") == 0 || strcmp (topic, "detach") == 0)
    ctl_help_attach ();
  else
    return ctl_usage_error ("no help for unknown command \"%s\" "
                            "(commands: volume, snapshot, pool, attach, "
                            "detach)", topic);
  return CTL_EXIT_OK;
}

int
ctl_parse_opts (const char *cmd, int argc, char **argv,
                const struct ctl_opt *opts, const char **pos,
                int max_pos, int *npos)
{
  bool only_pos = false;
  /* "volume create" -> "volume", the help topic named in messages */
  int topic_len = (int) strcspn (cmd, " ");
  *npos = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!only_pos && strcmp (a, "--") == 0) {
      only_pos = true;
      continue;
    }
    if (only_pos || a[0] != '-' || a[1] == '\0') {
      if (*npos >= max_pos)
        return ctl_usage_error ("%s: unexpected argument \"%s\" "
                                "(see \"blockctl %.*s --help\")",
                                cmd, a, topic_len, cmd);
      pos[(*npos)++] = a;
      continue;
    }
    const char *eq = strchr (a, '=');
    size_t len = eq ? (size_t) (eq - a) : strlen (a);
    const struct ctl_opt *o = opts;
    for (; o->name; o++)
      if (strlen (o->name) == len && strncmp (o->name, a, len) == 0)
        break;
    if (o->name == NULL)
      return ctl_usage_error ("%s: unknown option \"%.*s\" "
                              "(see \"blockctl %.*s --help\")",
                              cmd, (int) len, a, topic_len, cmd);
    if (o->flag) {
      if (eq)
        return ctl_usage_error ("%s: option %s takes no value", cmd, o->name);
      *o->flag = true;
    }
    else if (eq)
      *o->value = eq + 1;
    else if (i + 1 < argc)
      *o->value = argv[++i];
    else
      return ctl_usage_error ("%s: option %s needs a value", cmd, o->name);
  }
  return 0;
}

/* Subcommand options that take a value: their value is copied along with
 * them when the global options are taken out, so that "--prefix --json"
 * would not be misread.  Keep in step with volume-cmd.c and
 * snapshot-cmd.c. */
static bool
takes_value (const char *a)
{
  static const char *const names[] = {
    "--size", "--type", "--prefix", "--status", "--sort", "--from-snapshot",
    "--to",
    "--from", "--format",                                      /* import-cmd.c */
    "--instance", "--qmp", "--role", "--bus", "--timeout",   /* attach-cmd.c */
    NULL
  };
  for (int i = 0; names[i]; i++)
    if (strcmp (a, names[i]) == 0)
      return true;
  return false;
}

/* Take the global options out of argv[1..argc) into G; the other words go
 * to rest[0..*nrest) (rest has room for argc entries).  Sets *help and
 * *version.  Returns 0 or CTL_EXIT_USAGE. */
static int
parse_globals (int argc, char **argv, struct ctl_globals *g,
               char **rest, int *nrest, bool *help, bool *version)
{
  const char *api = NULL;
  *nrest = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp (a, "--") == 0) {
      for (; i < argc; i++)
        rest[(*nrest)++] = argv[i];
      break;
    }
    if (strcmp (a, "--json") == 0)
      g->json = true;
    else if (strcmp (a, "--help") == 0 || strcmp (a, "-h") == 0)
      *help = true;
    else if (strcmp (a, "--version") == 0)
      *version = true;
    else if (strcmp (a, "--api") == 0) {
      if (i + 1 >= argc)
        return ctl_usage_error ("option --api needs a value "
                                "(e.g. --api " CTL_DEFAULT_API ")");
      api = argv[++i];
    }
    else if (strncmp (a, "--api=", 6) == 0)
      api = a + 6;
    else {
      rest[(*nrest)++] = argv[i];
      if (takes_value (a) && i + 1 < argc)
        rest[(*nrest)++] = argv[++i];
    }
  }

  if (api == NULL) {
    api = getenv ("BLOCKD_API");
    if (api != NULL && api[0] == '\0')
      api = NULL;
  }
  if (api == NULL)
    api = CTL_DEFAULT_API;
  if (api[0] == '\0')
    return ctl_usage_error ("option --api needs a URL "
                            "(e.g. --api " CTL_DEFAULT_API ")");

  /* Drop trailing slashes so that paths join as "<api>/v1/...". */
  size_t len = strlen (api);
  while (len > 1 && api[len - 1] == '/')
    len--;
  char *copy = strndup (api, len);
  if (copy == NULL) {
    ctl_error ("out of memory");
    return CTL_EXIT_USAGE;
  }
  g->api = copy;
  return 0;
}

static int
run (int argc, char **argv)
{
  struct ctl_globals g = { .api = NULL, .json = false };
  bool help = false, version = false;
  char **rest = calloc ((size_t) argc + 1, sizeof *rest);
  int nrest, r;

  if (rest == NULL) {
    ctl_error ("out of memory");
    return CTL_EXIT_USAGE;
  }
  r = parse_globals (argc, argv, &g, rest, &nrest, &help, &version);
  if (r != 0)
    goto out;

  if (version) {
    printf ("blockctl %s\n", CTL_VERSION);
    r = CTL_EXIT_OK;
  }
  else if (nrest == 0)
    r = help ? help_topic (NULL)
      : ctl_usage_error ("missing command (try \"blockctl --help\")");
  else if (strcmp (rest[0], "help") == 0)
    r = help_topic (nrest > 1 ? rest[1] : NULL);
  else if (strcmp (rest[0], "volume") == 0)
    r = help ? help_topic ("volume") : ctl_cmd_volume (&g, nrest, rest);
  else if (strcmp (rest[0], "snapshot") == 0)
    r = help ? help_topic ("snapshot") : ctl_cmd_snapshot (&g, nrest, rest);
  else if (strcmp (rest[0], "pool") == 0)
    r = help ? help_topic ("pool") : ctl_cmd_pool (&g, nrest, rest);
  else if (strcmp (rest[0], "attach") == 0)
    r = help ? help_topic ("attach") : ctl_cmd_attach (&g, nrest, rest);
  else if (strcmp (rest[0], "detach") == 0)
    r = help ? help_topic ("detach") : ctl_cmd_detach (&g, nrest, rest);
  else if (help)
    r = help_topic (NULL);
  else if (rest[0][0] == '-' && rest[0][1] != '\0')
    r = ctl_usage_error ("unknown option \"%s\" (try \"blockctl --help\")",
                         rest[0]);
  else
    r = ctl_usage_error ("unknown command \"%s\" (commands: volume, snapshot, "
                         "pool; try \"blockctl --help\")", rest[0]);

 out:
  free ((char *) g.api);
  free (rest);
  return r;
}

int
main (int argc, char **argv)
{
  if (curl_global_init (CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    ctl_error ("cannot initialise libcurl");
    return CTL_EXIT_UNREACHABLE;
  }
  int r = run (argc, argv);
  curl_global_cleanup ();
  if (fflush (stdout) != 0 || ferror (stdout)) {
    ctl_error ("cannot write to standard output");
    if (r == CTL_EXIT_OK)
      r = CTL_EXIT_SERVER;
  }
  return r;
}
