/* common/log.h — leveled logging to stderr.
 * A debug call costs one predictable branch when debug is off.
 * log_ratelimited() keeps I/O-path errors to one line per interval per site. */
#ifndef BLOCKD_LOG_H
#define BLOCKD_LOG_H

#include <stdatomic.h>
#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern enum log_level log_level;
extern const char *log_prog;

void log_msg (enum log_level lvl, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
/* Parse "error", "warn", "info", "debug".  Returns 0 or -EINVAL. */
int log_set_level (const char *name);

#define log_error(...) log_msg (LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg (LOG_WARN, __VA_ARGS__)
#define log_info(...)  do { if (log_level >= LOG_INFO) log_msg (LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (__builtin_expect (log_level >= LOG_DEBUG, 0)) \
                              log_msg (LOG_DEBUG, __VA_ARGS__); } while (0)

/* One state per call site; prints at most one message per interval and
 * says how many were suppressed. */
struct log_ratelimit { _Atomic int64_t next_ns; _Atomic uint64_t suppressed; };
int log_ratelimit_ok (struct log_ratelimit *rl, uint64_t *suppressed);
#define log_error_ratelimited(...) do {                                     \
    static struct log_ratelimit rl_;                                       \
    uint64_t sup_;                                                         \
    if (log_ratelimit_ok (&rl_, &sup_)) {                                  \
      log_msg (LOG_ERROR, __VA_ARGS__);                                    \
      if (sup_) log_msg (LOG_ERROR, "(%llu similar messages suppressed)",  \
                         (unsigned long long) sup_);                       \
    }                                                                      \
  } while (0)

#endif
