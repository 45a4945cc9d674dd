/* tests/unit/test-qmp.c — blockctl's QMP client (client/qmp.c) against a
 * fake QEMU on the other end of a socketpair, and the pure functions that
 * name a volume for QEMU (client/qemu-disk.c).
 *
 * The fake runs a script in a thread: send these bytes, expect a line
 * containing that, close.  Our client numbers its commands from 1
 * (qmp_capabilities), so the scripts know the ids to answer with. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "client/blockctl.h"

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, " \
                 "\"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define CAPS_OK  "{\"return\": {}, \"id\": 1}\r\n"

enum step_kind { SEND, SEND_SLOWLY, EXPECT, SLEEP_MS, CLOSE, END };
struct step {
  enum step_kind kind;
  const char *text;           /* SEND: bytes; EXPECT: a substring of the next line */
  int ms;
};

struct t_fake {
  int fd;
  const struct step *script;
  pthread_t thread;
  char failure[8192];         /* what the fake did not get, or "" */
  char last_line[4096];
};

static int
t_read_line (int fd, char *buf, size_t len)
{
  size_t n = 0;
  while (n + 1 < len) {
    ssize_t r = read (fd, buf + n, 1);
    if (r <= 0)
      return -1;
    if (buf[n] == '\n')
      break;
    n++;
  }
  buf[n] = '\0';
  return 0;
}

static void *
t_fake_run (void *opaque)
{
  struct t_fake *f = opaque;
  for (const struct step *s = f->script; s->kind != END; s++) {
    switch (s->kind) {
    case SEND:
      if (write (f->fd, s->text, strlen (s->text)) != (ssize_t) strlen (s->text))
        snprintf (f->failure, sizeof f->failure, "write failed");
      break;
    case SEND_SLOWLY:           /* a byte at a time: the client must reassemble */
      for (const char *p = s->text; *p; p++) {
        if (write (f->fd, p, 1) != 1)
          snprintf (f->failure, sizeof f->failure, "write failed");
        usleep (200);
      }
      break;
    case EXPECT:
      if (t_read_line (f->fd, f->last_line, sizeof f->last_line) < 0)
        snprintf (f->failure, sizeof f->failure, "expected \"%s\", got EOF",
                  s->text);
      else if (strstr (f->last_line, s->text) == NULL)
        snprintf (f->failure, sizeof f->failure, "expected \"%s\" in \"%s\"",
                  s->text, f->last_line);
      break;
    case SLEEP_MS:
      usleep ((useconds_t) s->ms * 1000);
      break;
    case CLOSE:
      close (f->fd);
      f->fd = -1;
      break;
    case END:
      break;
    }
    if (f->failure[0])
      break;
  }
  return NULL;
}

/* Start a fake running SCRIPT; returns the client's end of the socketpair. */
static int
t_fake_start (struct t_fake *f, const struct step *script)
{
  int sv[2];
  cr_assert_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  memset (f, 0, sizeof *f);
  f->fd = sv[1];
  f->script = script;
  cr_assert_eq (pthread_create (&f->thread, NULL, t_fake_run, f), 0);
  return sv[0];
}

static void
t_fake_finish (struct t_fake *f)
{
  pthread_join (f->thread, NULL);
  if (f->fd >= 0)
    close (f->fd);
  cr_expect_str_empty (f->failure, "fake QEMU: %s", f->failure);
}

static struct ctl_qmp *
t_open (struct t_fake *f, const struct step *script)
{
  char err[CTL_QMP_ERRLEN] = "";
  int fd = t_fake_start (f, script);
  struct ctl_qmp *q = ctl_qmp_open_fd (fd, 2000, err, sizeof err);
  cr_assert_not_null (q, "ctl_qmp_open_fd: %s", err);
  return q;
}

