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

const char *
ctl_attachments_text (struct json_object *vol, bool since, char *buf, size_t len)
{
  struct json_object *arr;
  size_t n = 0;
  buf[0] = '\0';
  if (json_object_object_get_ex (vol, "attachments", &arr)
      && json_object_is_type (arr, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length (arr) && n < len; i++) {
      struct json_object *a = json_object_array_get_idx (arr, i);
      char ib[128], rb[32], sb[40];
      n += (size_t) snprintf (buf + n, len - n, "%s%s (%s%s%s)", i ? ", " : "",
                              field (a, "instance", ib, sizeof ib), field (a, "role", rb, sizeof rb),
                              since ? ", since " : "", since ? field (a, "since", sb, sizeof sb) : "");
    }
  }
  if (buf[0] == '\0')
    snprintf (buf, len, "-");
  return buf;
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

  /* Printed only when blockd sends them (source_snapshot: when not null),
   * so that the lines a script reads from an older blockd stay the same. */
  struct json_object *v;
  if (json_object_object_get_ex (vol, "source_snapshot", &v) && v != NULL)
    print_kv ("source_snapshot", field (vol, "source_snapshot", buf,
                                        sizeof buf));
  if (json_object_object_get_ex (vol, "snapshots", &v))
    print_kv ("snapshots", field (vol, "snapshots", buf, sizeof buf));
  if (json_object_object_get_ex (vol, "multi_attach", &v))
    print_kv ("multi_attach", field (vol, "multi_attach", buf, sizeof buf));
  if (json_object_object_get_ex (vol, "attachments", &v))
    print_kv ("attached_to", ctl_attachments_text (vol, true, buf, sizeof buf));
}

void
ctl_print_snapshot (struct json_object *snap)
{
  static const char *const plain_before[] = {
    "id", "name", "volume", "volume_id", NULL
  };
  static const char *const sizes[] = {
    "size", "referenced", "exclusive", NULL
  };
  static const char *const plain_after[] = { "created", "nbd_uri", NULL };
  char buf[1024];

  for (int i = 0; plain_before[i]; i++)
    print_kv (plain_before[i], field (snap, plain_before[i], buf, sizeof buf));
  for (int i = 0; sizes[i]; i++)
    print_kv (sizes[i], size_field (snap, sizes[i], true, buf, sizeof buf));
  for (int i = 0; plain_after[i]; i++)
    print_kv (plain_after[i], field (snap, plain_after[i], buf, sizeof buf));
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

/* One column of a table: its header, and how a cell comes from the
 * object of a row. */
enum cell_kind {
  CELL_PLAIN,                 /* member KEY as text */
  CELL_SIZE,                  /* member KEY, a size, as "10G" */
  CELL_SNAPSHOT_REF,          /* "VOLUME@NAME" from members volume and name */
  CELL_ATTACHMENTS,           /* "vm1 (system)" from member attachments */
};
struct column {
  const char *header;
  const char *key;
  enum cell_kind kind;
};

/* A cell of OBJ for COL as a malloc'd string (NULL: out of memory). */
static char *
cell (struct json_object *obj, const struct column *col)
{
  char buf[1024], buf2[1024], ref[2048];

  switch (col->kind) {
  case CELL_SIZE:
    return strdup (size_field (obj, col->key, false, buf, sizeof buf));
  case CELL_SNAPSHOT_REF:
    snprintf (ref, sizeof ref, "%s@%s",
              field (obj, "volume", buf, sizeof buf),
              field (obj, "name", buf2, sizeof buf2));
    return strdup (ref);
  case CELL_ATTACHMENTS:
    return strdup (ctl_attachments_text (obj, false, buf, sizeof buf));
  case CELL_PLAIN:
  default:
    return strdup (field (obj, col->key, buf, sizeof buf));
  }
}

/* Print the objects of array ITEMS as a table of the NCOLS columns COLS:
 * a header line, then one line per object, each column as wide as its
 * widest cell and two blanks apart, no trailing blanks.  Returns the exit
 * code (CTL_EXIT_SERVER only when out of memory). */
static int
print_table (struct json_object *items, const struct column *cols, int ncols)
{
  size_t n = json_object_array_length (items);
  char **cells = calloc ((n + 1) * (size_t) ncols, sizeof *cells);
  size_t *width = calloc ((size_t) ncols, sizeof *width);

  if (cells == NULL || width == NULL) {
    free (cells);
    free (width);
    ctl_error ("out of memory");
    return CTL_EXIT_SERVER;
  }
  for (int c = 0; c < ncols; c++)
    cells[c] = strdup (cols[c].header);
  for (size_t r = 0; r < n; r++)
    for (int c = 0; c < ncols; c++)
      cells[(r + 1) * ncols + c] =
        cell (json_object_array_get_idx (items, r), &cols[c]);

  for (int c = 0; c < ncols; c++) {
    for (size_t r = 0; r <= n; r++) {
      const char *s = cells[r * ncols + c];
      size_t w = s ? strlen (s) : 1;
      if (w > width[c])
        width[c] = w;
    }
  }

  for (size_t r = 0; r <= n; r++) {
    for (int c = 0; c < ncols; c++) {
      const char *s = cells[r * ncols + c] ? cells[r * ncols + c] : "?";
      if (c == ncols - 1)
        printf ("%s\n", s);                /* no trailing blanks */
      else
        printf ("%-*s  ", (int) width[c], s);
    }
  }

  for (size_t i = 0; i < (n + 1) * (size_t) ncols; i++)
    free (cells[i]);
  free (cells);
  free (width);
  return CTL_EXIT_OK;
}

int
ctl_print_volume_table (struct json_object *vols)
{
  static const struct column cols[] = {
    { "NAME", "name", CELL_PLAIN }, { "ID", "id", CELL_PLAIN },
    { "SIZE", "size", CELL_SIZE }, { "ALLOCATED", "allocated", CELL_SIZE },
    { "TYPE", "type", CELL_PLAIN }, { "STATUS", "status", CELL_PLAIN },
    { "ATTACHED-TO", NULL, CELL_ATTACHMENTS }, { "CREATED", "created", CELL_PLAIN },
  };
  return print_table (vols, cols, (int) (sizeof cols / sizeof cols[0]));
}

int
ctl_print_snapshot_table (struct json_object *snaps)
{
  static const struct column cols[] = {
    { "NAME", NULL, CELL_SNAPSHOT_REF }, { "ID", "id", CELL_PLAIN },
    { "SIZE", "size", CELL_SIZE }, { "REFERENCED", "referenced", CELL_SIZE },
    { "EXCLUSIVE", "exclusive", CELL_SIZE },
    { "CREATED", "created", CELL_PLAIN },
  };
  return print_table (snaps, cols, (int) (sizeof cols / sizeof cols[0]));
}
