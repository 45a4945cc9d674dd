/* client/import-cmd.c — "blockctl volume import" and "volume export":
 * disk images in and out of volumes, over NBD with the copy engine of
 * image.c.
 *
 *   import NAME --from FILE   open FILE (raw, or qcow2 through qemu-nbd),
 *                             create volume NAME of the image's size, copy
 *                             the image's data into it, flush; on any
 *                             failure after the create, delete the volume
 *   export NAME --to FILE     read the volume or snapshot NAME over NBD into
 *                             a new raw file, or a qcow2 image written
 *                             through qemu-nbd; on failure, remove FILE
 *
 * Everything local that can be checked (names, sizes, the input file, an
 * existing output file) is checked before the first request: exit 2.
 * Failures after that are exit 1 (3 when blockd's NBD server cannot be
 * reached), in one line "blockctl: import of "NAME" failed ...". */
#include "client/blockctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/size.h"

#define USAGE_IMPORT "blockctl volume import NAME --from FILE [--format raw|qcow2] " \
                     "[--size SIZE] [--type TYPE] [--multi-attach]"
#define USAGE_EXPORT "blockctl volume export NAME|VOL@SNAP --to FILE " \
                     "[--format raw|qcow2] [--force]"

/* Is FORMAT (may be NULL: not given) one we know?  Returns 0 or
 * CTL_EXIT_USAGE (said). */
static int
check_format (const char *cmd, const char *format)
{
  if (format == NULL || strcmp (format, "raw") == 0
      || strcmp (format, "qcow2") == 0)
    return 0;
  return ctl_usage_error ("%s: --format must be \"raw\" or \"qcow2\", not "
                          "\"%s\"", cmd, format);
}

/* qcow2 by its magic "QFI\xfb", anything else raw. */
static const char *
detect_format (int fd)
{
  unsigned char magic[4];
  if (pread (fd, magic, 4, 0) == 4 && memcmp (magic, "QFI\xfb", 4) == 0)
    return "qcow2";
  return "raw";
}

/* "at offset N: " when the failure has one. */
static const char *
where (const struct ctl_img_error *err, char *buf, size_t len)
{
  if (err->at_offset)
    snprintf (buf, len, " at offset %llu", (unsigned long long) err->offset);
  else
    buf[0] = '\0';
  return buf;
}

/* "imported "sys1" from disk.qcow2 (qcow2): 2.0 GiB, 312 MiB written,
 * 1.7 GiB sparse, 1.3 s" on stdout. */
static void
summary (const char *verb, const char *name, const char *dir, const char *file,
         const char *format, uint64_t size, const struct ctl_img_stats *st,
         double seconds)
{
  char total[32], written[32], sparse[32];
  printf ("%s \"%s\" %s %s (%s): %s, %s written, %s sparse, %.1f s\n",
          verb, name, dir, file, format, ctl_img_human (size, total, sizeof total),
          ctl_img_human (st->written, written, sizeof written),
          ctl_img_human (size - st->written, sparse, sizeof sparse), seconds);
}

/* Delete the volume an import created.  Says so when that fails too. */
static void
rollback (const struct ctl_globals *g, const char *name)
{
  char *path = ctl_ref_path ("/v1/volumes/", name, "?force=true");
  struct json_object *j = NULL;
  if (path == NULL || ctl_http (g, "DELETE", path, NULL, &j) != CTL_EXIT_OK)
    ctl_error ("volume \"%s\" was left behind: delete it with \"blockctl "
               "volume delete %s --force\"", name, name);
  json_object_put (j);
  free (path);
}

/* "volume import NAME --from FILE [--format F] [--size SIZE] [--type T]
 * [--multi-attach]" */
