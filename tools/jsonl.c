/*
 * Reading back what tool_json writes: one flat JSON object per line
 * (string, number, true/false/null values; no nesting), parsed in place.
 *
 * Strings are unescaped into the line itself -- an escape is never shorter
 * than what it stands for -- and NUL-terminated there, so fields point into
 * the caller's buffer and nothing is allocated. Numbers keep their text
 * too, because a 64-bit seed does not survive a trip through double. The
 * grammar is checked strictly (RFC 8259 for these value kinds); anything
 * else is an error naming the column, never a guess.
 */
#include "tq_tools.h"

typedef struct parser {
    char *p, *start;
    char *why;
    size_t why_cap;
} parser;

static int fail(parser *ps, const char *what)
{
    snprintf(ps->why, ps->why_cap, "%s at column %zu", what, (size_t)(ps->p - ps->start) + 1);
    return -1;
}

static void skip_space(parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static int hex4(const char *s, unsigned *out)
{
    *out = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        unsigned v = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (v == 16)
            return -1;
        *out = *out * 16 + v;
    }
    return 0;
}

/* A string at ps->p (on its opening quote), unescaped in place. */
static int parse_string(parser *ps, const char **out)
{
    char *w = ++ps->p;
    *out = w;
    for (;;) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"')
            break;
        if (c == 0)
            return fail(ps, "unterminated string");
        if (c < 0x20)
            return fail(ps, "control character in a string");
        if (c != '\\') {
            *w++ = *ps->p++;
            continue;
        }
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(ps->p, &cp))
                return fail(ps, "bad \\u escape");
            ps->p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) { /* a surrogate pair */
                if (ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return fail(ps, "unpaired surrogate");
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return fail(ps, "unpaired surrogate");
            }
            if (cp == 0)
                return fail(ps, "NUL in a string");
            if (cp < 0x80) {
                *w++ = (char)cp;
            } else if (cp < 0x800) {
                *w++ = (char)(0xc0 | (cp >> 6));
                *w++ = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                *w++ = (char)(0xe0 | (cp >> 12));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *w++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *w++ = (char)(0xf0 | (cp >> 18));
                *w++ = (char)(0x80 | ((cp >> 12) & 0x3f));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *w++ = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default:
            ps->p--;
            return fail(ps, "bad escape");
        }
    }
    ps->p++; /* past the closing quote, which w has not reached */
    *w = 0;
    return 0;
}

static bool digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number's extent checked against the JSON grammar; *end after it. */
static int scan_number(parser *ps, char **end)
{
    char *q = ps->p;
    if (*q == '-')
        q++;
    if (*q == '0')
        q++;
    else if (digit(*q))
        while (digit(*q))
            q++;
    else
        return fail(ps, "bad number");
    if (*q == '.') {
        if (!digit(*++q))
            return fail(ps, "bad number");
        while (digit(*q))
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!digit(*q))
            return fail(ps, "bad number");
        while (digit(*q))
            q++;
    }
    *end = q;
    return 0;
}

int tool_json_parse_object(char *line, tool_json_field *fields, size_t cap, size_t *n, char *why, size_t why_cap)
{
    parser ps = {.p = line, .start = line, .why = why, .why_cap = why_cap};
    *n = 0;
    skip_space(&ps);
    if (*ps.p != '{')
        return fail(&ps, "expected '{'");
    ps.p++;
    skip_space(&ps);
    if (*ps.p == '}') {
        ps.p++;
        goto trailing;
    }
    for (;;) {
        if (*n == cap)
            return fail(&ps, "too many fields");
        tool_json_field *f = &fields[(*n)++];
        memset(f, 0, sizeof(*f));
        if (*ps.p != '"')
            return fail(&ps, "expected a key");
        if (parse_string(&ps, &f->key))
            return -1;
        skip_space(&ps);
        if (*ps.p != ':')
            return fail(&ps, "expected ':'");
        ps.p++;
        skip_space(&ps);
        char *value_end = NULL;
        if (*ps.p == '"') {
            f->type = TOOL_JSON_STRING;
            if (parse_string(&ps, &f->str))
                return -1;
        } else if (!strncmp(ps.p, "true", 4) || !strncmp(ps.p, "false", 5)) {
            f->type = TOOL_JSON_BOOL;
            f->boolean = ps.p[0] == 't';
            ps.p += f->boolean ? 4 : 5;
        } else if (!strncmp(ps.p, "null", 4)) {
            f->type = TOOL_JSON_NULL;
            ps.p += 4;
        } else if (*ps.p == '{' || *ps.p == '[') {
            return fail(&ps, "nested values are not supported");
        } else {
            f->type = TOOL_JSON_NUMBER;
            if (scan_number(&ps, &value_end))
                return -1;
            f->str = ps.p;
            ps.p = value_end;
        }
        skip_space(&ps);
        char sep = *ps.p;
        if (sep != ',' && sep != '}')
            return fail(&ps, "expected ',' or '}'");
        if (value_end) { /* now that the separator is known, end the number's text */
            *value_end = 0;
            f->num = strtod(f->str, NULL);
        }
        ps.p++;
        if (sep == '}')
            break;
        skip_space(&ps);
    }
trailing:
    skip_space(&ps);
    if (*ps.p)
        return fail(&ps, "text after the object");
    return 0;
}

const tool_json_field *tool_json_find(const tool_json_field *fields, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(fields[i].key, key))
            return &fields[i];
    return NULL;
}
