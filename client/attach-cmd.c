/* client/attach-cmd.c — "blockctl attach" and "blockctl detach": record
 * that a volume is a disk of an instance (a VM) in blockd, and plug it into
 * (or out of) the running QEMU over QMP.
 *
 * blockd's record is the reservation, so it comes first and goes last:
 *
 *   attach --qmp   POST .../attach         (a 409 stops here: someone holds it)
 *                  blockdev-add  nbd node "blockd-NAME" -> blockd's export
 *                  device_add    virtio-blk-pci, same id, serial = id[0..20)
 *                  QEMU refusing a step undoes what came before it, in
 *                  reverse; a step with no answer (timeout, connection
 *                  lost) undoes nothing: QEMU may have done it
 *   attach --print-args
 *                  POST .../attach, then print -blockdev and -device for a
 *                  VM about to be started
 *   detach --qmp   query-status (a running system disk is refused)
 *                  device_del, wait for DEVICE_DELETED (the guest must let
 *                  go: ACPI eject), blockdev-del, POST .../detach
 *   detach         POST .../detach only: the instance is stopped or gone
 *
 * A QMP socket is opened before anything is recorded, so that a wrong
 * --qmp changes nothing.  The QEMU names come from qemu-disk.c. */
#include "client/blockctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QMP_CONNECT_MS     10000
#define QMP_COMMAND_MS     60000     /* blockdev-add connects to blockd */
#define DETACH_TIMEOUT_S   30
#define BY_ID_PREFIX       "/dev/disk/by-id/virtio-"

#define USAGE_ATTACH "blockctl attach VOLUME --instance NAME (--qmp SOCKET | " \
                     "--print-args [--shell]) [--role system|data] [--bus BUS]"
#define USAGE_DETACH "blockctl detach VOLUME [--instance NAME] [--qmp SOCKET " \
                     "[--timeout SECS]]"

/* String member KEY of OBJ, or NULL. */
static const char *
jstr (struct json_object *obj, const char *key)
{
  struct json_object *v;
  if (obj == NULL || !json_object_object_get_ex (obj, key, &v)
      || !json_object_is_type (v, json_type_string))
    return NULL;
  return json_object_get_string (v);
}

/* The attachment of volume VOL to INSTANCE (NULL: its first), or NULL;
 * *COUNT gets the number of attachments. */
static struct json_object *
find_attachment (struct json_object *vol, const char *instance, size_t *count)
{
  struct json_object *arr;
  *count = 0;
  if (!json_object_object_get_ex (vol, "attachments", &arr)
      || !json_object_is_type (arr, json_type_array))
    return NULL;
  *count = json_object_array_length (arr);
  for (size_t i = 0; i < *count; i++) {
    struct json_object *a = json_object_array_get_idx (arr, i);
    const char *in = jstr (a, "instance");
    if (in && (instance == NULL || strcmp (in, instance) == 0))
      return a;
  }
  return NULL;
}

/* A volume as QEMU will see it.  Strings point into the volume object. */
struct disk {
  const char *name, *id, *uri;
  char node[CTL_QEMU_ID_MAX + 1];       /* block node-name and device id */
  char serial[CTL_SERIAL_MAX + 1];
  struct ctl_nbd_server srv;
};

/* Fill D from VOL (blockd's answer).  Returns 0 or CTL_EXIT_SERVER (said). */
static int
disk_from_volume (const struct ctl_globals *g, struct json_object *vol,
                  struct disk *d)
{
  char err[512];
  d->name = jstr (vol, "name");
  d->id = jstr (vol, "id");
  d->uri = jstr (vol, "nbd_uri");
  if (d->name == NULL || d->id == NULL || d->uri == NULL) {
    ctl_error ("blockd at %s sent a volume without name, id or nbd_uri",
               g->api);
    return CTL_EXIT_SERVER;
  }
  if (ctl_nbd_uri_parse (d->uri, &d->srv, err, sizeof err) < 0) {
    ctl_error ("volume \"%s\": %s", d->name, err);
    return CTL_EXIT_SERVER;
  }
  if (ctl_qemu_id (d->name, d->id, d->node) < 0) {
    ctl_error ("volume \"%s\": its id \"%s\" is not a UUID, and QEMU needs "
               "one to name a volume whose name is this long", d->name, d->id);
    return CTL_EXIT_SERVER;
  }
  ctl_qemu_serial (d->id, d->serial);
  return 0;
}

