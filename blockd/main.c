/* blockd/main.c — the daemon: settings, listeners, threads, signals. */
#include "blockd/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

static int
listen_tcp (const char *hostport, struct blk_listener *ls, char *err, size_t errlen)
{
  struct addrinfo *ai;
  int r = blk_resolve (hostport, &ai, err, errlen);
  if (r < 0)
    return r;
  int fd = socket (ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0)
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind (fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen (fd, 1024) < 0) {
    snprintf (err, errlen, "cannot listen on %s: %s", hostport, strerror (errno));
    r = -errno;
    if (fd >= 0)
      close (fd);
    freeaddrinfo (ai);
    return r;
  }
  freeaddrinfo (ai);
  ls->fd = fd;
  ls->is_unix = false;
  snprintf (ls->desc, sizeof ls->desc, "%s", hostport);
  return 0;
}

static int
listen_unix (const char *path, struct blk_listener *ls, char *err, size_t errlen)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen (path) >= sizeof sa.sun_path) {
    snprintf (err, errlen, "unix socket path %s is too long", path);
    return -EINVAL;
  }
  strcpy (sa.sun_path, path);
  unlink (path);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind (fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (fd, 1024) < 0) {
    snprintf (err, errlen, "cannot listen on unix socket %s: %s", path, strerror (errno));
    int r = -errno;
    if (fd >= 0)
      close (fd);
    return r;
  }
  ls->fd = fd;
  ls->is_unix = true;
  snprintf (ls->desc, sizeof ls->desc, "unix:%s", path);
  return 0;
}

static pid_t run_child = -1;

static int
start_run (const char *cmd)
{
  char api[160];
  snprintf (api, sizeof api, "http://%s", blk_cfg.api);
  setenv ("BLOCKD_API", api, 1);
  /* "$BLOCKD_NBD/VOLUME" is a volume's URI */
  char nbd[256];
  blk_nbd_uri ("", nbd, sizeof nbd);
  size_t n = strlen (nbd);
  if (n && nbd[n - 1] == '/')
    nbd[n - 1] = '\0';
  if (blk_cfg.nbd[0])
    setenv ("BLOCKD_NBD", nbd, 1);
  if (blk_cfg.nbd_unix[0])
    setenv ("BLOCKD_NBD_UNIX", blk_cfg.nbd_unix, 1);
  run_child = fork ();
  if (run_child < 0)
    return -errno;
  if (run_child == 0) {
    sigset_t none;
    sigemptyset (&none);
    pthread_sigmask (SIG_SETMASK, &none, NULL);
    execl ("/bin/sh", "sh", "-c", cmd, (char *) NULL);
    _exit (127);
  }
  return 0;
}

