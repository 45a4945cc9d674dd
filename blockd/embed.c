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
  atomic_fetch_add (&blk_nconns, 1);
  blk_loop_post_fd (&blk_loops[0], fd);
}