/* POST PATH_PREFIX VOL SUFFIX with BODY (consumed).  Returns the exit code,
 * with *OUT the answer (caller puts). */
static int
post (const struct ctl_globals *g, const char *vol, const char *suffix,
      struct json_object *body, struct json_object **out)
{
  char *path = ctl_ref_path ("/v1/volumes/", vol, suffix);
  int r = CTL_EXIT_SERVER;
  *out = NULL;
  if (path != NULL)
    r = ctl_http (g, "POST", path, body, out);
  json_object_put (body);
  free (path);
  return r;
}

static int
get_volume (const struct ctl_globals *g, const char *vol,
            struct json_object **out)
{
  char *path = ctl_ref_path ("/v1/volumes/", vol, "");
  int r = CTL_EXIT_SERVER;
  *out = NULL;
  if (path != NULL)
    r = ctl_http (g, "GET", path, NULL, out);
  free (path);
  if (r == CTL_EXIT_OK && !json_object_is_type (*out, json_type_object)) {
    ctl_error ("blockd at %s sent an unexpected answer for volume \"%s\" "
               "(not a JSON object)", g->api, vol);
    json_object_put (*out);
    *out = NULL;
    r = CTL_EXIT_SERVER;
  }
  return r;
}

static int
post_detach (const struct ctl_globals *g, const char *vol,
             const char *instance, struct json_object **out)
{
  struct json_object *body = json_object_new_object ();
  if (instance)
    json_object_object_add (body, "instance", json_object_new_string (instance));
  return post (g, vol, "/detach", body, out);
}

/* After a failure, take back the attachment record of VOL on INSTANCE,
 * unless it was there before this command (WAS_THERE).  Says what became
 * of it in OUTCOME, for the end of the failure's line. */
static void
undo_record (const struct ctl_globals *g, const char *vol,
             const char *instance, bool was_there, char *outcome, size_t len)
{
  struct json_object *j = NULL;
  if (was_there)
    snprintf (outcome, len, "the attachment to \"%s\" was recorded before "
              "this command and stays", instance);
  else if (post_detach (g, vol, instance, &j) == CTL_EXIT_OK)
    snprintf (outcome, len, "the attachment record was undone");
  else
    snprintf (outcome, len, "undoing the attachment record failed too: run "
              "\"blockctl detach %s --instance %s\"", vol, instance);
  json_object_put (j);
}

/* "QEMU refused CMD: desc" or "QMP CMD failed: what happened". */
static const char *
qmp_failure (struct ctl_qmp *q, const char *cmd, int r, char *buf, size_t len)
{
  if (r == 1)
    snprintf (buf, len, "QEMU refused %s: %s", cmd, ctl_qmp_error (q));
  else
    snprintf (buf, len, "QMP %s failed: %s", cmd, ctl_qmp_error (q));
  return buf;
}

/* Is node NODE in QEMU (*HAS_NODE), and a device with id NODE on it
 * (*HAS_DEVICE)?  Returns 0 or the ctl_qmp_execute failure. */
static int
qemu_has (struct ctl_qmp *q, const char *node, bool *has_node, bool *has_device)
{
  struct json_object *list, *args = json_object_new_object ();
  char qdev[64];
  int r;

  *has_node = *has_device = false;
  json_object_object_add (args, "flat", json_object_new_boolean (true));
  if ((r = ctl_qmp_execute (q, "query-named-block-nodes", args,
                            QMP_COMMAND_MS, &list)) != 0)
    return r;
  for (size_t i = 0; i < json_object_array_length (list); i++) {
    const char *n = jstr (json_object_array_get_idx (list, i), "node-name");
    *has_node |= n && strcmp (n, node) == 0;
  }
  json_object_put (list);

  if ((r = ctl_qmp_execute (q, "query-block", NULL, QMP_COMMAND_MS, &list)))
    return r;
  snprintf (qdev, sizeof qdev, "/machine/peripheral/%s/", node);
  for (size_t i = 0; i < json_object_array_length (list); i++) {
    struct json_object *b = json_object_array_get_idx (list, i), *ins;
    const char *dev = jstr (b, "qdev"), *n = NULL;
    if (json_object_object_get_ex (b, "inserted", &ins))
      n = jstr (ins, "node-name");
    *has_device |= dev && n && strcmp (n, node) == 0
      && (strcmp (dev, node) == 0 || strncmp (dev, qdev, strlen (qdev)) == 0);
  }
  json_object_put (list);
  return 0;
}

