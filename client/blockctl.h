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
double ctl_now_s (void);      /* CLOCK_MONOTONIC, in seconds */
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
/* A VOLUME's attachments as "vm1 (system), vm2 (data)" into BUF (LEN
 * bytes); with SINCE, each with the time it was attached.  "-" when there
 * are none.  Returns BUF. */
const char *ctl_attachments_text (struct json_object *vol, bool since, char *buf, size_t len);
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

/* ---- stats-cmd.c: "volume stats" (argv[0] is "stats"'s first argument) */
int ctl_cmd_volume_stats (const struct ctl_globals *g, int argc, char **argv);

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

/* ---- image.c, image-open.c: the copy engine of volume import/export.
 * Copies a disk image between a file and an NBD server or two NBD servers,
 * sparsely, several requests in flight.  Nothing in it prints but the
 * progress line; a failure is described in a struct ctl_img_error. */
struct nbd_handle;
/* One side of a copy: a file or an NBD connection (blockd, or a qemu-nbd
 * started for a qcow2 image), which the end owns until ctl_img_end_close. */
struct ctl_img_end {
  const char *name;           /* for messages: the file or URI (not owned) */
  int fd;                     /* a file: its descriptor, else -1 */
  struct nbd_handle *nbd;     /* an NBD server: the connection, else NULL */
  uint64_t size;              /* bytes */
  bool extents;               /* can tell holes/zeros (SEEK_DATA, base:allocation) */
  bool writable;              /* a destination: flushed by a clean close */
  uint32_t max_request;       /* the server's largest request, 0: unknown */
};
struct ctl_img_error {
  bool at_offset;             /* the failure happened at OFFSET */
  uint64_t offset;
  char msg[512];              /* what failed, on what */
};
struct ctl_img_stats {
  uint64_t done;              /* bytes dealt with: written or skipped */
  uint64_t written;           /* bytes written to the destination */
  uint64_t zero;              /* bytes skipped: holes and all-zero blocks */
  double seconds;
};
void ctl_img_end_init (struct ctl_img_end *e, const char *name);
/* Open PATH (a regular file or block device) read-only as a source.  These
 * open/connect functions return 0, or -1 with ERR set (E owns nothing). */
int ctl_img_open_file (struct ctl_img_end *e, const char *path,
                       struct ctl_img_error *err);
/* Connect to URI (nbd://..., nbd+unix://...), asking for base:allocation. */
int ctl_img_connect_uri (struct ctl_img_end *e, const char *uri,
                         struct ctl_img_error *err);
/* Open image PATH of FORMAT ("qcow2") through a qemu-nbd started with
 * systemd socket activation; what qemu-nbd says on failure goes to ERR. */
int ctl_img_connect_qemu_nbd (struct ctl_img_end *e, const char *path,
                              const char *format, bool read_only,
                              struct ctl_img_error *err);
/* qemu-img create -f qcow2 PATH SIZE.  Returns 0 or -1 (ERR set). */
int ctl_img_qemu_img_create (const char *path, uint64_t size,
                             struct ctl_img_error *err);
/* Close E.  CLEAN: flush a writable end first (NBD flush, or fsync) and
 * disconnect politely; returns -1 (ERR set) when that fails.  Waits for
 * a qemu-nbd the end started. */
int ctl_img_end_close (struct ctl_img_end *e, bool clean,
                       struct ctl_img_error *err);
/* Copy bytes [0, TOTAL) (a multiple of 512; the source may end up to 511
 * bytes earlier, read as zeros) from SRC to DST, which reads as zeros:
 * holes and all-zero blocks are not written.  PROGRESS: a line on stderr,
 * updated in place, cleared at the end.  A signal caught by
 * ctl_img_signals_catch stops it.
 * Returns 0, or -1 with ERR set and both ends closed. */
/* From catch to restore, SIGINT, SIGTERM and SIGHUP only set a flag
 * (ctl_img_interrupted: the signal, or 0), so that an import or export
 * that is stopped still cleans up: the copy ends early, and a flush or a
 * rollback under way completes. */
void ctl_img_signals_catch (void);
void ctl_img_signals_restore (void);
int ctl_img_interrupted (void);
int ctl_img_copy (struct ctl_img_end *src, struct ctl_img_end *dst,
                  uint64_t total, bool progress, struct ctl_img_stats *st,
                  struct ctl_img_error *err);
/* BYTES as "312 MiB", "2.0 GiB", "100 bytes" into BUF.  Returns BUF. */
char *ctl_img_human (uint64_t bytes, char *buf, size_t len);
/* For image.c and image-open.c: record a failure in ERR (at OFFSET when
 * AT_OFFSET) and return -1; libnbd's last error, never NULL. */
int ctl_img_fail (struct ctl_img_error *err, bool at_offset, uint64_t offset,
                  const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));
const char *ctl_img_nbd_error (void);

/* ---- import-cmd.c: "volume import" and "volume export"; argv holds
 * the words after the subcommand */
int ctl_cmd_volume_import (const struct ctl_globals *g, int argc, char **argv);
int ctl_cmd_volume_export (const struct ctl_globals *g, int argc, char **argv);

/* ---- qmp.c: a QMP client (QEMU's monitor protocol) over a unix socket.
 * Nothing in it prints: a failure is described by ctl_qmp_error. */
