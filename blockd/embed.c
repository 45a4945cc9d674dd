/* blockd/embed.c — run the daemon inside another program (fuzzers).
 *
 * A fuzzer links every daemon object except main.c, opens a store, starts
 * the loops without listeners and hands them one end of a socketpair per
 * input; everything the peer sends then goes through the same code as a
 * connection that loop 0 accepted.
 */
#include "blockd/internal.h"

#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"

/* As on_accept does for an accepted socket, minus the max-connections
 * check: counted in blk_nconns, then put in loop 0's inbox (the loop owns
 * fd from here and closes it).  Any thread; the loops must be running. */
void
blk_loop_adopt (int fd)
{
  struct blk_loop *l = &blk_loops[0];
  atomic_fetch_add (&blk_nconns, 1);
  pthread_mutex_lock (&l->inbox_lock);
  if (l->ninbox_fds == l->capinbox_fds) {
    size_t cap = l->capinbox_fds ? 2 * l->capinbox_fds : 16;
    int *n = realloc (l->inbox_fds, cap * sizeof *n);
    if (n == NULL) {
      pthread_mutex_unlock (&l->inbox_lock);
      log_error ("out of memory handing over a connection");
      close (fd);
      atomic_fetch_sub (&blk_nconns, 1);
      return;
    }
    l->inbox_fds = n;
    l->capinbox_fds = cap;
  }
  l->inbox_fds[l->ninbox_fds++] = fd;
  pthread_mutex_unlock (&l->inbox_lock);
  blk_loop_wake (l);
}