/* What attach prints: text, or with --json an object holding blockd's
 * volume and the QEMU names (and ARGS, the options, for --print-args). */
static void
print_attached (const struct ctl_globals *g, struct json_object *vol,
                const struct disk *d, const char *instance, const char *role,
                struct json_object *args, const char *note)
{
  if (g->json) {
    struct json_object *o = json_object_new_object ();
    char by_id[sizeof BY_ID_PREFIX + CTL_SERIAL_MAX];
    snprintf (by_id, sizeof by_id, BY_ID_PREFIX "%s", d->serial);
    json_object_object_add (o, "volume", json_object_get (vol));
    json_object_object_add (o, "instance", json_object_new_string (instance));
    json_object_object_add (o, "role", json_object_new_string (role));
    json_object_object_add (o, "node_name", json_object_new_string (d->node));
    json_object_object_add (o, "device", json_object_new_string (d->node));
    json_object_object_add (o, "serial", json_object_new_string (d->serial));
    json_object_object_add (o, "by_id", json_object_new_string (by_id));
    if (args)
      json_object_object_add (o, "args", json_object_get (args));
    ctl_print_json (o);
    json_object_put (o);
    return;
  }
  if (args) {
    for (size_t i = 0; i + 1 < json_object_array_length (args); i += 2)
      printf ("%s %s\n",
              json_object_get_string (json_object_array_get_idx (args, i)),
              json_object_get_string (json_object_array_get_idx (args, i + 1)));
    return;
  }
  printf ("attached volume \"%s\" to instance \"%s\" as a %s disk%s\n"
          "device: %s (virtio-blk-pci on block node %s, %s)\n"
          "serial: %s\n"
          "guest path: " BY_ID_PREFIX "%s\n",
          d->name, instance, role, note ? note : "", d->node, d->node,
          d->uri, d->serial, d->serial);
}

/* --print-args: the options for a new QEMU, as ARGS (an array of words). */
static int
print_args (const struct ctl_globals *g, struct json_object *vol,
            const struct disk *d, const char *instance, const char *role,
            const char *bus, bool shell)
{
  struct json_object *bd = ctl_qemu_blockdev (&d->srv, d->node);
  struct json_object *dev = ctl_qemu_device (d->node, d->serial,
                                             strcmp (role, "system") == 0, bus);
  char *bds = ctl_qemu_optstr (bd, NULL), *devs = ctl_qemu_optstr (dev, "driver");
  struct json_object *args = json_object_new_array ();
  int r = CTL_EXIT_OK;

  json_object_put (bd);
  json_object_put (dev);
  if (bds == NULL || devs == NULL) {
    ctl_error ("out of memory");
    r = CTL_EXIT_SERVER;
    goto out;
  }
  json_object_array_add (args, json_object_new_string ("-blockdev"));
  json_object_array_add (args, json_object_new_string (bds));
  json_object_array_add (args, json_object_new_string ("-device"));
  json_object_array_add (args, json_object_new_string (devs));
  if (shell && !g->json) {
    char *qb = ctl_shell_quote (bds), *qd = ctl_shell_quote (devs);
    if (qb && qd)
      printf ("-blockdev %s -device %s\n", qb, qd);
    else {
      ctl_error ("out of memory");
      r = CTL_EXIT_SERVER;
    }
    free (qb);
    free (qd);
  }
  else
    print_attached (g, vol, d, instance, role, args, NULL);
 out:
  json_object_put (args);
  free (bds);
  free (devs);
  return r;
}