struct ctl_qmp;
#define CTL_QMP_ERRLEN 512
/* Connect to the QMP socket PATH, read QEMU's greeting and negotiate
 * (qmp_capabilities), all within TIMEOUT_MS.  Returns the connection (for
 * ctl_qmp_close) or NULL with the reason in ERR. */
struct ctl_qmp *ctl_qmp_connect (const char *path, int timeout_ms,
                                 char *err, size_t errlen);
/* The same over FD, a connected stream socket; FD is the connection's from
 * now on (closed on failure too). */
struct ctl_qmp *ctl_qmp_open_fd (int fd, int timeout_ms, char *err,
                                 size_t errlen);
void ctl_qmp_close (struct ctl_qmp *q);
/* Run CMD with ARGS (an object, consumed; NULL for none) and wait up to
 * TIMEOUT_MS for its reply; events arriving meanwhile are kept for
 * ctl_qmp_wait_event.  Returns 0 with *RET (if RET) the "return" value
 * (caller owns), 1 when QEMU answered with an error (ctl_qmp_error is its
 * desc, ctl_qmp_error_class its class), or -errno when the exchange failed:
 * -ETIMEDOUT, -ECONNRESET (QEMU went away), -EPROTO (not QMP). */
int ctl_qmp_execute (struct ctl_qmp *q, const char *cmd,
                     struct json_object *args, int timeout_ms,
                     struct json_object **ret);
/* Wait up to TIMEOUT_MS for an event named in NAMES (NULL-terminated)
 * whose data member KEY is the string VALUE (KEY NULL: any); events
 * received earlier count, oldest first, and the one found is taken.
 * Returns 0 with *EVENT (if EVENT; caller owns), -ETIMEDOUT or -errno. */
int ctl_qmp_wait_event (struct ctl_qmp *q, const char *const *names,
                        const char *key, const char *value, int timeout_ms,
                        struct json_object **event);
/* The last failure: QEMU's desc, or what went wrong with the exchange. */
const char *ctl_qmp_error (const struct ctl_qmp *q);
/* The class of QEMU's last error ("GenericError", "DeviceNotFound"), or
 * "" when the last failure was not an error reply. */
const char *ctl_qmp_error_class (const struct ctl_qmp *q);

/* ---- qemu-disk.c: a volume as QEMU sees it (pure functions) */
/* Seconds QEMU holds a disk's requests while it reconnects to blockd. */
#define CTL_NBD_RECONNECT_DELAY 30
/* Where a volume is served: parsed from its nbd_uri. */
struct ctl_nbd_server {
  bool unix_socket;
  char host[256];             /* inet: host name or address, without [] */
  char port[8];               /* inet: "10809" when the URI has none */
  char path[108];             /* unix: the socket path */
  char export_name[256];      /* percent-decoded */
};
/* Parse "nbd://HOST[:PORT]/NAME" or "nbd+unix:///NAME?socket=PATH".
 * Returns 0, or -EINVAL with the reason in ERR. */
int ctl_nbd_uri_parse (const char *uri, struct ctl_nbd_server *out,
                       char *err, size_t errlen);
#define CTL_QEMU_ID_MAX  31   /* QEMU's limit on node names and ids */
#define CTL_SERIAL_MAX   20   /* virtio-blk's limit on serials */
/* The block node-name, also used as the device id, of volume NAME with id
 * ID: "blockd-NAME" when it fits, else "blockd_" and 24 hex digits of ID.
 * Returns 0, or -EINVAL when ID is not a UUID and NAME does not fit. */
int ctl_qemu_id (const char *name, const char *id,
                 char out[CTL_QEMU_ID_MAX + 1]);
/* The virtio-blk serial: the first 20 characters of the volume's id.  The
 * guest sees the disk as /dev/disk/by-id/virtio-SERIAL. */
void ctl_qemu_serial (const char *id, char out[CTL_SERIAL_MAX + 1]);
/* New objects (caller owns): blockdev-add's arguments for an nbd node
 * NODE, and device_add's for a virtio-blk-pci device NODE on it with
 * SERIAL; BOOT adds bootindex=1, BUS (may be NULL) picks the PCI bus. */
struct json_object *ctl_qemu_blockdev (const struct ctl_nbd_server *s,
                                       const char *node);
struct json_object *ctl_qemu_device (const char *node, const char *serial,
                                     bool boot, const char *bus);
/* ARGS as a command-line option value, "driver=nbd,server.type=inet,...",
 * nested objects as dotted keys, commas doubled; member IMPLIED (may be
 * NULL) comes first as a bare value ("virtio-blk-pci,id=...").  Returns a
 * malloc'd string or NULL (out of memory). */
char *ctl_qemu_optstr (struct json_object *args, const char *implied);
/* S quoted for a POSIX shell (unchanged when nothing needs quoting).
 * Returns a malloc'd string or NULL. */
char *ctl_shell_quote (const char *s);

/* ---- attach-cmd.c: attach and detach volumes, recorded in blockd and
 * hot-plugged into QEMU over QMP */
#define CTL_EXIT_QEMU 4       /* QEMU refused, failed or could not be reached */
/* argv[0] is "attach" / "detach". */
int ctl_cmd_attach (const struct ctl_globals *g, int argc, char **argv);
int ctl_cmd_detach (const struct ctl_globals *g, int argc, char **argv);
void ctl_help_attach (void);

#endif
