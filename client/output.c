/* client/output.c — how blockctl shows blockd's answers: pretty JSON for
 * --json, otherwise "key: value" lines for one object and an aligned table
 * for a list.  Missing fields show as "-", so a newer or older server does
 * not make blockctl fail after the request was done. */
#include "client/blockctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/size.h"

void
ctl_print_json (struct json_object *obj)
{
  puts (json_object_to_json_string_ext (obj, JSON_C_TO_STRING_PRETTY
                                        | JSON_C_TO_STRING_SPACED
                                        | JSON_C_TO_STRING_NOSLASHESCAPE));
}

bool
ctl_json_u64 (struct json_object *obj, const char *key, uint64_t *out)
{
  struct json_object *v;

  if (obj == NULL || !json_object_object_get_ex (obj, key, &v)
      || !json_object_is_type (v, json_type_int)
      || json_object_get_int64 (v) < 0)
    return false;
  *out = json_object_get_uint64 (v);
  return true;
}

/* Copy S into BUF (LEN > 0) with control characters replaced by '?', so
 * that whatever the server sends stays on its line and in its column. */
static const char *
clean (const char *s, char *buf, size_t len)
{
  size_t i = 0;
  for (; s[i] && i + 1 < len; i++)
    buf[i] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
  buf[i] = '\0';
  return buf;
}

/* Member KEY of OBJ as text ("-" when missing or null), cleaned into BUF. */
static const char *
field (struct json_object *obj, const char *key, char *buf, size_t len)
{
  struct json_object *v;

  if (obj == NULL || !json_object_object_get_ex (obj, key, &v) || v == NULL)
    return "-";
  return clean (json_object_get_string (v), buf, len);
}

/* A size member as "10G (10737418240 bytes)"; FULL false gives "10G". */
static const char *
size_field (struct json_object *obj, const char *key, bool full,
            char *buf, size_t len)
{
  uint64_t n;
  char human[32];

  if (!ctl_json_u64 (obj, key, &n))
    return field (obj, key, buf, len);
  size_format (n, human, sizeof human);
  if (full)
    snprintf (buf, len, "%s (%llu bytes)", human, (unsigned long long) n);
  else
    snprintf (buf, len, "%s", human);
  return buf;
}

static void
print_kv (const char *key, const char *value)
{
  printf ("%s: %s\n", key, value);
}

void
ctl_print_volume (struct json_object *vol)
{
  static const char *const plain_before[] = { "id", "name", NULL };
  static const char *const plain_after[] = {
    "type", "status", "connections", "created", "nbd_uri", NULL
  };
  char buf[1024];

  for (int i = 0; plain_before[i]; i++)
    print_kv (plain_before[i], field (vol, plain_before[i], buf, sizeof buf));
  print_kv ("size", size_field (vol, "size", true, buf, sizeof buf));
  print_kv ("allocated", size_field (vol, "allocated", true, buf, sizeof buf));
  for (int i = 0; plain_after[i]; i++)
    print_kv (plain_after[i], field (vol, plain_after[i], buf, sizeof buf));
}

void
ctl_print_pool (struct json_object *pool)
{
  static const char *const sizes[] = {
    "capacity", "allocated", "free", "chunk_size", NULL
  };
  char buf[1024];

  for (int i = 0; sizes[i]; i++)
    print_kv (sizes[i], size_field (pool, sizes[i], true, buf, sizeof buf));
  print_kv ("volumes", field (pool, "volumes", buf, sizeof buf));
  print_kv ("data_dir", field (pool, "data_dir", buf, sizeof buf));
}

enum { COL_NAME, COL_ID, COL_SIZE, COL_ALLOC, COL_TYPE, COL_STATUS,
       COL_CREATED, NCOLS };

static const char *const col_header[NCOLS] = {
  "NAME", "ID", "SIZE", "ALLOCATED", "TYPE", "STATUS", "CREATED"
};

/* Fill the NCOLS cells of one row from VOL (malloc'd strings). */
static void
row_cells (struct json_object *vol, char **cells)
{
  static const char *const key[NCOLS] = {
    "name", "id", "size", "allocated", "type", "status", "created"
  };
  char buf[1024];

  for (int c = 0; c < NCOLS; c++) {
    const char *s;
    if (c == COL_SIZE || c == COL_ALLOC)
      s = size_field (vol, key[c], false, buf, sizeof buf);
    else
      s = field (vol, key[c], buf, sizeof buf);
    cells[c] = strdup (s);
  }
}

int
ctl_print_volume_table (struct json_object *vols)
{
  size_t n = json_object_array_length (vols);
  char **cells = calloc ((n + 1) * NCOLS, sizeof *cells);
  size_t width[NCOLS];

  if (cells == NULL) {
    ctl_error ("out of memory");
    return CTL_EXIT_SERVER;
  }
  for (int c = 0; c < NCOLS; c++)
    cells[c] = strdup (col_header[c]);
  for (size_t r = 0; r < n; r++)
    row_cells (json_object_array_get_idx (vols, r), cells + (r + 1) * NCOLS);

  for (int c = 0; c < NCOLS; c++) {
    width[c] = 0;
    for (size_t r = 0; r <= n; r++) {
      const char *s = cells[r * NCOLS + c];
      size_t w = s ? strlen (s) : 1;
      if (w > width[c])
        width[c] = w;
    }
  }

  for (size_t r = 0; r <= n; r++) {
    for (int c = 0; c < NCOLS; c++) {
      const char *s = cells[r * NCOLS + c] ? cells[r * NCOLS + c] : "?";
      if (c == NCOLS - 1)
        printf ("%s\n", s);                /* no trailing blanks */
      else
        printf ("%-*s  ", (int) width[c], s);
    }
  }

  for (size_t i = 0; i < (n + 1) * NCOLS; i++)
    free (cells[i]);
  free (cells);
  return CTL_EXIT_OK;
}