/* CMD got no answer (R < 0: timeout, connection lost): QEMU may have
 * carried it out, and after device_add the guest may be writing to the
 * disk.  Undoing the record then would let another instance attach the
 * volume under it, so the record stays, and nothing is removed from QEMU;
 * attaching again finds out what QEMU has and finishes. */
static int
unanswered (struct ctl_qmp *q, const struct disk *d, const char *instance,
            const char *cmd, int r)
{
  char what[CTL_QMP_ERRLEN + 64];
  ctl_error ("volume \"%s\": instance \"%s\": %s; QEMU may have carried it "
             "out, so the attachment record stays: run the same attach again "
             "to finish it, or detach with --qmp", d->name, instance,
             qmp_failure (q, cmd, r, what, sizeof what));
  return CTL_EXIT_QEMU;
}

/* Plug disk D into the QEMU on Q: blockdev-add, device_add, each undone
 * when a later step is refused, and the record with them (unless
 * WAS_THERE); a step that gets no answer undoes nothing (unanswered).
 * Returns the exit code. */
static int
hotplug (const struct ctl_globals *g, struct ctl_qmp *q, struct json_object *vol,
         const struct disk *d, const char *instance, const char *role,
         const char *bus, bool was_there)
{
  char what[CTL_QMP_ERRLEN + 64], outcome[256];
  bool has_node = false, has_device = false, added_node = false;
  int r;

  /* Attaching again what is attached: find out what is already there. */
  if (was_there && (r = qemu_has (q, d->node, &has_node, &has_device)) != 0) {
    ctl_error ("volume \"%s\": instance \"%s\": %s", d->name, instance,
               qmp_failure (q, "query-block", r, what, sizeof what));
    return CTL_EXIT_QEMU;
  }
  if (has_node && has_device) {
    print_attached (g, vol, d, instance, role, NULL, " (it already was)");
    return CTL_EXIT_OK;
  }

  if (!has_node) {
    r = ctl_qmp_execute (q, "blockdev-add", ctl_qemu_blockdev (&d->srv, d->node),
                         QMP_COMMAND_MS, NULL);
    if (r < 0)
      return unanswered (q, d, instance, "blockdev-add", r);
    if (r != 0) {
      qmp_failure (q, "blockdev-add", r, what, sizeof what);
      undo_record (g, d->name, instance, was_there, outcome, sizeof outcome);
      ctl_error ("volume \"%s\": instance \"%s\": %s; %s", d->name, instance,
                 what, outcome);
      return CTL_EXIT_QEMU;
    }
    added_node = true;
  }

  r = ctl_qmp_execute (q, "device_add",
                       ctl_qemu_device (d->node, d->serial,
                                        strcmp (role, "system") == 0, bus),
                       QMP_COMMAND_MS, NULL);
  if (r < 0)
    return unanswered (q, d, instance, "device_add", r);
  if (r != 0) {
    char del[CTL_QMP_ERRLEN + 64] = "";
    qmp_failure (q, "device_add", r, what, sizeof what);
    if (added_node) {
      struct json_object *args = json_object_new_object ();
      json_object_object_add (args, "node-name", json_object_new_string (d->node));
      int r2 = ctl_qmp_execute (q, "blockdev-del", args, QMP_COMMAND_MS, NULL);
      if (r2 == 0)
        snprintf (del, sizeof del, "block node %s removed again; ", d->node);
      else
        snprintf (del, sizeof del, "block node %s could not be removed (%s); ",
                  d->node, ctl_qmp_error (q));
    }
    undo_record (g, d->name, instance, was_there, outcome, sizeof outcome);
    ctl_error ("volume \"%s\": instance \"%s\": %s; %s%s", d->name, instance,
               what, del, outcome);
    return CTL_EXIT_QEMU;
  }
  print_attached (g, vol, d, instance, role, NULL, NULL);
  return CTL_EXIT_OK;
}

