/* common/log.c — leveled logging to stderr. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum log_level log_level = LOG_INFO;
const char *log_prog = "blockd";

static const char *const names[] = { "error", "warn", "info", "debug" };

void
log_msg (enum log_level lvl, const char *fmt, ...)
{
  char line[1024];
  struct timespec ts;
  struct tm tm;
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  int n = snprintf (line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_prog, names[lvl]);
  va_list ap;
  va_start (ap, fmt);
  if (n > 0 && (size_t) n < sizeof line)
    n += vsnprintf (line + n, sizeof line - (size_t) n, fmt, ap);
  va_end (ap);
  if (n >= (int) sizeof line - 1) n = sizeof line - 2;
  line[n++] = '\n';
  fwrite (line, 1, (size_t) n, stderr);   /* one write: lines from threads do not mix */
}

int
log_set_level (const char *name)
{
  for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp (name, names[i]) == 0) { log_level = (enum log_level) i; return 0; }
  return -EINVAL;
}

int
log_ratelimit_ok (struct log_ratelimit *rl, uint64_t *suppressed)
{
  const int64_t interval = 5LL * 1000000000LL;
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  int64_t now = ts.tv_sec * 1000000000LL + ts.tv_nsec;
  int64_t next = atomic_load (&rl->next_ns);
  if (now >= next && atomic_compare_exchange_strong (&rl->next_ns, &next, now + interval)) {
    *suppressed = atomic_exchange (&rl->suppressed, 0);
    return 1;
  }
  atomic_fetch_add (&rl->suppressed, 1);
  return 0;
}