static int
do_import (const struct ctl_globals *g, int argc, char **argv)
{
  const char *from = NULL, *format = NULL, *size_s = NULL, *type = NULL, *pos[1];
  bool multi = false;
  const struct ctl_opt opts[] = {
    { "--from", &from, NULL }, { "--format", &format, NULL },
    { "--size", &size_s, NULL }, { "--type", &type, NULL },
    { "--multi-attach", NULL, &multi }, { NULL, NULL, NULL }
  };
  struct ctl_img_end src, dst;
  struct ctl_img_error err = { .at_offset = false }, ignored;
  struct ctl_img_stats st;
  uint64_t want = 0;
  char at[48];
  int npos, r;

  ctl_img_end_init (&dst, NULL);
  if ((r = ctl_parse_opts ("volume import", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume import: missing NAME (usage: " USAGE_IMPORT ")");
  if (from == NULL)
    return ctl_usage_error ("volume import: missing --from (usage: " USAGE_IMPORT ")");
  if ((r = ctl_check_name ("volume", pos[0]))
      || (r = check_format ("volume import", format)))
    return r;
  const char *name = pos[0];
  if (size_s != NULL) {
    r = size_parse (size_s, &want);
    if (r < 0 || want == 0 || want % 512 != 0)
      return ctl_usage_error ("volume \"%s\": size \"%s\" is invalid (must be "
                              "a positive multiple of 512 bytes, e.g. 10G)",
                              name, size_s);
  }

  /* The image first: its size is the volume's, and a bad one is caught
   * before anything is created. */
  if (ctl_img_open_file (&src, from, &err) < 0)
    return ctl_usage_error ("volume import: %s", err.msg);
  if (format == NULL)
    format = detect_format (src.fd);
  if (strcmp (format, "qcow2") == 0) {
    ctl_img_end_close (&src, false, &ignored);
    if (ctl_img_connect_qemu_nbd (&src, from, "qcow2", true, &err) < 0)
      return ctl_usage_error ("volume import: %s", err.msg);
  }
  uint64_t need = (src.size + 511) / 512 * 512;
  if (want != 0 && want < need) {
    ctl_img_end_close (&src, false, &ignored);
    return ctl_usage_error ("volume \"%s\": --size %s is smaller than the "
                            "image \"%s\" (%llu bytes)", name, size_s, from,
                            (unsigned long long) src.size);
  }
  if (need == 0 && want == 0) {
    ctl_img_end_close (&src, false, &ignored);
    return ctl_usage_error ("volume import: \"%s\" is empty (give --size to "
                            "import it as an empty volume)", from);
  }
  uint64_t size = want ? want : need;

  struct json_object *body = json_object_new_object (), *vol = NULL;
  json_object_object_add (body, "name", json_object_new_string (name));
  json_object_object_add (body, "size", json_object_new_int64 ((int64_t) size));
  if (type != NULL)
    json_object_object_add (body, "type", json_object_new_string (type));
  if (multi)
    json_object_object_add (body, "multi_attach", json_object_new_boolean (true));
  r = ctl_http (g, "POST", "/v1/volumes", body, &vol);
  json_object_put (body);
  if (r != CTL_EXIT_OK) {              /* nothing was created: nothing to undo */
    ctl_img_end_close (&src, false, &ignored);
    return r;
  }

  /* From here on, a failure deletes the volume again. */
  struct json_object *u;
  double t0 = ctl_now_s ();
  const char *uri = json_object_object_get_ex (vol, "nbd_uri", &u)
    && json_object_is_type (u, json_type_string) ? json_object_get_string (u) : NULL;
  if (uri == NULL) {
    ctl_error ("import of \"%s\" failed: blockd at %s sent no nbd_uri for the "
               "new volume", name, g->api);
    r = CTL_EXIT_SERVER;
    goto undo;
  }
  if (ctl_img_connect_uri (&dst, uri, &err) < 0) {
    ctl_error ("import of \"%s\" failed: %s", name, err.msg);
    r = CTL_EXIT_UNREACHABLE;
    goto undo;
  }
  dst.writable = true;
  if (ctl_img_copy (&src, &dst, need, isatty (STDERR_FILENO), &st, &err) < 0
      || ctl_img_end_close (&dst, true, &err) < 0
      || (ctl_img_interrupted ()
          && ctl_img_fail (&err, false, 0, "interrupted by signal %d", ctl_img_interrupted ()) < 0)) {
    ctl_error ("import of \"%s\" failed%s: %s", name, where (&err, at, sizeof at),
               err.msg);
    r = CTL_EXIT_SERVER;
    goto undo;
  }
  ctl_img_end_close (&src, true, &ignored);
  double secs = ctl_now_s () - t0;

  if (g->json) {
    char *path = ctl_ref_path ("/v1/volumes/", name, "");
    r = path ? ctl_request_and_print (g, "GET", path, NULL, ctl_print_volume)
      : CTL_EXIT_SERVER;
    free (path);
  }
  else
    summary ("imported", name, "from", from, format, size, &st, secs);
  json_object_put (vol);
  return r;

 undo:
  ctl_img_end_close (&dst, false, &ignored);
  ctl_img_end_close (&src, false, &ignored);
  json_object_put (vol);
  rollback (g, name);
  return r;
}

/* "volume export NAME|VOL@SNAP --to FILE [--format F] [--force]" */
static int
do_export (const struct ctl_globals *g, int argc, char **argv)
{
  const char *to = NULL, *format = NULL, *pos[1];
  bool force = false;
  const struct ctl_opt opts[] = {
    { "--to", &to, NULL }, { "--format", &format, NULL },
    { "--force", NULL, &force }, { NULL, NULL, NULL }
  };
  struct ctl_img_end src, dst;
  struct ctl_img_error err = { .at_offset = false }, ignored;
  struct ctl_img_stats st;
  struct stat sb;
  char at[48];
  int npos, r;

  if ((r = ctl_parse_opts ("volume export", argc, argv, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("volume export: missing NAME (usage: " USAGE_EXPORT ")");
  if (to == NULL)
    return ctl_usage_error ("volume export: missing --to (usage: " USAGE_EXPORT ")");
  const char *name = pos[0];
  bool snap = strchr (name, '@') != NULL;
  if ((r = snap ? ctl_check_snapshot_ref (name) : ctl_check_name ("volume", name))
      || (r = check_format ("volume export", format)))
    return r;
  if (format == NULL)
    format = "raw";
  bool existed = stat (to, &sb) == 0;
  if (existed) {
    if (!force)
      return ctl_usage_error ("volume export: \"%s\" exists (add --force to "
                              "overwrite it)", to);
    if (!S_ISREG (sb.st_mode))
      return ctl_usage_error ("volume export: \"%s\" is not a regular file", to);
  }

  /* Created before the first request, so that a file that cannot be is a
   * usage error; removed again if anything fails.  A file that --force
   * replaces is only cut short once the source is connected: an export
   * that fails before that (a mistyped name, blockd down) leaves it as it
   * was. */
  bool remove_on_fail = !existed;
  int fd = open (to, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? 0 : O_EXCL), 0666);
  if (fd == -1)
    return ctl_usage_error ("volume export: cannot create \"%s\": %s", to,
                            strerror (errno));
  ctl_img_end_init (&src, name);
  ctl_img_end_init (&dst, to);
  dst.fd = fd;
  dst.writable = true;

  char *path = ctl_ref_path (snap ? "/v1/snapshots/" : "/v1/volumes/", name, "");
  struct json_object *obj = NULL, *u;
  uint64_t size;
  r = path ? ctl_http (g, "GET", path, NULL, &obj) : CTL_EXIT_SERVER;
  free (path);
  if (r != CTL_EXIT_OK)
    goto fail;
  const char *uri = json_object_object_get_ex (obj, "nbd_uri", &u)
    && json_object_is_type (u, json_type_string) ? json_object_get_string (u) : NULL;
  if (uri == NULL || !ctl_json_u64 (obj, "size", &size)) {
    ctl_error ("export of \"%s\" failed: blockd at %s sent no nbd_uri or size",
               name, g->api);
    r = CTL_EXIT_SERVER;
    goto fail;
  }
  double t0 = ctl_now_s ();
  if (ctl_img_connect_uri (&src, uri, &err) < 0) {
    ctl_error ("export of \"%s\" failed: %s", name, err.msg);
    r = CTL_EXIT_UNREACHABLE;
    goto fail;
  }
  size = src.size;                     /* what NBD says is what we copy */

  r = CTL_EXIT_SERVER;
  remove_on_fail = true;               /* from here on FILE is overwritten */
  if (strcmp (format, "raw") == 0) {
    if (ftruncate (fd, 0) == -1 || ftruncate (fd, (off_t) size) == -1) {
      ctl_error ("export of \"%s\" failed: cannot make \"%s\" %llu bytes "
                 "long: %s", name, to, (unsigned long long) size, strerror (errno));
      goto fail;
    }
  }
  else {
    ctl_img_end_close (&dst, false, &ignored);
    if (ctl_img_qemu_img_create (to, size, &err) < 0
        || ctl_img_connect_qemu_nbd (&dst, to, "qcow2", false, &err) < 0) {
      ctl_error ("export of \"%s\" failed: %s", name, err.msg);
      goto fail;
    }
    dst.writable = true;
  }
  if (ctl_img_copy (&src, &dst, size, isatty (STDERR_FILENO), &st, &err) < 0
      || ctl_img_end_close (&dst, true, &err) < 0
      || (ctl_img_interrupted ()
          && ctl_img_fail (&err, false, 0, "interrupted by signal %d", ctl_img_interrupted ()) < 0)) {
    ctl_error ("export of \"%s\" failed%s: %s", name, where (&err, at, sizeof at),
               err.msg);
    goto fail;
  }
  ctl_img_end_close (&src, true, &ignored);
  double secs = ctl_now_s () - t0;
  json_object_put (obj);

  if (g->json) {
    struct json_object *out = json_object_new_object ();
    json_object_object_add (out, "exported", json_object_new_string (name));
    json_object_object_add (out, "file", json_object_new_string (to));
    json_object_object_add (out, "format", json_object_new_string (format));
    json_object_object_add (out, "size", json_object_new_int64 ((int64_t) size));
    json_object_object_add (out, "written", json_object_new_int64 ((int64_t) st.written));
    json_object_object_add (out, "seconds", json_object_new_double (secs));
    ctl_print_json (out);
    json_object_put (out);
  }
  else
    summary ("exported", name, "to", to, format, size, &st, secs);
  return CTL_EXIT_OK;

 fail:
  ctl_img_end_close (&src, false, &ignored);
  ctl_img_end_close (&dst, false, &ignored);
  json_object_put (obj);
  if (remove_on_fail)
    unlink (to);
  return r;
}

/* The commands: signals only set a flag while they run (see
 * ctl_img_signals_catch), so that what they leave behind is cleaned up. */
int
ctl_cmd_volume_import (const struct ctl_globals *g, int argc, char **argv)
{
  ctl_img_signals_catch ();
  int r = do_import (g, argc, argv);
  ctl_img_signals_restore ();
  return r;
}

int
ctl_cmd_volume_export (const struct ctl_globals *g, int argc, char **argv)
{
  ctl_img_signals_catch ();
  int r = do_export (g, argc, argv);
  ctl_img_signals_restore ();
  return r;
}
