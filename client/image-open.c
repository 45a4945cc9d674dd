/* client/image-open.c — the ends of an image copy (image.c): a local file,
 * blockd over NBD, or an image opened by a qemu-nbd that libnbd starts
 * with systemd socket activation; qemu-img to create a qcow2; closing an
 * end, with the flush that makes its data durable.
 *
 * qemu-nbd and qemu-img get an absolute path, so that a file name is never
 * taken for an option or a "proto:" name, and their stderr goes to a
 * temporary file whose first line becomes part of blockctl's one-line
 * message. */
#include "client/blockctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libnbd.h>

extern char **environ;

void
ctl_img_end_init (struct ctl_img_end *e, const char *name)
{
  memset (e, 0, sizeof *e);
  e->name = name;
  e->fd = -1;
}

int
ctl_img_open_file (struct ctl_img_end *e, const char *path,
                   struct ctl_img_error *err)
{
  struct stat sb;
  ctl_img_end_init (e, path);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return ctl_img_fail (err, false, 0, "cannot open \"%s\": %s", path,
                      strerror (errno));
  if (fstat (fd, &sb) == -1) {
    int e_ = errno;
    close (fd);
    return ctl_img_fail (err, false, 0, "cannot read \"%s\": %s", path,
                      strerror (e_));
  }
  if (!S_ISREG (sb.st_mode) && !S_ISBLK (sb.st_mode)) {
    close (fd);
    return ctl_img_fail (err, false, 0, "cannot read \"%s\": %s", path,
                      S_ISDIR (sb.st_mode) ? "it is a directory"
                      : "not a regular file or a block device");
  }
  off_t size = lseek (fd, 0, SEEK_END);
  if (size < 0) {
    int e_ = errno;
    close (fd);
    return ctl_img_fail (err, false, 0, "cannot read the size of \"%s\": %s",
                      path, strerror (e_));
  }
  posix_fadvise (fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  e->fd = fd;
  e->size = (uint64_t) size;
  e->extents = S_ISREG (sb.st_mode);
  return 0;
}

/* The NBD settings both kinds of connection share.  Returns the handle or
 * NULL (error set). */
static struct nbd_handle *
new_handle (const char *what, struct ctl_img_error *err)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL) {
    ctl_img_fail (err, false, 0, "%s: %s", what, ctl_img_nbd_error ());
    return NULL;
  }
  /* Buffers are ours and fully overwritten by a successful read. */
  nbd_set_pread_initialize (h, false);
  if (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) {
    ctl_img_fail (err, false, 0, "%s: %s", what, ctl_img_nbd_error ());
    nbd_close (h);
    return NULL;
  }
  return h;
}

/* After the handshake: size, limits, block status. */
static int
connected (struct ctl_img_end *e, struct nbd_handle *h,
           struct ctl_img_error *err)
{
  int64_t size = nbd_get_size (h);
  if (size < 0) {
    ctl_img_fail (err, false, 0, "%s: %s", e->name, ctl_img_nbd_error ());
    nbd_close (h);
    return -1;
  }
  int64_t max = nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM);
  e->nbd = h;
  e->size = (uint64_t) size;
  e->extents = nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  e->max_request = max > 0 && max < UINT32_MAX ? (uint32_t) max : 0;
  return 0;
}

int
ctl_img_connect_uri (struct ctl_img_end *e, const char *uri,
                     struct ctl_img_error *err)
{
  ctl_img_end_init (e, uri);
  struct nbd_handle *h = new_handle (uri, err);
  if (h == NULL)
    return -1;
  if (nbd_connect_uri (h, uri) == -1) {
    ctl_img_fail (err, false, 0, "cannot connect to %s: %s", uri, ctl_img_nbd_error ());
    nbd_close (h);
    return -1;
  }
  return connected (e, h, err);
}

/* A temporary file for a child's stderr, so that what it says ends up in
 * our one-line message rather than on the terminal.  Returns an fd or -1. */
static int
capture_fd (void)
{
  const char *dir = getenv ("TMPDIR");
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/blockctl-XXXXXX", dir && *dir ? dir : "/tmp");
  int fd = mkostemp (path, O_CLOEXEC);
  if (fd >= 0)
    unlink (path);
  return fd;
}

/* The first line the child wrote to FD, without "PROG: " in front, into
 * BUF.  Returns BUF, or NULL when the child said nothing. */
static const char *
captured (int fd, const char *prog, char *buf, size_t len)
{
  ssize_t n = pread (fd, buf, len - 1, 0);
  if (n <= 0)
    return NULL;
  buf[n] = '\0';
  buf[strcspn (buf, "\n")] = '\0';
  size_t pl = strlen (prog);
  if (strncmp (buf, prog, pl) == 0 && buf[pl] == ':' && buf[pl + 1] == ' ')
    memmove (buf, buf + pl + 2, strlen (buf + pl + 2) + 1);
  return buf[0] ? buf : NULL;
}

/* PATH as an absolute path (malloc'd), so that qemu never takes it for an
 * option or a "proto:" filename.  NULL when out of memory. */
static char *
absolute (const char *path)
{
  char cwd[PATH_MAX], *out;
  if (path[0] == '/')
    return strdup (path);
  if (getcwd (cwd, sizeof cwd) == NULL)
    return NULL;
  if (asprintf (&out, "%s/%s", cwd, path) == -1)
    return NULL;
  return out;
}

