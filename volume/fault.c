/* volume/fault.c — test-only fault injection: pool I/O fails on demand. */
#include "volume/internal.h"

#include <errno.h>
#include <string.h>

atomic_bool vol_faults_armed;

static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  char name[VOL_NAME_MAX + 1];   /* "" = any volume */
  enum vol_op op;
  int err;
  unsigned count;
} fault;

int
vol_fault_set (const char *name, enum vol_op op, int err, unsigned count)
{
  if (name && strlen (name) > VOL_NAME_MAX)
    return -EINVAL;
  if (count && (err <= 0 || op == VOL_OP_FLUSH))
    return -EINVAL;
  pthread_mutex_lock (&fault_lock);
  snprintf (fault.name, sizeof fault.name, "%s", name ? name : "");
  fault.op = op;
  fault.err = err;
  fault.count = count;
  atomic_store (&vol_faults_armed, count > 0);
  pthread_mutex_unlock (&fault_lock);
  return 0;
}

/* Called for each completed pool operation while faults are armed. */
int
fault_apply (struct vol_io *io, enum vol_op op, int res)
{
  pthread_mutex_lock (&fault_lock);
  if (fault.count && fault.op == op && res >= 0
      && (fault.name[0] == '\0' || strcmp (fault.name, io->vol->name) == 0)) {
    res = -fault.err;
    if (--fault.count == 0)
      atomic_store (&vol_faults_armed, false);
  }
  pthread_mutex_unlock (&fault_lock);
  return res;
}
