/* volume/attach.c — which instances a volume is attached to.
 *
 * An attachment is a record, not a connection: blockd does not see the VM,
 * only the caller that attaches the disk to it (blockctl over QMP, or an
 * orchestrator).  The record is what keeps a disk on one VM at a time (a
 * second instance is refused unless the volume is multi-attach) and what
 * keeps an attached disk from being deleted.  It is part of the volume's
 * "V" record, so it is written, recovered and deleted with the volume.
 */
#include "volume/internal.h"

#include <errno.h>
#include <json-c/json.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

const char *
vol_role_name (enum vol_role r)
{
  return r == VOL_ROLE_SYSTEM ? "system" : "data";
}

int
vol_role_parse (const char *s, enum vol_role *out)
{
  if (strcmp (s, "data") == 0)
    *out = VOL_ROLE_DATA;
  else if (strcmp (s, "system") == 0)
    *out = VOL_ROLE_SYSTEM;
  else
    return -EINVAL;
  return 0;
}

/* Add v's attachment fields to its record o. */
void
attach_to_json (const struct volume *v, json_object *o)
{
  json_object_object_add (o, "multi_attach", json_object_new_boolean (v->multi_attach));
  json_object *arr = json_object_new_array ();
  for (unsigned i = 0; i < v->nattach; i++) {
    json_object *a = json_object_new_object ();
    json_object_object_add (a, "instance", json_object_new_string (v->attach[i].instance));
    json_object_object_add (a, "role", json_object_new_string (vol_role_name (v->attach[i].role)));
    json_object_object_add (a, "since", json_object_new_int64 (v->attach[i].since));
    json_object_array_add (arr, a);
  }
  json_object_object_add (o, "attachments", arr);
}

/* Read them back from a record (absent in records older than attachments:
 * not attached).  Returns the number of attachments that were invalid and
 * dropped. */
int
attach_from_json (struct volume *v, json_object *o)
{
  json_object *x, *arr;
  int bad = 0;
  v->multi_attach = json_object_object_get_ex (o, "multi_attach", &x) && json_object_get_boolean (x);
  v->nattach = 0;
  if (!json_object_object_get_ex (o, "attachments", &arr) || !json_object_is_type (arr, json_type_array))
    return 0;
  for (size_t i = 0; i < json_object_array_length (arr); i++) {
    json_object *a = json_object_array_get_idx (arr, i), *ji, *jr, *js;
    enum vol_role role;
    if (v->nattach == VOL_ATTACH_MAX
        || !json_object_object_get_ex (a, "instance", &ji) || !json_object_object_get_ex (a, "role", &jr)
        || !json_object_is_type (ji, json_type_string) || !json_object_is_type (jr, json_type_string)
        || vol_name_invalid (json_object_get_string (ji)) != NULL
        || vol_role_parse (json_object_get_string (jr), &role) < 0) {
      bad++;
      continue;
    }
    struct vol_attachment *at = &v->attach[v->nattach++];
    snprintf (at->instance, sizeof at->instance, "%s", json_object_get_string (ji));
    at->role = role;
    at->since = json_object_object_get_ex (a, "since", &js) ? json_object_get_int64 (js) : 0;
  }
  return bad;
}

static int
attach_find (const struct volume *v, const char *instance)
{
  for (unsigned i = 0; i < v->nattach; i++)
    if (strcmp (v->attach[i].instance, instance) == 0)
      return (int) i;
  return -1;
}

/* Who holds v, for a message: "instance vm1 (system)" or "instances a, b". */
static void
holders (const struct volume *v, char *out, size_t len)
{
  size_t n = (size_t) snprintf (out, len, "instance%s ", v->nattach == 1 ? "" : "s");
  for (unsigned i = 0; i < v->nattach && n < len; i++)
    n += (size_t) snprintf (out + n, len - n, "%s%s (%s)", i ? ", " : "", v->attach[i].instance,
                            vol_role_name (v->attach[i].role));
}

/* Write v's record with its new attachments and sync the metadata log (not
 * the pool: an attachment is metadata only, and a pool fdatasync under
 * st->lock would stall every management call behind the data being
 * written); on failure put the old ones back.  Caller holds st->lock. */
static int
attach_commit (struct volume *v, const struct vol_attachment *old, unsigned nold,
               char *err, size_t errlen)
{
  int r = meta_put_volume (v, NULL);
  if (r == 0)
    r = meta_log_sync (v->st);
  if (r < 0) {
    memcpy (v->attach, old, nold * sizeof *old);
    v->nattach = nold;
    meta_put_volume (v, NULL);     /* best effort: the new record may be in the log */
    set_err (err, errlen, "volume \"%s\": could not record the attachment (metadata store: %s)",
             v->name, strerror (-r));
  }
  return r;
}