/* Is PROG an executable in $PATH?  (So that a missing qemu-utils is said
 * as such, not as whatever the failed exec in a child looks like.) */
static bool
in_path (const char *prog)
{
  const char *p = getenv ("PATH");
  char buf[PATH_MAX];
  if (p == NULL || *p == '\0')
    p = "/usr/bin:/bin";
  while (*p) {
    size_t n = strcspn (p, ":");
    if (n > 0 && (size_t) snprintf (buf, sizeof buf, "%.*s/%s", (int) n, p,
                                    prog) < sizeof buf
        && access (buf, X_OK) == 0)
      return true;
    p += n + (p[n] == ':');
  }
  return false;
}

#define QEMU_MISSING "%s is not installed (Debian package qemu-utils); it is " \
                     "needed for qcow2 images"

int
ctl_img_connect_qemu_nbd (struct ctl_img_end *e, const char *path,
                          const char *format, bool read_only,
                          struct ctl_img_error *err)
{
  char msg[sizeof err->msg];
  ctl_img_end_init (e, path);
  if (!in_path ("qemu-nbd"))
    return ctl_img_fail (err, false, 0, QEMU_MISSING, "qemu-nbd");
  char *abs = absolute (path);
  if (abs == NULL)
    return ctl_img_fail (err, false, 0, "\"%s\": %s", path, strerror (errno));
  struct nbd_handle *h = new_handle (path, err);
  if (h == NULL) {
    free (abs);
    return -1;
  }
  char *argv[] = { "qemu-nbd", "-f", (char *) format,
                   read_only ? "--read-only" : "--cache=writeback", abs, NULL };

  /* libnbd forks qemu-nbd inside the call: it inherits fd 2 as it is then. */
  int cap = capture_fd (), saved = -1;
  if (cap >= 0 && (saved = dup (STDERR_FILENO)) >= 0)
    dup2 (cap, STDERR_FILENO);
  int r = nbd_connect_systemd_socket_activation (h, argv);
  if (saved >= 0) {
    dup2 (saved, STDERR_FILENO);
    close (saved);
  }
  if (r == -1) {
    const char *said = cap >= 0 ? captured (cap, "qemu-nbd", msg, sizeof msg) : NULL;
    ctl_img_fail (err, false, 0, "qemu-nbd cannot open \"%s\" as %s: %s", path,
               format, said ? said : ctl_img_nbd_error ());
    nbd_close (h);
  }
  if (cap >= 0)
    close (cap);
  free (abs);
  return r == -1 ? -1 : connected (e, h, err);
}

int
ctl_img_qemu_img_create (const char *path, uint64_t size,
                         struct ctl_img_error *err)
{
  char msg[sizeof err->msg], sz[32];
  if (!in_path ("qemu-img"))
    return ctl_img_fail (err, false, 0, QEMU_MISSING, "qemu-img");
  char *abs = absolute (path);
  if (abs == NULL)
    return ctl_img_fail (err, false, 0, "\"%s\": %s", path, strerror (errno));
  snprintf (sz, sizeof sz, "%llu", (unsigned long long) size);
  char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", abs, sz, NULL };

  int cap = capture_fd ();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen (&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  if (cap >= 0)
    posix_spawn_file_actions_adddup2 (&fa, cap, STDERR_FILENO);
  pid_t pid;
  int r = posix_spawnp (&pid, "qemu-img", &fa, NULL, argv, environ), status = 0;
  posix_spawn_file_actions_destroy (&fa);
  free (abs);
  if (r != 0) {
    if (cap >= 0)
      close (cap);
    return ctl_img_fail (err, false, 0, "cannot run qemu-img: %s", strerror (r));
  }
  while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
    ;
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    const char *said = cap >= 0 ? captured (cap, "qemu-img", msg, sizeof msg) : NULL;
    ctl_img_fail (err, false, 0, "qemu-img create -f qcow2 \"%s\" failed: %s", path,
               said ? said : "no message");
    r = -1;
  }
  if (cap >= 0)
    close (cap);
  return r == 0 ? 0 : -1;
}

int
ctl_img_end_close (struct ctl_img_end *e, bool clean, struct ctl_img_error *err)
{
  int r = 0;
  if (e->nbd) {
    if (clean && e->writable && nbd_can_flush (e->nbd) == 1
        && nbd_flush (e->nbd, 0) == -1)
      r = ctl_img_fail (err, false, 0, "flush of %s failed: %s", e->name,
                        ctl_img_nbd_error ());
    if (clean && r == 0 && nbd_shutdown (e->nbd, 0) == -1)
      r = ctl_img_fail (err, false, 0, "disconnecting from %s: %s", e->name,
                        ctl_img_nbd_error ());
    nbd_close (e->nbd);          /* also waits for a qemu-nbd it started */
    e->nbd = NULL;
  }
  if (e->fd >= 0) {
    if (clean && e->writable && fsync (e->fd) == -1)
      r = ctl_img_fail (err, false, 0, "cannot write \"%s\" to disk: %s", e->name,
                     strerror (errno));
    if (close (e->fd) == -1 && clean && e->writable && r == 0)
      r = ctl_img_fail (err, false, 0, "cannot write \"%s\": %s", e->name,
                     strerror (errno));
    e->fd = -1;
  }
  return r;
}
