/* client/blockctl.h — internal interfaces of blockctl, grouped by file.
 *
 * blockctl is a thin client of blockd's HTTP/JSON API (docs/API.md).  Every
 * command returns one of the exit codes below; whatever goes wrong is said
 * in exactly one line on stderr, "blockctl: <message>". */
#ifndef BLOCKD_BLOCKCTL_H
#define BLOCKD_BLOCKCTL_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#define CTL_VERSION      "0.1.0"
#define CTL_DEFAULT_API  "http://127.0.0.1:10810"

enum ctl_exit {
  CTL_EXIT_OK = 0,
  CTL_EXIT_SERVER = 1,        /* blockd answered with an error (or nonsense) */
  CTL_EXIT_USAGE = 2,         /* bad command line, caught before any request */
  CTL_EXIT_UNREACHABLE = 3,   /* no HTTP answer from blockd at all */
};

/* Options that apply to every command; they may appear anywhere on the
 * command line.  Strings point into argv or the environment. */
struct ctl_globals {
  const char *api;            /* base URL, without trailing '/' */
  bool json;                  /* print the server's JSON instead of text */
};

/* One option a subcommand accepts.  Exactly one of value/flag is set:
 * value receives the option's argument (pointing into argv), flag is set to
 * true when the option is present. */
struct ctl_opt {
  const char *name;           /* "--size" */
  const char **value;
  bool *flag;
};

/* ---- blockctl.c */
void ctl_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* Print a usage error and return CTL_EXIT_USAGE. */
int ctl_usage_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* Parse the options and positional arguments of subcommand CMD (for
 * messages, e.g. "volume create") from argv[0..argc).  Positionals go to
 * pos[0..max_pos), their count to *npos.  Returns 0, or CTL_EXIT_USAGE
 * after printing the error. */
int ctl_parse_opts (const char *cmd, int argc, char **argv,
                    const struct ctl_opt *opts, const char **pos,
                    int max_pos, int *npos);
void ctl_help_volume (void);
void ctl_help_snapshot (void);
void ctl_help_pool (void);

/* ---- http.c */
/* Send one request to blockd: METHOD on PATH (starting with "/v1/", with
 * its query already escaped), with BODY (may be NULL; not consumed) as
 * JSON.  On a 2xx answer returns CTL_EXIT_OK and sets *out to the parsed
 * JSON body (caller owns it; NULL for an empty body, e.g. 204).  Otherwise
 * prints the one-line error and returns CTL_EXIT_SERVER (blockd's error),
 * CTL_EXIT_UNREACHABLE (no answer) or CTL_EXIT_USAGE (G->api is not a URL
 * curl accepts), and *out is NULL. */
int ctl_http (const struct ctl_globals *g, const char *method,
              const char *path, struct json_object *body,
              struct json_object **out);
/* Percent-escape S for use as one URL path segment or query value.
 * Returns a malloc'd string (caller frees), or NULL on out of memory. */
char *ctl_escape (const char *s);
/* Append "&KEY=VALUE" (VALUE escaped by ctl_escape) to the malloc'd query
 * string *Q, or "?KEY=VALUE" when *Q is NULL.  Returns false on out of
 * memory (*Q is unchanged and still the caller's). */
bool ctl_query_add (char **q, const char *key, const char *value);
/* GET base + q (q is freed), expect {"KEY": [...]}, print it as JSON or
 * with table.  Returns an exit code. */
int ctl_get_list (const struct ctl_globals *g, const char *base, char *q, const char *key,
                  int (*table) (struct json_object *list));

/* ---- output.c */
/* Pretty-print OBJ as JSON on stdout, followed by a newline. */
void ctl_print_json (struct json_object *obj);
/* Print a VOLUME object as "key: value" lines. */
void ctl_print_volume (struct json_object *vol);
/* Print a SNAPSHOT object as "key: value" lines. */
void ctl_print_snapshot (struct json_object *snap);
/* Print an array of VOLUME (SNAPSHOT) objects as a table with a header.
 * Returns the exit code (CTL_EXIT_SERVER only when out of memory). */
int ctl_print_volume_table (struct json_object *vols);
int ctl_print_snapshot_table (struct json_object *snaps);
/* Print the pool object as "key: value" lines. */
void ctl_print_pool (struct json_object *pool);
/* Read an unsigned integer member KEY of OBJ.  Returns true and sets *out,
 * or false when the member is missing or not a non-negative integer. */
bool ctl_json_u64 (struct json_object *obj, const char *key, uint64_t *out);

/* ---- volume-cmd.c: the volume and pool commands, and the checks and
 * request helpers every command shares */
/* Is S a valid volume or snapshot name (1-63 of A-Z a-z 0-9 . _ -, not
 * starting with '.' or '-')?  Volume and snapshot ids pass too. */
bool ctl_valid_name (const char *s);
/* Check NAME of a WHAT ("volume", "snapshot").  Returns 0 or
 * CTL_EXIT_USAGE (said). */
int ctl_check_name (const char *what, const char *name);
/* Send METHOD PATH with BODY (may be NULL; consumed) and print the one
 * object that comes back with PRINT (or as JSON with --json).  Returns the
 * exit code. */
int ctl_request_and_print (const struct ctl_globals *g, const char *method,
                           const char *path, struct json_object *body,
                           void (*print) (struct json_object *));
/* Print {"deleted": WHAT} with --json, else: deleted KIND "WHAT". */
void ctl_print_deleted (const struct ctl_globals *g, const char *kind,
                        const char *what);
/* argv[0] is "volume" / "pool". */
int ctl_cmd_volume (const struct ctl_globals *g, int argc, char **argv);
int ctl_cmd_pool (const struct ctl_globals *g, int argc, char **argv);

/* ---- snapshot-cmd.c */
/* Check that REF is "VOLUME@SNAPSHOT" with two valid names.  Returns 0 or
 * CTL_EXIT_USAGE (said). */
int ctl_check_snapshot_ref (const char *ref);
/* Escape REF ("VOLUME@SNAPSHOT", or any one name) for a path segment or a
 * query value, keeping its '@' (RFC 3986 allows it in both), so that
 * requests read "/v1/snapshots/data1@s1".  Returns a malloc'd string or
 * NULL on out of memory. */
char *ctl_escape_ref (const char *ref);
/* PREFIX, REF escaped (ctl_escape_ref), SUFFIX: a malloc'd path, or NULL
 * (said).  A name without '@' is escaped as ctl_escape does. */
char *ctl_ref_path (const char *prefix, const char *ref, const char *suffix);
/* argv[0] is "snapshot". */
int ctl_cmd_snapshot (const struct ctl_globals *g, int argc, char **argv);

#endif