int
main (int argc, char **argv)
{
  char err[512];
  const char *run_cmd = NULL;
  bool dump = false, check = false;
  blk_config_defaults (&blk_cfg);

  /* --config first, so that flags override the file wherever they stand */
  for (int i = 1; i < argc; i++)
    if (strcmp (argv[i], "--config") == 0 || strncmp (argv[i], "--config=", 9) == 0) {
      const char *path = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[i + 1] : NULL);
      if (path == NULL) {
        fprintf (stderr, "blockd: --config needs a FILE\n");
        return 2;
      }
      if (blk_config_load (&blk_cfg, path, err, sizeof err) < 0) {
        fprintf (stderr, "blockd: %s\n", err);
        return 2;
      }
    }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp (a, "--help") == 0 || strcmp (a, "-h") == 0) {
      blk_config_usage (stdout);
      return 0;
    }
    if (strcmp (a, "--version") == 0) {
      printf ("blockd %s\n", BLOCKD_VERSION);
      return 0;
    }
    if (strcmp (a, "--dump-config") == 0) { dump = true; continue; }
    if (strcmp (a, "--check") == 0) { check = true; continue; }
    if (strncmp (a, "--", 2) != 0) {
      fprintf (stderr, "blockd: unexpected argument \"%s\" (see --help)\n", a);
      return 2;
    }
    char name[64];
    const char *value;
    const char *eq = strchr (a, '=');
    if (eq) {
      snprintf (name, sizeof name, "%.*s", (int) (eq - a - 2), a + 2);
      value = eq + 1;
    }
    else {
      snprintf (name, sizeof name, "%s", a + 2);
      if (i + 1 >= argc) {
        fprintf (stderr, "blockd: --%s needs a value (see --help)\n", name);
        return 2;
      }
      value = argv[++i];
    }
    if (strcmp (name, "config") == 0)
      continue;
    if (strcmp (name, "run") == 0) {
      run_cmd = value;
      continue;
    }
    if (blk_config_set (&blk_cfg, name, value, err, sizeof err) < 0) {
      fprintf (stderr, "blockd: %s\n", err);
      return 2;
    }
  }
  if (log_set_level (blk_cfg.log_level) < 0) {
    fprintf (stderr, "blockd: log-level \"%s\" is not error, warn, info or debug\n", blk_cfg.log_level);
    return 2;
  }
  if (dump) {
    blk_config_dump (&blk_cfg, stdout);
    return 0;
  }
  if (check) {
    int r = vol_store_check (blk_cfg.data_dir, stdout);
    return r < 0 ? 2 : r;
  }
  if (!blk_cfg.nbd[0] && !blk_cfg.nbd_unix[0]) {
    fprintf (stderr, "blockd: no NBD listener: set --nbd HOST:PORT or --nbd-unix PATH\n");
    return 2;
  }

  /* Signals go to this thread only, through sigwait. */
  sigset_t sigs;
  sigemptyset (&sigs);
  sigaddset (&sigs, SIGTERM);
  sigaddset (&sigs, SIGINT);
  sigaddset (&sigs, SIGCHLD);
  sigaddset (&sigs, SIGHUP);
  pthread_sigmask (SIG_BLOCK, &sigs, NULL);
  signal (SIGPIPE, SIG_IGN);

  struct vol_store_params sp = { .dir = blk_cfg.data_dir, .capacity = blk_cfg.capacity,
                                 .chunk_size = (uint32_t) blk_cfg.chunk_size };
  if (vol_store_open (&sp, &blk_store, err, sizeof err) < 0) {
    log_error ("%s", err);
    return 1;
  }
  int r = 0;
  if (blk_cfg.nbd[0])
    r = listen_tcp (blk_cfg.nbd, &blk_listeners[blk_nlisteners++], err, sizeof err);
  if (r == 0 && blk_cfg.nbd_unix[0])
    r = listen_unix (blk_cfg.nbd_unix, &blk_listeners[blk_nlisteners++], err, sizeof err);
  if (r == 0)
    r = blk_loops_start ((unsigned) blk_cfg.threads, err, sizeof err);
  if (r == 0)
    r = blk_api_start (blk_cfg.api, err, sizeof err);
  if (r < 0) {
    log_error ("%s", err);
    if (blk_loops)
      blk_loops_stop ();
    vol_store_close (blk_store);
    return 1;
  }
  log_info ("blockd %s ready: NBD on %s%s%s, API on http://%s, %lld threads", BLOCKD_VERSION,
            blk_cfg.nbd[0] ? blk_cfg.nbd : "", blk_cfg.nbd[0] && blk_cfg.nbd_unix[0] ? " and unix:" : "",
            blk_cfg.nbd_unix, blk_cfg.api, (long long) blk_cfg.threads);

  int status = 0;
  if (run_cmd && start_run (run_cmd) < 0) {
    log_error ("cannot run \"%s\": %s", run_cmd, strerror (errno));
    status = 1;
  }
  else {
    for (;;) {
      int sig;
      sigwait (&sigs, &sig);
      if (sig == SIGCHLD) {
        int ws;
        if (run_child > 0 && waitpid (run_child, &ws, WNOHANG) == run_child) {
          status = WIFEXITED (ws) ? WEXITSTATUS (ws) : 128 + WTERMSIG (ws);
          break;
        }
        continue;
      }
      if (sig == SIGHUP)
        continue;
      log_info ("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      if (run_child > 0)
        kill (run_child, SIGTERM);
      break;
    }
  }

  blk_api_stop ();
  blk_loops_stop ();
  for (unsigned i = 0; i < blk_nlisteners; i++) {
    close (blk_listeners[i].fd);
    if (blk_listeners[i].is_unix)
      unlink (blk_cfg.nbd_unix);
  }
  vol_store_close (blk_store);
  log_info ("stopped; everything acknowledged is on disk");
  return status;
}
