/* volume/fault.c — test-only fault injection: pool I/O fails, or is
 * delayed, on demand. */
#include "volume/internal.h"

#include <errno.h>
#include <string.h>

atomic_bool vol_faults_armed;

static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  char name[VOL_NAME_MAX + 1];   /* "" = any volume */
  enum vol_op op;
  int err;
  unsigned delay_ms;             /* a delay, not an error */
  unsigned count;
} fault;

/* Set the one fault: all of it under the lock, so that no pool operation
 * sees half of it. */
static int
fault_arm (const char *name, enum vol_op op, int err, unsigned delay_ms, unsigned count)
{
  if (name && strlen (name) > VOL_NAME_MAX)
    return -EINVAL;
  if (count && (op == VOL_OP_FLUSH || (delay_ms == 0 && err <= 0)))
    return -EINVAL;
  pthread_mutex_lock (&fault_lock);
  snprintf (fault.name, sizeof fault.name, "%s", name ? name : "");
  fault.op = op;
  fault.err = err;
  fault.delay_ms = delay_ms;
  fault.count = count;
  atomic_store (&vol_faults_armed, count > 0);
  pthread_mutex_unlock (&fault_lock);
  return 0;
}

int
vol_fault_set (const char *name, enum vol_op op, int err, unsigned count)
{
  return fault_arm (name, op, err, 0, count);
}

int
vol_fault_delay (const char *name, enum vol_op op, unsigned ms, unsigned count)
{
  if (ms == 0 || ms > 10000 || op == VOL_OP_FLUSH)
    return -EINVAL;
  return fault_arm (name, op, 0, ms, count);
}

/* Does this fault apply to a pool operation op of io's volume?  Takes one
 * of count if so.  Under fault_lock. */
static bool
fault_take (struct vol_io *io, enum vol_op op)
{
  if (fault.count == 0 || fault.op != op
      || (fault.name[0] && strcmp (fault.name, io->vol->name) != 0))
    return false;
  if (--fault.count == 0)
    atomic_store (&vol_faults_armed, false);
  return true;
}

/* Called for each pool operation submitted while faults are armed: the
 * milliseconds it waits before it starts, or 0. */
unsigned
fault_delay (struct vol_io *io, enum vol_op op)
{
  pthread_mutex_lock (&fault_lock);
  unsigned ms = fault.delay_ms && fault_take (io, op) ? fault.delay_ms : 0;
  pthread_mutex_unlock (&fault_lock);
  return ms;
}

/* Called for each completed pool operation while faults are armed. */
int
fault_apply (struct vol_io *io, enum vol_op op, int res)
{
  pthread_mutex_lock (&fault_lock);
  if (fault.delay_ms == 0 && res >= 0 && fault_take (io, op))
    res = -fault.err;
  pthread_mutex_unlock (&fault_lock);
  return res;
}