int
vol_attach (struct vol_store *st, const char *name_or_id, const char *instance,
            enum vol_role role, struct vol_info *out, char *err, size_t errlen)
{
  const char *why;
  if ((why = vol_name_invalid (instance)) != NULL) {
    set_err (err, errlen, "instance name \"%.80s\" %s", instance, why);
    return -EINVAL;
  }
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  int r = 0, i;
  char who[VOL_ATTACH_MAX * (VOL_NAME_MAX + 12) + 16];
  if (v == NULL)
    r = -ENOENT;
  else if ((i = attach_find (v, instance)) >= 0) {
    if (v->attach[i].role != role) {
      set_err (err, errlen, "volume \"%s\" is already attached to instance %s as its %s disk; "
               "detach it first to attach it as a %s disk", v->name, instance,
               vol_role_name (v->attach[i].role), vol_role_name (role));
      r = -EBUSY;
    }
  }
  else if (v->nattach && !v->multi_attach) {
    holders (v, who, sizeof who);
    set_err (err, errlen, "volume \"%s\" is attached to %s; detach it there first "
             "(only a volume created multi-attach can be attached to several instances)",
             v->name, who);
    r = -EBUSY;
  }
  else if (v->nattach && (role == VOL_ROLE_SYSTEM || v->attach[0].role == VOL_ROLE_SYSTEM)) {
    /* two instances booting one filesystem would corrupt it */
    holders (v, who, sizeof who);
    set_err (err, errlen, "volume \"%s\" is attached to %s; a system disk belongs to one "
             "instance at a time, even when the volume is multi-attach", v->name, who);
    r = -EBUSY;
  }
  else if (v->nattach == VOL_ATTACH_MAX) {
    set_err (err, errlen, "volume \"%s\" is already attached to %d instances, the most a "
             "multi-attach volume can have", v->name, VOL_ATTACH_MAX);
    r = -EBUSY;
  }
  else {
    struct vol_attachment old[VOL_ATTACH_MAX];
    unsigned nold = v->nattach;
    memcpy (old, v->attach, sizeof old);
    struct vol_attachment *at = &v->attach[v->nattach++];
    snprintf (at->instance, sizeof at->instance, "%s", instance);
    at->role = role;
    at->since = time (NULL);
    if ((r = attach_commit (v, old, nold, err, errlen)) == 0)
      log_info ("attached volume %s to instance %s (%s disk)", v->name, instance, vol_role_name (role));
  }
  if (r == 0 && out)
    fill_info (v, out);
  pthread_mutex_unlock (&st->lock);
  return r;
}

int
vol_detach (struct vol_store *st, const char *name_or_id, const char *instance,
            struct vol_info *out, char *err, size_t errlen)
{
  pthread_mutex_lock (&st->lock);
  struct volume *v = find_volume_or_err (st, name_or_id, err, errlen);
  int r = 0, i = -1;
  char who[VOL_ATTACH_MAX * (VOL_NAME_MAX + 12) + 16];
  if (v == NULL)
    r = -ENOENT;
  else if (v->nattach == 0) {
    set_err (err, errlen, "volume \"%s\" is not attached to any instance", v->name);
    r = -EBUSY;
  }
  else if (instance == NULL && v->nattach > 1) {
    holders (v, who, sizeof who);
    set_err (err, errlen, "volume \"%s\" is attached to %s; say which instance to detach it from",
             v->name, who);
    r = -EBUSY;
  }
  else if ((i = instance ? attach_find (v, instance) : 0) < 0) {
    holders (v, who, sizeof who);
    set_err (err, errlen, "volume \"%s\" is not attached to instance %.80s (it is attached to %s)",
             v->name, instance, who);
    r = -EBUSY;
  }
  else {
    struct vol_attachment old[VOL_ATTACH_MAX];
    unsigned nold = v->nattach;
    memcpy (old, v->attach, sizeof old);
    char was[VOL_NAME_MAX + 1];
    memcpy (was, v->attach[i].instance, sizeof was);
    memmove (&v->attach[i], &v->attach[i + 1], (v->nattach - (unsigned) i - 1) * sizeof *v->attach);
    v->nattach--;
    if ((r = attach_commit (v, old, nold, err, errlen)) == 0)
      log_info ("detached volume %s from instance %s", v->name, was);
  }
  if (r == 0 && out)
    fill_info (v, out);
  pthread_mutex_unlock (&st->lock);
  return r;
}
