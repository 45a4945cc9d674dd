/* tests/unit/test-common.c — sizes and logging helpers shared by blockd and
 * blockctl (common/).  size_parse is a table, one row per rule. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/log.h"
#include "common/size.h"

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define TiB (1ULL << 40)
#define PiB (1ULL << 50)
#define EiB (1ULL << 60)

struct parse_case {
  const char *in;
  int ret;
  uint64_t val;
};

static const struct parse_case parse_cases[] = {
  /* plain numbers */
  { "0", 0, 0 },
  { "1", 0, 1 },
  { "512", 0, 512 },
  { "007", 0, 7 },
  { " 7", -EINVAL, 0 },         /* sizes have no spaces */
  { "1 G", -EINVAL, 0 },
  { "1G ", -EINVAL, 0 },
  { "\t 4096", -EINVAL, 0 },
  { "18446744073709551615", 0, UINT64_MAX },
  /* binary suffixes, any case */
  { "4K", 0, 4 * KiB },
  { "4k", 0, 4 * KiB },
  { "1M", 0, MiB },
  { "10G", 0, 10 * GiB },
  { "10g", 0, 10 * GiB },
  { "2T", 0, 2 * TiB },
  { "3P", 0, 3 * PiB },
  { "1E", 0, EiB },
  { "15E", 0, 15 * EiB },
  { "0K", 0, 0 },
  { "17179869183G", 0, UINT64_MAX - GiB + 1 },
  /* optional B / iB */
  { "4KiB", 0, 4 * KiB },
  { "4KB", 0, 4 * KiB },
  { "4kb", 0, 4 * KiB },
  { "4kib", 0, 4 * KiB },
  { "10GiB", 0, 10 * GiB },
  { "100B", 0, 100 },
  { "100b", 0, 100 },
  /* fractions with a suffix */
  { "1.5G", 0, GiB + GiB / 2 },
  { "1.5K", 0, 1536 },
  { "0.5K", 0, 512 },
  { "2.25M", 0, 2 * MiB + MiB / 4 },
  { "1.5E", 0, EiB + EiB / 2 },
  { "15.5E", 0, 15 * EiB + EiB / 2 },
  /* garbage */
  { "", -EINVAL, 0 },
  { "   ", -EINVAL, 0 },
  { "-1", -EINVAL, 0 },
  { "+1", -EINVAL, 0 },
  { "abc", -EINVAL, 0 },
  { "K", -EINVAL, 0 },
  { "10X", -EINVAL, 0 },
  { "10KX", -EINVAL, 0 },
  { "10KK", -EINVAL, 0 },
  { "10KiBs", -EINVAL, 0 },
  { "10iB", -EINVAL, 0 },
  { "1.5", -EINVAL, 0 },        /* a fraction of a byte */
  { "1.5B", -EINVAL, 0 },
  { ".5K", -EINVAL, 0 },
  { "1.K", -EINVAL, 0 },
  { "1..5K", -EINVAL, 0 },
  { "0x10", -EINVAL, 0 },
  { "1,5G", -EINVAL, 0 },
  /* too large */
  { "18446744073709551616", -ERANGE, 0 },
  { "99999999999999999999999", -ERANGE, 0 },
  { "16E", -ERANGE, 0 },
  { "16.0E", -ERANGE, 0 },
  { "17179869184G", -ERANGE, 0 },
  { "16384P", -ERANGE, 0 },
};

Test (size, parse_table)
{
  for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
    const struct parse_case *c = &parse_cases[i];
    uint64_t v = 0xdeadbeef;
    int r = size_parse (c->in, &v);
    cr_expect_eq (r, c->ret, "size_parse(\"%s\") returned %d, expected %d", c->in, r, c->ret);
    if (c->ret == 0 && r == 0)
      cr_expect_eq (v, c->val, "size_parse(\"%s\") = %llu, expected %llu", c->in,
                    (unsigned long long) v, (unsigned long long) c->val);
  }
}

Test (size, parse_null)
{
  uint64_t v;
  cr_expect_eq (size_parse (NULL, &v), -EINVAL);
}