int
ctl_cmd_attach (const struct ctl_globals *g, int argc, char **argv)
{
  const char *instance = NULL, *qmp = NULL, *role = NULL, *bus = NULL, *pos[1];
  bool print = false, shell = false;
  const struct ctl_opt opts[] = {
    { "--instance", &instance, NULL }, { "--qmp", &qmp, NULL },
    { "--role", &role, NULL }, { "--bus", &bus, NULL },
    { "--print-args", NULL, &print }, { "--shell", NULL, &shell },
    { NULL, NULL, NULL }
  };
  struct json_object *before = NULL, *after = NULL, *body;
  struct ctl_qmp *q = NULL;
  struct disk d;
  size_t n;
  int npos, r;

  if ((r = ctl_parse_opts ("attach", argc - 1, argv + 1, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("attach: missing VOLUME (usage: " USAGE_ATTACH ")");
  if (instance == NULL)
    return ctl_usage_error ("attach: missing --instance NAME, the VM to "
                            "attach the volume to (usage: " USAGE_ATTACH ")");
  if ((qmp == NULL) == !print)
    return ctl_usage_error ("attach: give either --qmp SOCKET (plug the volume "
                            "into a running QEMU) or --print-args (print the "
                            "options for a QEMU to start)");
  if (shell && !print)
    return ctl_usage_error ("attach: --shell only goes with --print-args");
  if (role == NULL)
    role = "data";
  if (strcmp (role, "data") != 0 && strcmp (role, "system") != 0)
    return ctl_usage_error ("attach: --role must be \"system\" (the disk the "
                            "instance boots from) or \"data\", not \"%s\"", role);
  if ((r = ctl_check_name ("volume", pos[0]))
      || (r = ctl_check_name ("instance", instance)))
    return r;

  if (qmp) {
    char err[CTL_QMP_ERRLEN];
    q = ctl_qmp_connect (qmp, QMP_CONNECT_MS, err, sizeof err);
    if (q == NULL) {
      ctl_error ("instance \"%s\": cannot use QMP socket %s: %s; nothing was "
                 "attached", instance, qmp, err);
      return CTL_EXIT_QEMU;
    }
  }

  /* Was it attached to this instance already (a retry)?  Then a failure
   * must not take that record away. */
  if ((r = get_volume (g, pos[0], &before)) != CTL_EXIT_OK)
    goto out;
  bool was_there = find_attachment (before, instance, &n) != NULL;

  body = json_object_new_object ();
  json_object_object_add (body, "instance", json_object_new_string (instance));
  json_object_object_add (body, "role", json_object_new_string (role));
  if ((r = post (g, pos[0], "/attach", body, &after)) != CTL_EXIT_OK)
    goto out;               /* 409: attached elsewhere; said by ctl_http */
  if (!json_object_is_type (after, json_type_object)
      || (r = disk_from_volume (g, after, &d)) != 0) {
    char outcome[256];
    if (!json_object_is_type (after, json_type_object))
      ctl_error ("blockd at %s sent an unexpected answer to attach (not a "
                 "JSON object)", g->api);
    undo_record (g, pos[0], instance, was_there, outcome, sizeof outcome);
    ctl_error ("volume \"%s\": not attached to instance \"%s\": %s", pos[0],
               instance, outcome);
    r = CTL_EXIT_SERVER;
    goto out;
  }

  if (print)
    r = print_args (g, after, &d, instance, role, bus, shell);
  else
    r = hotplug (g, q, after, &d, instance, role, bus, was_there);

 out:
  ctl_qmp_close (q);
  json_object_put (before);
  json_object_put (after);
  return r;
}

/* Parse --timeout SECS: a positive number of seconds, at most a day. */
static int
parse_timeout (const char *s, int *ms)
{
  char *end;
  errno = 0;
  double secs = strtod (s, &end);
  if (errno || end == s || *end || !(secs > 0) || secs > 86400)
    return ctl_usage_error ("detach: --timeout must be a number of seconds "
                            "between 0 and 86400, not \"%s\"", s);
  *ms = (int) (secs * 1000 + 0.5);
  if (*ms == 0)
    *ms = 1;
  return 0;
}

/* The QEMU half of detach: unplug D's device from the instance on Q and
 * remove its node.  SERVED: blockd serves the volume to more NBD clients
 * than the volume's other instances account for, so a QEMU that has
 * neither device nor node is not taken as "already unplugged" (it may be
 * the wrong socket, while the instance still has the disk).  Returns 0 or
 * CTL_EXIT_QEMU (said). */
static int
unplug (struct ctl_qmp *q, const struct disk *d, const char *instance,
        const char *role, int timeout_ms, const char *qmp, bool served)
{
  struct json_object *st = NULL, *args, *ev = NULL;
  char what[CTL_QMP_ERRLEN + 64];
  bool running = false, pending = true, no_device = false;
  int r;

  if ((r = ctl_qmp_execute (q, "query-status", NULL, QMP_COMMAND_MS, &st))) {
    ctl_error ("volume \"%s\": instance \"%s\": %s; nothing was detached",
               d->name, instance, qmp_failure (q, "query-status", r, what,
                                               sizeof what));
    return CTL_EXIT_QEMU;
  }
  struct json_object *v;
  running = json_object_object_get_ex (st, "running", &v)
    && json_object_get_boolean (v);
  json_object_put (st);
  if (strcmp (role, "system") == 0 && running) {
    ctl_error ("volume \"%s\" is the system disk of instance \"%s\", which is "
               "running: stop the instance first, or detach after it is shut "
               "down; nothing was detached", d->name, instance);
    return CTL_EXIT_QEMU;
  }

  args = json_object_new_object ();
  json_object_object_add (args, "id", json_object_new_string (d->node));
  r = ctl_qmp_execute (q, "device_del", args, QMP_COMMAND_MS, NULL);
  if (r == 1 && strcmp (ctl_qmp_error_class (q), "DeviceNotFound") == 0) {
    no_device = true;           /* said below, once the node is known */
    pending = false;
  }
  else if (r == 1 && strstr (ctl_qmp_error (q), "in the process of unplug"))
    ctl_error ("note: an earlier unplug of device %s from instance \"%s\" "
               "is still pending; waiting for the guest", d->node, instance);
  else if (r != 0) {
    ctl_error ("volume \"%s\": instance \"%s\": %s; the volume stays attached",
               d->name, instance, qmp_failure (q, "device_del", r, what,
                                               sizeof what));
    return CTL_EXIT_QEMU;
  }

  if (pending) {
    static const char *const names[] = {
      "DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR", NULL
    };
    r = ctl_qmp_wait_event (q, names, "device", d->node, timeout_ms, &ev);
    if (r == -ETIMEDOUT) {
      ctl_error ("volume \"%s\": the guest of instance \"%s\" did not release "
                 "device %s within %.3g s%s; the unplug request stays pending "
                 "and the volume stays attached: retry the detach later, or "
                 "stop the instance and detach without --qmp", d->name,
                 instance, d->node, timeout_ms / 1000.0, running ? ""
                 : " (the instance is not running, so its guest cannot answer)");
      return CTL_EXIT_QEMU;
    }
    if (r < 0) {
      ctl_error ("volume \"%s\": instance \"%s\": waiting for DEVICE_DELETED: "
                 "%s; the volume stays attached", d->name, instance,
                 ctl_qmp_error (q));
      return CTL_EXIT_QEMU;
    }
    const char *name = jstr (ev, "event");
    if (name && strcmp (name, "DEVICE_UNPLUG_GUEST_ERROR") == 0) {
      json_object_put (ev);
      ctl_error ("volume \"%s\": the guest of instance \"%s\" refused to "
                 "release device %s (DEVICE_UNPLUG_GUEST_ERROR); the volume "
                 "stays attached", d->name, instance, d->node);
      return CTL_EXIT_QEMU;
    }
    json_object_put (ev);
  }

  args = json_object_new_object ();
  json_object_object_add (args, "node-name", json_object_new_string (d->node));
  r = ctl_qmp_execute (q, "blockdev-del", args, QMP_COMMAND_MS, NULL);
  bool no_node = r == 1 && strncmp (ctl_qmp_error (q), "Failed to find node", 19) == 0;
  if (no_device && no_node && served) {
    ctl_error ("volume \"%s\": the QEMU on QMP socket %s has neither device %s "
               "nor block node %s, but blockd still serves the volume to an NBD "
               "client: is %s the QMP socket of instance \"%s\"? nothing was "
               "detached (if the instance is stopped or gone, detach without "
               "--qmp)", d->name, qmp, d->node, d->node, qmp, instance);
    return CTL_EXIT_QEMU;
  }
  if (no_device)
    ctl_error ("note: instance \"%s\" has no device %s (already unplugged); "
               "removing block node %s and the record", instance, d->node,
               d->node);
  if (no_node)
    ctl_error ("note: instance \"%s\" has no block node %s (already removed)",
               instance, d->node);
  else if (r != 0) {
    ctl_error ("volume \"%s\": instance \"%s\": device %s is unplugged but %s; "
               "the volume stays attached", d->name, instance, d->node,
               qmp_failure (q, "blockdev-del", r, what, sizeof what));
    return CTL_EXIT_QEMU;
  }
  return 0;
}

int
ctl_cmd_detach (const struct ctl_globals *g, int argc, char **argv)
{
  const char *instance = NULL, *qmp = NULL, *timeout = NULL, *pos[1];
  const struct ctl_opt opts[] = {
    { "--instance", &instance, NULL }, { "--qmp", &qmp, NULL },
    { "--timeout", &timeout, NULL }, { NULL, NULL, NULL }
  };
  struct json_object *before = NULL, *after = NULL, *att;
  struct ctl_qmp *q = NULL;
  int timeout_ms = DETACH_TIMEOUT_S * 1000, npos, r;
  char who[1024];
  size_t n;

  if ((r = ctl_parse_opts ("detach", argc - 1, argv + 1, opts, pos, 1, &npos)))
    return r;
  if (npos == 0)
    return ctl_usage_error ("detach: missing VOLUME (usage: " USAGE_DETACH ")");
  if (timeout && qmp == NULL)
    return ctl_usage_error ("detach: --timeout only goes with --qmp (without "
                            "it nothing waits for QEMU)");
  if ((timeout && (r = parse_timeout (timeout, &timeout_ms)))
      || (r = ctl_check_name ("volume", pos[0]))
      || (instance && (r = ctl_check_name ("instance", instance))))
    return r;

  if ((r = get_volume (g, pos[0], &before)) != CTL_EXIT_OK)
    goto out;
  att = find_attachment (before, instance, &n);
  const char *inst = instance ? instance : n == 1 ? jstr (att, "instance") : NULL;

  if (qmp == NULL) {
    /* Record only: blockd judges (and words the 409). */
    if ((r = post_detach (g, pos[0], inst, &after)) != CTL_EXIT_OK)
      goto out;
    if (g->json)
      ctl_print_json (after);
    else
      printf ("detached volume \"%s\"%s%s%s (recorded only: QEMU was not "
              "asked)\n", jstr (before, "name") ? jstr (before, "name") : pos[0],
              inst ? " from instance \"" : "", inst ? inst : "", inst ? "\"" : "");
    goto out;
  }

  const char *vname = jstr (before, "name") ? jstr (before, "name") : pos[0];
  if (n == 0) {
    ctl_error ("volume \"%s\" is not attached to any instance", vname);
    r = CTL_EXIT_SERVER;
    goto out;
  }
  if (att == NULL || inst == NULL) {
    if (instance)
      ctl_error ("volume \"%s\" is not attached to instance \"%s\" (it is "
                 "attached to %s)", vname, instance, ctl_attachments_text (before, false, who, sizeof who));
    else
      ctl_error ("volume \"%s\" is attached to several instances, %s: say which "
                 "with --instance", vname, ctl_attachments_text (before, false, who, sizeof who));
    r = CTL_EXIT_SERVER;
    goto out;
  }
  const char *role = jstr (att, "role") ? jstr (att, "role") : "data";

  struct disk d;
  if ((r = disk_from_volume (g, before, &d)) != 0)
    goto out;
  char err[CTL_QMP_ERRLEN];
  q = ctl_qmp_connect (qmp, QMP_CONNECT_MS, err, sizeof err);
  if (q == NULL) {
    ctl_error ("instance \"%s\": cannot use QMP socket %s: %s; nothing was "
               "detached (if the instance is stopped or gone, detach without "
               "--qmp to only record it)", inst, qmp, err);
    r = CTL_EXIT_QEMU;
    goto out;
  }
  /* Each other instance of a multi-attach volume has its connection. */
  uint64_t conns = 0;
  struct json_object *jm;
  bool multi = json_object_object_get_ex (before, "multi_attach", &jm)
    && json_object_get_boolean (jm);
  bool served = ctl_json_u64 (before, "connections", &conns)
    && conns > (multi ? n - 1 : 0);
  if ((r = unplug (q, &d, inst, role, timeout_ms, qmp, served)) != 0)
    goto out;
  if ((r = post_detach (g, pos[0], inst, &after)) != CTL_EXIT_OK) {
    ctl_error ("volume \"%s\": device %s is out of instance \"%s\", but the "
               "record is not: run \"blockctl detach %s --instance %s\"",
               d.name, d.node, inst, d.name, inst);
    goto out;
  }
  if (g->json)
    ctl_print_json (after);
  else
    printf ("detached volume \"%s\" from instance \"%s\" (device %s removed)\n",
            d.name, inst, d.node);

 out:
  ctl_qmp_close (q);
  json_object_put (before);
  json_object_put (after);
  return r;
}

void
ctl_help_attach (void)
{
  fputs ("Usage:\n"
         "  blockctl attach VOLUME --instance NAME --qmp SOCKET\n"
         "                  [--role system|data] [--bus BUS]\n"
         "  blockctl attach VOLUME --instance NAME --print-args [--shell]\n"
         "                  [--role system|data] [--bus BUS]\n"
         "  blockctl detach VOLUME [--instance NAME] [--qmp SOCKET\n"
         "                  [--timeout SECS]]\n"
         "\n"
         "attach records in blockd that VOLUME (a name or id) is a disk of\n"
         "instance NAME, a VM.  The record is the reservation: a volume that\n"
         "is attached to another instance is refused (unless it was created\n"
         "--multi-attach), and an attached volume cannot be deleted.  Then:\n"
         "  --qmp SOCKET   plug it into the running QEMU whose QMP monitor is\n"
         "                 the unix socket SOCKET (-qmp unix:SOCKET,server=on,\n"
         "                 wait=off): blockdev-add of an nbd node connected to\n"
         "                 blockd, then device_add of a virtio-blk-pci device\n"
         "                 on it.  If QEMU refuses either, what was done is\n"
         "                 undone, the record too.\n"
         "  --print-args   print the -blockdev and -device options that give a\n"
         "                 QEMU about to be started the disk, one option and\n"
         "                 its value a line; with --shell on one line, quoted\n"
         "                 for a POSIX shell: eval \"set -- $(blockctl ...)\".\n"
         "  --role ROLE    \"data\" (the default) or \"system\", the disk the\n"
         "                 instance boots from (bootindex=1)\n"
         "  --bus BUS      the PCI bus for the device (e.g. a pcie-root-port\n"
         "                 on q35, whose root bus takes no hot-plug)\n"
         "\n"
         "The node-name and device id are \"blockd-VOLUME\" (\"blockd_\" and 24\n"
         "hex digits of the volume's id when the name is too long for QEMU's 31\n"
         "characters).  The serial is the first 20 characters of the volume's\n"
         "id (virtio-blk holds 20 bytes), so the guest finds the disk as\n"
         "/dev/disk/by-id/virtio-<first 20 characters of the id>.\n"
         "\n"
         "detach takes the volume off instance NAME (which may be left out\n"
         "when it is attached to one instance only):\n"
         "  --qmp SOCKET   unplug it from the running QEMU first: device_del,\n"
         "                 wait for the guest to release the device\n"
         "                 (DEVICE_DELETED), blockdev-del, then the record.  A\n"
         "                 system disk is refused while the VM runs.\n"
         "  --timeout SECS how long to wait for the guest (default 30); when\n"
         "                 it does not answer, the volume stays attached.\n"
         "  without --qmp  only the record is removed: use it when the\n"
         "                 instance is stopped or gone.\n"
         "\n"
         "Exit status: 0 done, 1 blockd refused or failed, 2 usage error,\n"
         "3 blockd cannot be reached, 4 QEMU refused, failed or could not be\n"
         "reached, or the guest did not release the device.\n"
         "\n"
         "Global options: --api URL, --json (see blockctl --help).\n", stdout);
}
