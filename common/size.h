/* common/size.h — sizes with binary suffixes, shared by blockd and blockctl. */
#ifndef BLOCKD_SIZE_H
#define BLOCKD_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parse "512", "4K", "10G", "2T", "1.5G" (binary units: K=1024; an optional
 * trailing "B" or "iB" is accepted, case-insensitive).  Returns 0 and sets
 * *out, or -EINVAL (garbage, negative, empty) or -ERANGE (>= 2^64). */
int size_parse (const char *s, uint64_t *out);

/* Format bytes as a short human string ("10G", "1.5M", "512").  Returns buf. */
char *size_format (uint64_t bytes, char *buf, size_t len);

#endif
