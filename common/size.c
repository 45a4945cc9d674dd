/* common/size.c — parse and format sizes with binary suffixes. */
#include "common/size.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int
suffix_shift (const char *p, unsigned *shift)
{
  static const char units[] = "KMGTPE";
  if (*p == '\0') { *shift = 0; return 0; }
  const char *u = strchr (units, toupper ((unsigned char) *p));
  if (u == NULL || *p == '\0') {
    if (toupper ((unsigned char) p[0]) == 'B' && p[1] == '\0') { *shift = 0; return 0; }
    return -EINVAL;
  }
  *shift = 10 * (unsigned) (u - units + 1);
  p++;
  if (*p == '\0' || strcasecmp (p, "B") == 0 || strcasecmp (p, "iB") == 0)
    return 0;
  return -EINVAL;
}

int
size_parse (const char *s, uint64_t *out)
{
  if (s == NULL)
    return -EINVAL;
  if (!isdigit ((unsigned char) *s))
    return -EINVAL;               /* empty, negative, "+1", ".5" */

  uint64_t whole = 0;
  const char *p = s;
  for (; isdigit ((unsigned char) *p); p++) {
    unsigned d = (unsigned) (*p - '0');
    if (whole > (UINT64_MAX - d) / 10)
      return -ERANGE;
    whole = whole * 10 + d;
  }
  /* optional fraction, only meaningful with a suffix */
  uint64_t frac_num = 0, frac_den = 1;
  if (*p == '.') {
    p++;
    if (!isdigit ((unsigned char) *p))
      return -EINVAL;
    for (; isdigit ((unsigned char) *p); p++) {
      if (frac_den < 1000000000000ULL) {
        frac_num = frac_num * 10 + (unsigned) (*p - '0');
        frac_den *= 10;
      }
    }
  }
  unsigned shift;
  if (suffix_shift (p, &shift) < 0)
    return -EINVAL;
  if (frac_num != 0 && shift == 0)
    return -EINVAL;               /* "1.5" bytes */
  if (shift >= 64 || (shift > 0 && whole > (UINT64_MAX >> shift)))
    return -ERANGE;
  uint64_t v = whole << shift;
  if (frac_num) {
    /* frac_num / frac_den * 2^shift, without overflow for shift <= 60 */
    unsigned __int128 f = ((unsigned __int128) frac_num << shift) / frac_den;
    if (v > UINT64_MAX - (uint64_t) f)
      return -ERANGE;
    v += (uint64_t) f;
  }
  *out = v;
  return 0;
}

char *
size_format (uint64_t bytes, char *buf, size_t len)
{
  static const char units[] = "KMGTPE";
  if (bytes < 1024) {
    snprintf (buf, len, "%llu", (unsigned long long) bytes);
    return buf;
  }
  /* Whole units and one decimal, truncated (never rounded up), so that
   * what is printed parses back to at most the value. */
  int i = 0;
  while (i < 5 && (bytes >> (10 * (i + 2))) != 0)
    i++;
  unsigned shift = 10 * (unsigned) (i + 1);
  uint64_t whole = bytes >> shift;
  uint64_t rest = bytes & ((1ULL << shift) - 1);
  unsigned tenth = (unsigned) (((unsigned __int128) rest * 10) >> shift);
  if (rest == 0)
    snprintf (buf, len, "%llu%c", (unsigned long long) whole, units[i]);
  else
    snprintf (buf, len, "%llu.%u%c", (unsigned long long) whole, tenth, units[i]);
  return buf;
}