/* Exact values format to the shortest string and parse back to themselves. */
Test (size, format_exact)
{
  static const struct { uint64_t v; const char *s; } cases[] = {
    { 0, "0" }, { 1, "1" }, { 512, "512" }, { 1023, "1023" },
    { KiB, "1K" }, { 1536, "1.5K" }, { 4 * KiB, "4K" }, { MiB, "1M" },
    { MiB + MiB / 2, "1.5M" }, { 10 * GiB, "10G" }, { 2 * TiB, "2T" },
    { 256 * TiB, "256T" }, { PiB, "1P" }, { EiB, "1E" }, { 15 * EiB, "15E" },
    { 1023 * KiB, "1023K" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[32];
    cr_expect_str_eq (size_format (cases[i].v, buf, sizeof buf), cases[i].s,
                      "size_format(%llu)", (unsigned long long) cases[i].v);
    uint64_t back = 0;
    cr_expect_eq (size_parse (buf, &back), 0, "size_parse(\"%s\")", buf);
    cr_expect_eq (back, cases[i].v, "\"%s\" parsed back as %llu, expected %llu", buf,
                  (unsigned long long) back, (unsigned long long) cases[i].v);
  }
}

/* Whatever size_format prints must parse again, to within its rounding. */
Test (size, format_round_trip)
{
  uint64_t vals[400];
  size_t n = 0;
  for (unsigned s = 0; s < 64; s++) {
    uint64_t p = 1ULL << s;
    vals[n++] = p;
    vals[n++] = p - 1;
    vals[n++] = p + p / 3;
    vals[n++] = p + p / 2;
    vals[n++] = p | (p >> 1) | (p >> 7);
  }
  vals[n++] = 123456789;
  vals[n++] = 10 * GiB + 1;
  vals[n++] = UINT64_MAX;
  vals[n++] = UINT64_MAX - EiB / 100;
  for (size_t i = 0; i < n; i++) {
    char buf[32];
    size_format (vals[i], buf, sizeof buf);
    uint64_t back = 0;
    int r = size_parse (buf, &back);
    cr_expect_eq (r, 0, "size_format(%llu) = \"%s\", which size_parse refuses (%d)",
                  (unsigned long long) vals[i], buf, r);
    if (r != 0)
      continue;
    /* one decimal of the unit: within 5% (exact below 1K) */
    long double err = (long double) back - (long double) vals[i];
    if (err < 0) err = -err;
    if (vals[i] < 1024)
      cr_expect_eq (back, vals[i], "\"%s\"", buf);
    else
      cr_expect (err <= (long double) vals[i] * 0.05L, "%llu -> \"%s\" -> %llu",
                 (unsigned long long) vals[i], buf, (unsigned long long) back);
  }
}

Test (size, format_small_buffer)
{
  char buf[4];
  size_format (10 * GiB + GiB / 2, buf, sizeof buf);   /* "10.5G" truncated, terminated */
  cr_expect_eq (strlen (buf), 3);
  cr_expect_eq (strncmp (buf, "10.", 3), 0);
}

/* ---- log ------------------------------------------------------------------- */

Test (log, set_level)
{
  enum log_level saved = log_level;
  cr_expect_eq (log_set_level ("debug"), 0);
  cr_expect_eq (log_level, LOG_DEBUG);
  cr_expect_eq (log_set_level ("error"), 0);
  cr_expect_eq (log_level, LOG_ERROR);
  cr_expect_eq (log_set_level ("warn"), 0);
  cr_expect_eq (log_level, LOG_WARN);
  cr_expect_eq (log_set_level ("info"), 0);
  cr_expect_eq (log_level, LOG_INFO);
  cr_expect_eq (log_set_level ("verbose"), -EINVAL);
  cr_expect_eq (log_set_level (""), -EINVAL);
  cr_expect_eq (log_set_level ("INFO"), -EINVAL);
  cr_expect_eq (log_level, LOG_INFO, "a refused level changed the level");
  log_level = saved;
}

Test (log, ratelimit)
{
  struct log_ratelimit rl = { 0 };
  uint64_t sup = 99;
  cr_expect_eq (log_ratelimit_ok (&rl, &sup), 1);
  cr_expect_eq (sup, 0);
  for (int i = 0; i < 5; i++)
    cr_expect_eq (log_ratelimit_ok (&rl, &sup), 0);
  /* pretend the interval passed: the next message reports the 5 suppressed */
  atomic_store (&rl.next_ns, 0);
  cr_expect_eq (log_ratelimit_ok (&rl, &sup), 1);
  cr_expect_eq (sup, 5);
}
