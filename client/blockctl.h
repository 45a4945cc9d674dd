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

/* ---- output.c */
/* Pretty-print OBJ as JSON on stdout, followed by a newline. */
void ctl_print_json (struct json_object *obj);
/* Print a VOLUME object as "key: value" lines. */
void ctl_print_volume (struct json_object *vol);
/* Print an array of VOLUME objects as a table with a header.  Returns the
 * exit code (CTL_EXIT_SERVER only when out of memory). */
int ctl_print_volume_table (struct json_object *vols);
/* Print the pool object as "key: value" lines. */
void ctl_print_pool (struct json_object *pool);
/* Read an unsigned integer member KEY of OBJ.  Returns true and sets *out,
 * or false when the member is missing or not a non-negative integer. */
bool ctl_json_u64 (struct json_object *obj, const char *key, uint64_t *out);

/* ---- volume-cmd.c */
/* argv[0] is "volume" / "pool". */
int ctl_cmd_volume (const struct ctl_globals *g, int argc, char **argv);
int ctl_cmd_pool (const struct ctl_globals *g, int argc, char **argv);

#endif