static long
t_ms_since (const struct timespec *t0)
{
  struct timespec t;
  clock_gettime (CLOCK_MONOTONIC, &t);
  return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

Test (qmp, greeting_and_capabilities)
{
  static const struct step script[] = {
    { SEND_SLOWLY, GREETING, 0 },
    { EXPECT, "\"execute\":\"qmp_capabilities\"", 0 },
    { SEND, CAPS_OK, 0 },
    { EXPECT, "\"id\":2", 0 },
    { SEND, "{\"return\": {\"status\": \"prelaunch\", \"running\": false}, \"id\": 2}\r\n", 0 },
    { END, NULL, 0 }
  };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  struct json_object *ret;
  cr_assert_eq (ctl_qmp_execute (q, "query-status", NULL, 2000, &ret), 0,
                "%s", ctl_qmp_error (q));
  struct json_object *v;
  cr_assert (json_object_object_get_ex (ret, "status", &v));
  cr_expect_str_eq (json_object_get_string (v), "prelaunch");
  json_object_put (ret);
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

Test (qmp, command_with_arguments_and_error_reply)
{
  static const struct step script[] = {
    { SEND, GREETING, 0 }, { EXPECT, "qmp_capabilities", 0 }, { SEND, CAPS_OK, 0 },
    { EXPECT, "\"arguments\":{\"node-name\":\"blockd-v1\"}", 0 },
    { SEND, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to find node "
            "with node-name='blockd-v1'\"}, \"id\": 2}\r\n", 0 },
    { EXPECT, "\"id\":3", 0 },
    { SEND, "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}, "
            "\"id\": 3}\r\n", 0 },
    { END, NULL, 0 }
  };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  struct json_object *args = json_object_new_object ();
  json_object_object_add (args, "node-name", json_object_new_string ("blockd-v1"));
  cr_expect_eq (ctl_qmp_execute (q, "blockdev-del", args, 2000, NULL), 1);
  cr_expect_str_eq (ctl_qmp_error (q), "Failed to find node with node-name='blockd-v1'");
  cr_expect_str_eq (ctl_qmp_error_class (q), "GenericError");
  args = json_object_new_object ();
  json_object_object_add (args, "id", json_object_new_string ("x"));
  cr_expect_eq (ctl_qmp_execute (q, "device_del", args, 2000, NULL), 1);
  cr_expect_str_eq (ctl_qmp_error_class (q), "DeviceNotFound");
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

/* Events before the reply, a stray reply to another id, and the event we
 * then wait for having arrived already (DEVICE_DELETED can beat the reply). */
Test (qmp, events_queued_while_waiting_for_reply)
{
  static const struct step script[] = {
    { SEND, GREETING, 0 }, { EXPECT, "qmp_capabilities", 0 }, { SEND, CAPS_OK, 0 },
    { EXPECT, "device_del", 0 },
    { SEND, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n"
            "{\"event\": \"DEVICE_DELETED\", \"data\": {\"path\": "
            "\"/machine/peripheral/blockd-v1/virtio-backend\"}, \"timestamp\": {}}\r\n"
            "{\"return\": {}, \"id\": 99}\r\n", 0 },
    { SEND_SLOWLY, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"blockd-v1\", "
                   "\"path\": \"/machine/peripheral/blockd-v1\"}, \"timestamp\": {}}\r\n", 0 },
    { SEND, "{\"return\": {}, \"id\": 2}\r\n", 0 },
    { END, NULL, 0 }
  };
  static const char *const names[] = { "DEVICE_DELETED", NULL };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  struct json_object *args = json_object_new_object (), *ev, *data, *v;
  json_object_object_add (args, "id", json_object_new_string ("blockd-v1"));
  cr_assert_eq (ctl_qmp_execute (q, "device_del", args, 2000, NULL), 0, "%s",
                ctl_qmp_error (q));
  cr_assert_eq (ctl_qmp_wait_event (q, names, "device", "blockd-v1", 1000, &ev), 0,
                "%s", ctl_qmp_error (q));
  cr_assert (json_object_object_get_ex (ev, "data", &data));
  cr_assert (json_object_object_get_ex (data, "path", &v));
  cr_expect_str_eq (json_object_get_string (v), "/machine/peripheral/blockd-v1");
  json_object_put (ev);
  /* It was taken: a second wait finds nothing (but RESUME is still queued). */
  cr_expect_eq (ctl_qmp_wait_event (q, names, "device", "blockd-v1", 50, NULL), -ETIMEDOUT);
  static const char *const resume[] = { "STOP", "RESUME", NULL };
  cr_expect_eq (ctl_qmp_wait_event (q, resume, NULL, NULL, 50, NULL), 0);
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

Test (qmp, wait_event_arrives_later_and_times_out)
{
  static const struct step script[] = {
    { SEND, GREETING, 0 }, { EXPECT, "qmp_capabilities", 0 }, { SEND, CAPS_OK, 0 },
    { SLEEP_MS, NULL, 100 },
    { SEND, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"other\"}}\r\n", 0 },
    { SEND, "{\"event\": \"DEVICE_UNPLUG_GUEST_ERROR\", \"data\": {\"device\": \"d1\", "
            "\"path\": \"/machine/peripheral/d1\"}}\r\n", 0 },
    { SLEEP_MS, NULL, 500 },
    { END, NULL, 0 }
  };
  static const char *const names[] = { "DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR", NULL };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  struct json_object *ev, *e;
  cr_assert_eq (ctl_qmp_wait_event (q, names, "device", "d1", 2000, &ev), 0, "%s",
                ctl_qmp_error (q));
  cr_assert (json_object_object_get_ex (ev, "event", &e));
  cr_expect_str_eq (json_object_get_string (e), "DEVICE_UNPLUG_GUEST_ERROR");
  json_object_put (ev);

  struct timespec t0;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  cr_expect_eq (ctl_qmp_wait_event (q, names, "device", "d1", 150, NULL), -ETIMEDOUT);
  long ms = t_ms_since (&t0);
  cr_expect (ms >= 140 && ms < 1500, "a 150 ms wait took %ld ms", ms);
  cr_expect (strstr (ctl_qmp_error (q), "DEVICE_DELETED") != NULL, "%s", ctl_qmp_error (q));
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

/* pretty=on: messages span lines; two messages in one read. */
Test (qmp, pretty_printed_messages)
{
  static const struct step script[] = {
    { SEND, "{\r\n    \"QMP\": {\r\n        \"version\": {}, \"capabilities\": []\r\n    }\r\n}\r\n", 0 },
    { EXPECT, "qmp_capabilities", 0 },
    { SEND, "{\r\n    \"return\": {\r\n    },\r\n    \"id\": 1\r\n}\r\n", 0 },
    { EXPECT, "query-block", 0 },
    { SEND, "{\"event\": \"X\"}{\r\n  \"return\": [\r\n {\"device\": \"\"}\r\n  ],\r\n  \"id\": 2\r\n}\r\n", 0 },
    { END, NULL, 0 }
  };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  struct json_object *ret;
  cr_assert_eq (ctl_qmp_execute (q, "query-block", NULL, 2000, &ret), 0, "%s",
                ctl_qmp_error (q));
  cr_expect (json_object_is_type (ret, json_type_array));
  cr_expect_eq (json_object_array_length (ret), 1);
  json_object_put (ret);
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

Test (qmp, qemu_exits_mid_command)
{
  static const struct step script[] = {
    { SEND, GREETING, 0 }, { EXPECT, "qmp_capabilities", 0 }, { SEND, CAPS_OK, 0 },
    { EXPECT, "blockdev-add", 0 }, { SEND, "{\"ret", 0 }, { CLOSE, NULL, 0 },
    { END, NULL, 0 }
  };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  cr_expect_eq (ctl_qmp_execute (q, "blockdev-add", json_object_new_object (), 2000, NULL),
                -ECONNRESET);
  cr_expect (strstr (ctl_qmp_error (q), "closed") != NULL, "%s", ctl_qmp_error (q));
  cr_expect_str_empty (ctl_qmp_error_class (q));
  /* and a command after that fails at once, without SIGPIPE */
  cr_expect_lt (ctl_qmp_execute (q, "query-status", NULL, 2000, NULL), 0);
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

Test (qmp, command_timeout)
{
  static const struct step script[] = {
    { SEND, GREETING, 0 }, { EXPECT, "qmp_capabilities", 0 }, { SEND, CAPS_OK, 0 },
    { EXPECT, "query-status", 0 }, { SLEEP_MS, NULL, 300 }, { END, NULL, 0 }
  };
  struct t_fake f;
  struct ctl_qmp *q = t_open (&f, script);
  cr_expect_eq (ctl_qmp_execute (q, "query-status", NULL, 100, NULL), -ETIMEDOUT);
  cr_expect (strstr (ctl_qmp_error (q), "did not answer query-status") != NULL, "%s",
             ctl_qmp_error (q));
  ctl_qmp_close (q);
  t_fake_finish (&f);
}

/* What open says about sockets that are not (or not yet) QMP. */
struct open_case {
  const char *send;           /* NULL: say nothing */
  const char *err;            /* a substring of the error */
};

static void
t_open_fails (const struct open_case *c)
{
  struct step script[] = {
    { c->send ? SEND : SLEEP_MS, c->send, 300 }, { SLEEP_MS, NULL, 300 },
    { END, NULL, 0 }
  };
  struct t_fake f;
  char err[CTL_QMP_ERRLEN] = "";
  int fd = t_fake_start (&f, script);
  struct ctl_qmp *q = ctl_qmp_open_fd (fd, 150, err, sizeof err);
  cr_expect_null (q);
  cr_expect (strstr (err, c->err) != NULL, "error \"%s\" does not say \"%s\"", err, c->err);
  t_fake_finish (&f);
}

Test (qmp, open_failures)
{
  static const struct open_case cases[] = {
    { NULL, "another client" },                                 /* busy monitor */
    { "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ",
      "not JSON" },                                             /* HMP */
    { "{\"hello\": 1}\r\n", "HMP" },                            /* JSON, not QMP */
    { "[1, 2]\r\n", "not an object" },
    { GREETING, "qmp_capabilities" },                           /* no reply to it */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    t_open_fails (&cases[i]);
}

Test (qmp, connect_errors)
{
  char err[CTL_QMP_ERRLEN];
  cr_expect_null (ctl_qmp_connect ("/nonexistent/qmp.sock", 100, err, sizeof err));
  cr_expect (strstr (err, "no such socket") != NULL, "%s", err);
  char longpath[200];
  memset (longpath, 'a', sizeof longpath - 1);
  longpath[sizeof longpath - 1] = '\0';
  cr_expect_null (ctl_qmp_connect (longpath, 100, err, sizeof err));
  cr_expect (strstr (err, "longer") != NULL, "%s", err);
}

/* ---- qemu-disk.c */

struct uri_case {
  const char *uri;
  int ret;
  bool unix_socket;
  const char *host, *port, *path, *export_name;
};

Test (qemu_disk, nbd_uri_parse)
{
  static const struct uri_case cases[] = {
    { "nbd://127.0.0.1:10809/data1", 0, false, "127.0.0.1", "10809", "", "data1" },
    { "nbd://localhost/data1", 0, false, "localhost", "10809", "", "data1" },
    { "nbd://[::1]:10900/v", 0, false, "::1", "10900", "", "v" },
    { "nbd://[::1]/v", 0, false, "::1", "10809", "", "v" },
    { "nbd://h:1/data1@s1", 0, false, "h", "1", "", "data1@s1" },
    { "nbd://h:1/data1%40s1", 0, false, "h", "1", "", "data1@s1" },
    { "nbd://h:1/", 0, false, "h", "1", "", "" },
    { "nbd+unix:///data1?socket=/run/blockd/nbd.sock", 0, true, "", "", "/run/blockd/nbd.sock", "data1" },
    { "nbd+unix:///d?x=1&socket=/tmp/a%20b", 0, true, "", "", "/tmp/a b", "d" },
    { "nbd+unix:///d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd+unix:///d?other=1", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbds://h:1/d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "http://h:1/d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd://:1/d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd://h:/d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd://h:1x/d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd://[::1/d", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd://h:1/a%2", -EINVAL, false, NULL, NULL, NULL, NULL },
    { "nbd://h:1/a%00b", -EINVAL, false, NULL, NULL, NULL, NULL },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct uri_case *c = &cases[i];
    struct ctl_nbd_server s;
    char err[256] = "";
    int r = ctl_nbd_uri_parse (c->uri, &s, err, sizeof err);
    cr_expect_eq (r, c->ret, "%s: %d (%s)", c->uri, r, err);
    if (r != 0) {
      cr_expect (strstr (err, "NBD URI") != NULL, "%s: %s", c->uri, err);
      continue;
    }
    cr_expect_eq (s.unix_socket, c->unix_socket, "%s", c->uri);
    cr_expect_str_eq (s.host, c->host, "%s", c->uri);
    cr_expect_str_eq (s.port, c->port, "%s", c->uri);
    cr_expect_str_eq (s.path, c->path, "%s", c->uri);
    cr_expect_str_eq (s.export_name, c->export_name, "%s", c->uri);
  }
}

Test (qemu_disk, node_names_and_serial)
{
  static const char id[] = "3f2b8c1e-5d7a-4e09-9b1c-2a6f0e4d8b71";
  char node[CTL_QEMU_ID_MAX + 1], serial[CTL_SERIAL_MAX + 1];

  cr_expect_eq (ctl_qemu_id ("data1", id, node), 0);
  cr_expect_str_eq (node, "blockd-data1");
  cr_expect_eq (ctl_qemu_id ("web-01.boot_2", id, node), 0);
  cr_expect_str_eq (node, "blockd-web-01.boot_2");
  cr_expect_eq (ctl_qemu_id ("a23456789012345678901234", id, node), 0);   /* 24: fits */
  cr_expect_str_eq (node, "blockd-a23456789012345678901234");
  cr_expect_eq (strlen (node), 31);
  cr_expect_eq (ctl_qemu_id ("a234567890123456789012345", id, node), 0);  /* 25: id */
  cr_expect_str_eq (node, "blockd_3f2b8c1e5d7a4e099b1c2a6f");
  cr_expect_eq (strlen (node), 31);
  cr_expect_eq (ctl_qemu_id ("x", "not-a-uuid", node), 0);               /* name fits */
  cr_expect_eq (ctl_qemu_id ("a234567890123456789012345", "not-a-uuid", node), -EINVAL);
  cr_expect_eq (ctl_qemu_id ("a234567890123456789012345", "3f2b", node), -EINVAL);

  ctl_qemu_serial (id, serial);
  cr_expect_str_eq (serial, "3f2b8c1e-5d7a-4e09-9");
  ctl_qemu_serial ("short", serial);
  cr_expect_str_eq (serial, "short");
}

Test (qemu_disk, qmp_arguments_and_options)
{
  struct ctl_nbd_server s;
  char err[256];
  cr_assert_eq (ctl_nbd_uri_parse ("nbd://127.0.0.1:10809/data1", &s, err, sizeof err), 0);

  struct json_object *bd = ctl_qemu_blockdev (&s, "blockd-data1");
  cr_expect_str_eq (json_object_to_json_string_ext (bd, JSON_C_TO_STRING_PLAIN),
                    "{\"driver\":\"nbd\",\"node-name\":\"blockd-data1\",\"server\":"
                    "{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"10809\"},"
                    "\"export\":\"data1\",\"discard\":\"unmap\",\"reconnect-delay\":30}");
  char *o = ctl_qemu_optstr (bd, NULL);
  cr_expect_str_eq (o, "driver=nbd,node-name=blockd-data1,server.type=inet,"
                    "server.host=127.0.0.1,server.port=10809,export=data1,discard=unmap,"
                    "reconnect-delay=30");
  free (o);
  json_object_put (bd);

  cr_assert_eq (ctl_nbd_uri_parse ("nbd+unix:///d?socket=/tmp/a,b", &s, err, sizeof err), 0);
  bd = ctl_qemu_blockdev (&s, "blockd-d");
  o = ctl_qemu_optstr (bd, NULL);
  cr_expect_str_eq (o, "driver=nbd,node-name=blockd-d,server.type=unix,"
                    "server.path=/tmp/a,,b,export=d,discard=unmap,reconnect-delay=30");
  free (o);
  json_object_put (bd);

  struct json_object *dev = ctl_qemu_device ("blockd-d", "3f2b8c1e-5d7a-4e09-9", true, NULL);
  o = ctl_qemu_optstr (dev, "driver");
  cr_expect_str_eq (o, "virtio-blk-pci,id=blockd-d,drive=blockd-d,"
                    "serial=3f2b8c1e-5d7a-4e09-9,rerror=stop,werror=stop,bootindex=1");
  free (o);
  json_object_put (dev);
  dev = ctl_qemu_device ("blockd-d", "s", false, "rp1");
  o = ctl_qemu_optstr (dev, "driver");
  cr_expect_str_eq (o, "virtio-blk-pci,id=blockd-d,drive=blockd-d,serial=s,bus=rp1,"
                    "rerror=stop,werror=stop");
  free (o);
  json_object_put (dev);
}

Test (qemu_disk, shell_quote)
{
  static const char *const cases[][2] = {
    { "driver=nbd,server.port=10809", "driver=nbd,server.port=10809" },
    { "a b", "'a b'" },
    { "it's", "'it'\\''s'" },
    { "", "''" },
    { "$HOME", "'$HOME'" },
    { "x;y", "'x;y'" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *q = ctl_shell_quote (cases[i][0]);
    cr_expect_str_eq (q, cases[i][1]);
    free (q);
  }
}
