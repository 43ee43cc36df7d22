/*
 * FILTER expressions over an element's JSON attributes, with the syntax and
 * value rules of Redis vector sets, so a VSIM ... FILTER written for Redis
 * selects the same elements here.
 *
 * Syntax: numbers, 'strings' or "strings", null, [tuples] of numbers and
 * strings, .field selectors (top-level fields; letters, digits, _ and -),
 * and operators, loosest first: or || ; and && ; == != > >= < <= in ;
 * + - ; * / % ; ** (right-associative) ; not ! (unary); parentheses. A '-'
 * directly before a digit is a sign where an operand is expected.
 *
 * Values: JSON numbers, strings, true/false (as 1/0), null and arrays (for
 * `in`); an object, or a field that is missing, or attributes that are not
 * a JSON object, make the whole expression false for that element — no
 * match, never an error. Arithmetic and ordering convert both sides to
 * numbers (a string that is not wholly a number counts as 0); == compares
 * strings as bytes, numbers as numbers, null only to null, and mixed
 * types as numbers; truth is: number != 0, a non-empty string, anything
 * but null. `a in b` is membership when b is a tuple or a JSON array, and
 * substring when both are strings. Unlike Redis, string literals take
 * backslash escapes (\' \" \\ \n \t \uXXXX) so they compare equal to the
 * JSON strings they spell.
 *
 * Compilation (once per query) produces a postfix program and the stack
 * depth it needs; the arity of every operator is checked then, so running
 * it cannot fail. Running it needs no allocation: JSON strings are used
 * in place unless they hold escapes, and the value stack and the buffer
 * for unescaped strings belong to a per-thread evaluator (the buffer grows
 * only when an element has a longer escaped string than any before).
 */
#include "store.h"

#include <ctype.h>

enum { T_NUM, T_STR, T_NULL, T_TUPLE, T_SEL, T_OP };

enum {
    OP_OPEN, OP_CLOSE, OP_NOT, OP_POW, OP_MUL, OP_DIV, OP_MOD, OP_ADD, OP_SUB,
    OP_GT, OP_GE, OP_LT, OP_LE, OP_EQ, OP_NE, OP_IN, OP_AND, OP_OR,
};

static const struct {
    const char *name;
    int op, prec, arity;
} ops[] = {
    {"(", OP_OPEN, 7, 0},  {")", OP_CLOSE, 7, 0}, {"!", OP_NOT, 6, 1},  {"not", OP_NOT, 6, 1},
    {"**", OP_POW, 5, 2},  {"*", OP_MUL, 4, 2},   {"/", OP_DIV, 4, 2},  {"%", OP_MOD, 4, 2},
    {"+", OP_ADD, 3, 2},   {"-", OP_SUB, 3, 2},   {">", OP_GT, 2, 2},   {">=", OP_GE, 2, 2},
    {"<", OP_LT, 2, 2},    {"<=", OP_LE, 2, 2},   {"==", OP_EQ, 2, 2},  {"!=", OP_NE, 2, 2},
    {"in", OP_IN, 2, 2},   {"and", OP_AND, 1, 2}, {"&&", OP_AND, 1, 2}, {"or", OP_OR, 0, 2},
    {"||", OP_OR, 0, 2},
};
#define NOPS (sizeof(ops) / sizeof(ops[0]))
#define OP_CHARS "+-*%/!()<>=|&"

static int op_prec(int op)
{
    for (size_t i = 0; i < NOPS; i++)
        if (ops[i].op == op)
            return ops[i].prec;
    return -1;
}

static int op_arity(int op)
{
    for (size_t i = 0; i < NOPS; i++)
        if (ops[i].op == op)
            return ops[i].arity;
    return 0;
}

/* One program step: push a literal, read a field, or apply an operator.
 * Strings live in the filter's pool; a tuple's elements are the `count`
 * steps that follow it (literals only), skipped when running. */
typedef struct step {
    uint8_t kind;
    uint8_t op;
    uint32_t count;  /* tuple: elements that follow; selector: its number; operator: arity */
    uint32_t off, len; /* string / selector bytes in pool */
    double num;
    uint32_t at;     /* offset in the expression, for errors */
} step;

struct tq_filter {
    step *prog;
    size_t nprog;
    size_t nsel;     /* selector steps; step.count numbers them */
    size_t depth;    /* values on the stack at most */
    char *pool;
    size_t pool_len;
};

/* A value while running. JSON arrays keep their raw text for `in`. */
/* A value while running: the attribute value type (a tuple's s is its first
 * element step, its len the element count). */
enum { V_NUM = TQ_ATTR_NUM, V_STR = TQ_ATTR_STR, V_NULL = TQ_ATTR_NULL, V_TUPLE = TQ_ATTR_TUPLE,
       V_ARRAY = TQ_ATTR_ARRAY };
typedef tq_attr_value value;

struct tq_filter_eval {
    value *stack;
    char *scratch;   /* unescaped JSON strings of one run */
    size_t scratch_cap, scratch_used;
    char *spare;     /* a larger buffer, swapped in after a run that overflowed */
    size_t spare_cap;
    bool overflow;
};

/* ------------------------------------------------------------- compile */

typedef struct compiler {
    const char *src;
    size_t len, pos;
    step *tokens;
    size_t ntokens, cap;
    char *pool;
    size_t pool_len, pool_cap;
} compiler;

static int syntax_error(tq_error *err, const compiler *c, size_t at)
{
    if (at > c->len)
        at = c->len;
    return tq_err(err, TQ_EARG, "syntax error in FILTER expression near: %.*s",
                  (int)(c->len - at < 64 ? c->len - at : 64), c->src + at);
}

static step *push_token(compiler *c)
{
    if (c->ntokens == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 32;
        step *t = tq_realloc(c->tokens, cap * sizeof(step));
        if (!t)
            return NULL;
        c->tokens = t;
        c->cap = cap;
    }
    step *s = &c->tokens[c->ntokens++];
    memset(s, 0, sizeof(*s));
    return s;
}

static bool pool_put(compiler *c, const char *p, size_t n)
{
    if (c->pool_len + n > c->pool_cap) {
        size_t cap = c->pool_cap ? 2 * c->pool_cap : 256;
        while (cap < c->pool_len + n)
            cap *= 2;
        char *q = tq_realloc(c->pool, cap);
        if (!q)
            return false;
        c->pool = q;
        c->pool_cap = cap;
    }
    if (n) /* an empty literal has no bytes (and may have no pool yet) */
        memcpy(c->pool + c->pool_len, p, n);
    c->pool_len += n;
    return true;
}

static int hexval(int ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode the escapes of s[0, n) (JSON's, plus \' ) into out, which has room
 * for n bytes (no escape grows). Returns the length, or -1 if an escape is
 * malformed. */
static long unescape(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
            continue;
        }
        if (++i >= n)
            return -1;
        switch (s[i]) {
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'u': {
            uint32_t cp = 0;
            for (int k = 0; k < 4; k++) {
                int h = i + 1 + (size_t)k < n ? hexval((unsigned char)s[i + 1 + k]) : -1;
                if (h < 0)
                    return -1;
                cp = cp << 4 | (uint32_t)h;
            }
            i += 4;
            /* A high surrogate followed by \uDC00-DFFF is one code point. */
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < n + 0 && s[i + 1] == '\\' && s[i + 2] == 'u') {
                uint32_t lo = 0;
                bool ok = true;
                for (int k = 0; k < 4 && ok; k++) {
                    int h = hexval((unsigned char)s[i + 3 + k]);
                    ok = h >= 0;
                    lo = lo << 4 | (uint32_t)(h < 0 ? 0 : h);
                }
                if (ok && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            o += utf8_put(cp, out + o);
            break;
        }
        default: out[o++] = s[i]; break; /* \\ \" \' \/ and anything else: the character */
        }
    }
    return (long)o;
}

static bool is_sel_char(int ch)
{
    return isalnum(ch) || ch == '_' || ch == '-';
}

/* A number starting at pos; false if it does not parse wholly. */
static bool lex_number(compiler *c, double *out)
{
    char buf[64];
    size_t i = 0, p = c->pos;
    while (p < c->len && i < sizeof(buf) - 1) {
        char ch = c->src[p];
        bool sign_ok = i == 0 || buf[i - 1] == 'e' || buf[i - 1] == 'E';
        if (!(isdigit((unsigned char)ch) || ch == '.' || ch == 'e' || ch == 'E' || ((ch == '-' || ch == '+') && sign_ok)))
            break;
        if (ch == '+' && i == 0)
            break;
        buf[i++] = ch;
        p++;
    }
    buf[i] = 0;
    if (i == 0 || i == sizeof(buf) - 1)
        return false;
    char *end;
    *out = strtod(buf, &end);
    if (*end)
        return false;
    c->pos = p;
    return true;
}

/* A quoted string starting at pos into the pool. */
static bool lex_string(compiler *c, step *t)
{
    const char quote = c->src[c->pos];
    size_t p = c->pos + 1;
    while (p < c->len && c->src[p] != quote)
        p += c->src[p] == '\\' && p + 1 < c->len ? 2 : 1;
    if (p >= c->len)
        return false;
    const size_t n = p - c->pos - 1;
    char tmp[256];
    char *buf = n <= sizeof(tmp) ? tmp : tq_malloc(n);
    if (!buf)
        return false;
    long m = unescape(c->src + c->pos + 1, n, buf);
    t->off = (uint32_t)c->pool_len;
    bool ok = m >= 0 && pool_put(c, buf, (size_t)m);
    t->len = (uint32_t)(m < 0 ? 0 : m);
    if (buf != tmp)
        tq_free(buf);
    c->pos = p + 1;
    return ok;
}

static void skip_space(compiler *c)
{
    while (c->pos < c->len && isspace((unsigned char)c->src[c->pos]))
        c->pos++;
}

/* Whether a '-' here starts a number: at the start, or after an operator
 * other than ')'. */
static bool sign_expected(const compiler *c)
{
    if (!c->ntokens)
        return true;
    const step *last = &c->tokens[c->ntokens - 1];
    return last->kind == T_OP && last->op != OP_CLOSE;
}

static int lex(compiler *c, tq_error *err)
{
    for (;;) {
        skip_space(c);
        if (c->pos >= c->len)
            return TQ_OK;
        const size_t at = c->pos;
        const char ch = c->src[at];
        const char next = at + 1 < c->len ? c->src[at + 1] : 0;
        const bool sign_ok = sign_expected(c); /* before this token joins the list */
        step *t = push_token(c);
        if (!t)
            return tq_err(err, TQ_ENOMEM, "out of memory compiling a filter");
        t->at = (uint32_t)at;
        if (isdigit((unsigned char)ch) || (ch == '-' && isdigit((unsigned char)next) && sign_ok)) {
            t->kind = T_NUM;
            if (!lex_number(c, &t->num))
                return syntax_error(err, c, at);
        } else if (ch == '"' || ch == '\'') {
            t->kind = T_STR;
            if (!lex_string(c, t))
                return syntax_error(err, c, at);
        } else if (ch == '.' && is_sel_char((unsigned char)next)) {
            size_t p = at + 1;
            while (p < c->len && is_sel_char((unsigned char)c->src[p]))
                p++;
            t->kind = T_SEL;
            t->off = (uint32_t)c->pool_len;
            t->len = (uint32_t)(p - at - 1);
            if (!pool_put(c, c->src + at + 1, t->len))
                return tq_err(err, TQ_ENOMEM, "out of memory compiling a filter");
            c->pos = p;
        } else if (ch == '[') {
            /* A tuple: its literal elements follow it as steps. */
            size_t self = c->ntokens - 1;
            t->kind = T_TUPLE;
            c->pos++;
            uint32_t count = 0;
            for (;;) {
                skip_space(c);
                if (c->pos < c->len && c->src[c->pos] == ']' && count == 0) {
                    c->pos++;
                    break;
                }
                if (c->pos >= c->len)
                    return syntax_error(err, c, at);
                const char e = c->src[c->pos];
                step *el = push_token(c);
                if (!el)
                    return tq_err(err, TQ_ENOMEM, "out of memory compiling a filter");
                el->at = (uint32_t)c->pos;
                if (isdigit((unsigned char)e) || e == '-' || e == '.') {
                    el->kind = T_NUM;
                    if (!lex_number(c, &el->num))
                        return syntax_error(err, c, el->at);
                } else if (e == '"' || e == '\'') {
                    el->kind = T_STR;
                    if (!lex_string(c, el))
                        return syntax_error(err, c, el->at);
                } else {
                    return syntax_error(err, c, el->at);
                }
                count++;
                skip_space(c);
                if (c->pos < c->len && c->src[c->pos] == ']') {
                    c->pos++;
                    break;
                }
                if (c->pos >= c->len || c->src[c->pos] != ',')
                    return syntax_error(err, c, c->pos);
                c->pos++;
            }
            c->tokens[self].count = count;
        } else if (isalpha((unsigned char)ch) || strchr(OP_CHARS, ch)) {
            size_t p = at;
            while (p < c->len && (isalpha((unsigned char)c->src[p]) || strchr(OP_CHARS, c->src[p])))
                p++;
            if (p - at == 4 && !memcmp(c->src + at, "null", 4)) {
                t->kind = T_NULL;
                c->pos = p;
                continue;
            }
            /* The longest operator the run begins with. */
            size_t best = 0;
            for (size_t i = 0; i < NOPS; i++) {
                size_t n = strlen(ops[i].name);
                if (n <= p - at && n > best && !memcmp(ops[i].name, c->src + at, n)) {
                    best = n;
                    t->op = (uint8_t)ops[i].op;
                }
            }
            if (!best)
                return syntax_error(err, c, at);
            t->kind = T_OP;
            c->pos = at + best;
        } else {
            return syntax_error(err, c, at);
        }
        if (c->ntokens > TQ_FILTER_MAX_TOKENS)
            return tq_err(err, TQ_EARG, "FILTER expression has more than %u tokens", TQ_FILTER_MAX_TOKENS);
    }
}

int tq_filter_compile(const char *expr, size_t len, tq_filter **out, tq_error *err)
{
    *out = NULL;
    if (len > TQ_FILTER_MAX_BYTES)
        return tq_err(err, TQ_EARG, "FILTER expression of %zu bytes is over the %u-byte limit", len,
                      TQ_FILTER_MAX_BYTES);
    compiler c = {.src = expr, .len = len};
    tq_filter *f = tq_calloc(1, sizeof(*f));
    int rc = f ? lex(&c, err) : tq_err(err, TQ_ENOMEM, "out of memory compiling a filter");
    size_t *opstack = NULL, nops = 0, values = 0;
    if (!rc && !(f->prog = tq_malloc((c.ntokens + 1) * sizeof(step))))
        rc = tq_err(err, TQ_ENOMEM, "out of memory compiling a filter");
    if (!rc && !(opstack = tq_malloc((c.ntokens + 1) * sizeof(size_t))))
        rc = tq_err(err, TQ_ENOMEM, "out of memory compiling a filter");
    /* Shunting-yard, counting the values the program would hold so arity
     * errors are found now rather than while running. */
#define EMIT_OP(i)                                                                                   \
    do {                                                                                             \
        const step *o_ = &c.tokens[i];                                                               \
        int ar_ = op_arity(o_->op);                                                                  \
        if (values < (size_t)ar_) {                                                                  \
            rc = syntax_error(err, &c, o_->at);                                                      \
            break;                                                                                   \
        }                                                                                            \
        values = values - (size_t)ar_ + 1;                                                           \
        f->prog[f->nprog] = *o_;                                                                     \
        f->prog[f->nprog++].count = (uint32_t)ar_;                                                   \
    } while (0)
    for (size_t i = 0; !rc && i < c.ntokens; i++) {
        const step *t = &c.tokens[i];
        if (t->kind != T_OP) {
            f->prog[f->nprog++] = *t;
            if (t->kind == T_SEL)
                f->prog[f->nprog - 1].count = (uint32_t)f->nsel++;
            if (t->kind == T_TUPLE)
                for (uint32_t k = 0; k < t->count; k++)
                    f->prog[f->nprog++] = c.tokens[++i];
            if (++values > f->depth)
                f->depth = values;
            continue;
        }
        if (t->op == OP_OPEN) {
            opstack[nops++] = i;
            continue;
        }
        if (t->op == OP_CLOSE) {
            for (;;) {
                if (!nops) {
                    rc = syntax_error(err, &c, t->at);
                    break;
                }
                size_t top = opstack[--nops];
                if (c.tokens[top].op == OP_OPEN)
                    break;
                EMIT_OP(top);
                if (rc)
                    break;
            }
            continue;
        }
        const int prec = op_prec(t->op);
        while (!rc && nops) {
            const step *top = &c.tokens[opstack[nops - 1]];
            if (top->op == OP_OPEN)
                break;
            int tp = op_prec(top->op);
            /* ** is right-associative; a unary operator waits for its operand. */
            if (tp < prec || (t->op == OP_POW && tp <= prec) || op_arity(t->op) == 1)
                break;
            EMIT_OP(opstack[--nops]);
        }
        opstack[nops++] = i;
    }
    while (!rc && nops) {
        size_t top = opstack[--nops];
        if (c.tokens[top].op == OP_OPEN) {
            rc = syntax_error(err, &c, c.tokens[top].at);
            break;
        }
        EMIT_OP(top);
    }
#undef EMIT_OP
    if (!rc && values != 1)
        rc = syntax_error(err, &c, c.ntokens ? c.tokens[c.ntokens - 1].at : 0);
    tq_free(opstack);
    tq_free(c.tokens);
    if (rc) {
        tq_free(c.pool);
        tq_filter_free(f);
        return rc;
    }
    f->pool = c.pool;
    f->pool_len = c.pool_len;
    *out = f;
    return TQ_OK;
}

void tq_filter_free(tq_filter *f)
{
    if (!f)
        return;
    tq_free(f->prog);
    tq_free(f->pool);
    tq_free(f);
}

/* ---------------------------------------------------------------- JSON */

static const char *json_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* End of the string whose opening quote is at p, or NULL. */
static const char *json_string_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }
        if (*p == '"')
            return p + 1;
        if ((unsigned char)*p < 0x20)
            return NULL;
    }
    return NULL;
}

/* End of the value starting at p (any type, nested), or NULL if malformed
 * or nested deeper than the limit. */
static const char *json_skip(const char *p, const char *end, int depth)
{
    p = json_space(p, end);
    if (p >= end || depth > 64)
        return NULL;
    if (*p == '"')
        return json_string_end(p, end);
    if (*p == '{' || *p == '[') {
        const char close = *p == '{' ? '}' : ']';
        p = json_space(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = json_space(p, end);
                if (p >= end || *p != '"' || !(p = json_string_end(p, end)))
                    return NULL;
                p = json_space(p, end);
                if (p >= end || *p++ != ':')
                    return NULL;
            }
            if (!(p = json_skip(p, end, depth + 1)))
                return NULL;
            p = json_space(p, end);
            if (p >= end)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    const char *s = p;
    while (p < end && (isalnum((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.'))
        p++;
    return p > s ? p : NULL;
}

/* A scalar or array JSON value at [p, e) as a filter value; strings are
 * unescaped into the evaluator's scratch. False for objects and malformed
 * input. */
static bool json_value(tq_filter_eval *ev, const char *p, const char *e, value *out)
{
    if (*p == '"') {
        size_t n = (size_t)(e - p) - 2;
        if (!memchr(p + 1, '\\', n)) {
            *out = (value){.type = V_STR, .s = p + 1, .len = n};
            return true;
        }
        if (ev->scratch_used + n > ev->scratch_cap) {
            /* Earlier strings of this run point into the buffer, so it
             * cannot move now: make room for the next run and give up on
             * this one (rare: the buffer only ever grows). */
            size_t cap = 2 * (ev->scratch_used + n);
            char *bigger = tq_malloc(cap);
            if (bigger) {
                tq_free(ev->spare);
                ev->spare = bigger;
                ev->spare_cap = cap;
            }
            ev->overflow = true;
            return false;
        }
        char *dst = ev->scratch + ev->scratch_used;
        long m = unescape(p + 1, n, dst);
        if (m < 0)
            return false;
        ev->scratch_used += (size_t)m;
        *out = (value){.type = V_STR, .s = dst, .len = (size_t)m};
        return true;
    }
    if (*p == '[') {
        *out = (value){.type = V_ARRAY, .s = p, .len = (size_t)(e - p)};
        return true;
    }
    if (*p == '{')
        return false;
    const size_t n = (size_t)(e - p);
    if (n == 4 && !memcmp(p, "true", 4)) {
        *out = (value){.type = V_NUM, .num = 1};
        return true;
    }
    if (n == 5 && !memcmp(p, "false", 5)) {
        *out = (value){.type = V_NUM, .num = 0};
        return true;
    }
    if (n == 4 && !memcmp(p, "null", 4)) {
        *out = (value){.type = V_NULL};
        return true;
    }
    char buf[64];
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end)
        return false;
    *out = (value){.type = V_NUM, .num = d};
    return true;
}

/* Whether json[0, len) is one well-formed value with only space around. */
static bool json_whole(const char *json, size_t len)
{
    const char *e = json_skip(json, json + len, 0);
    return e && json_space(e, json + len) == json + len;
}

/* The top-level field `name` of the object in json. */
static bool json_field(tq_filter_eval *ev, const char *json, size_t len, const char *name, size_t nlen, value *out)
{
    const char *p = json_space(json, json + len), *end = json + len;
    if (p >= end || *p != '{')
        return false;
    p = json_space(p + 1, end);
    if (p < end && *p == '}')
        return false;
    for (;;) {
        if (p >= end || *p != '"')
            return false;
        const char *kend = json_string_end(p, end);
        if (!kend)
            return false;
        const char *k = p + 1;
        size_t klen = (size_t)(kend - k) - 1;
        bool match;
        if (memchr(k, '\\', klen)) {
            char tmp[256];
            long m = klen <= sizeof(tmp) ? unescape(k, klen, tmp) : -1;
            match = m == (long)nlen && !memcmp(tmp, name, nlen);
        } else {
            match = klen == nlen && !memcmp(k, name, nlen);
        }
        p = json_space(kend, end);
        if (p >= end || *p++ != ':')
            return false;
        p = json_space(p, end);
        const char *vend = json_skip(p, end, 0);
        if (!vend)
            return false;
        if (match)
            return json_value(ev, p, vend, out);
        p = json_space(vend, end);
        if (p >= end)
            return false;
        if (*p == '}')
            return false;
        if (*p++ != ',')
            return false;
        p = json_space(p, end);
    }
}

/* --------------------------------------------------------------- run */

int tq_filter_eval_init(const tq_filter *f, tq_filter_eval **out)
{
    tq_filter_eval *ev = tq_calloc(1, sizeof(*ev));
    if (!ev)
        return TQ_ENOMEM;
    ev->stack = tq_malloc((f->depth + 1) * sizeof(value));
    ev->scratch_cap = 4096;
    ev->scratch = tq_malloc(ev->scratch_cap);
    if (!ev->stack || !ev->scratch) {
        tq_filter_eval_free(ev);
        return TQ_ENOMEM;
    }
    *out = ev;
    return TQ_OK;
}

void tq_filter_eval_free(tq_filter_eval *ev)
{
    if (!ev)
        return;
    tq_free(ev->stack);
    tq_free(ev->scratch);
    tq_free(ev->spare);
    tq_free(ev);
}

static double to_num(const value *v)
{
    if (v->type == V_NUM)
        return v->num;
    if (v->type == V_STR && v->len < 64) {
        char buf[64];
        memcpy(buf, v->s, v->len);
        buf[v->len] = 0;
        char *end;
        double d = strtod(buf, &end);
        return v->len && !*end ? d : 0;
    }
    return 0;
}

static bool truthy(const value *v)
{
    if (v->type == V_NUM)
        return v->num != 0;
    if (v->type == V_STR)
        return v->len != 0;
    return v->type != V_NULL;
}

static bool equal(const value *a, const value *b)
{
    if (a->type == V_STR && b->type == V_STR)
        return a->len == b->len && !memcmp(a->s, b->s, a->len);
    if (a->type == V_NUM && b->type == V_NUM)
        return a->num == b->num;
    if (a->type == V_NULL || b->type == V_NULL)
        return a->type == b->type;
    return to_num(a) == to_num(b);
}

static value literal(const tq_filter *f, const step *s)
{
    switch (s->kind) {
    case T_NUM: return (value){.type = V_NUM, .num = s->num};
    /* A filter whose only strings are empty has no pool. */
    case T_STR: return (value){.type = V_STR, .s = f->pool ? f->pool + s->off : "", .len = s->len};
    default: return (value){.type = V_NULL};
    }
}

/* a in b: membership in a tuple or JSON array, substring of a string. */
static bool contains(tq_filter_eval *ev, const tq_filter *f, const value *a, const value *b)
{
    if (b->type == V_TUPLE) {
        const step *el = (const step *)(const void *)b->s;
        for (size_t i = 0; i < b->len; i++) {
            value v = literal(f, &el[i]);
            if (equal(a, &v))
                return true;
        }
        return false;
    }
    if (b->type == V_ARRAY) {
        const char *p = json_space(b->s + 1, b->s + b->len), *end = b->s + b->len;
        size_t mark = ev->scratch_used;
        while (p < end && *p != ']') {
            const char *e = json_skip(p, end, 1);
            if (!e)
                return false;
            value v;
            ev->scratch_used = mark;
            if (*p != '[' && json_value(ev, p, e, &v) && equal(a, &v))
                return true;
            p = json_space(e, end);
            if (p < end && *p == ',')
                p = json_space(p + 1, end);
        }
        ev->scratch_used = mark;
        return false;
    }
    if (a->type == V_STR && b->type == V_STR)
        return a->len <= b->len && (a->len == 0 || memmem(b->s, b->len, a->s, a->len) != NULL);
    return false;
}

/* Where a run reads fields: one JSON blob, or columns at a row. */
typedef struct source {
    const char *json;
    size_t len;
    const tq_attr_column *const *cols;
    size_t row;
} source;

/* One run; ev->overflow set if an escaped string did not fit the buffer. */
static bool match_once(const tq_filter *f, tq_filter_eval *ev, const source *src)
{
    const char *json = src->json;
    const size_t len = src->len;
    value *st = ev->stack;
    size_t n = 0;
    bool checked = false;
    ev->scratch_used = 0;
    for (size_t i = 0; i < f->nprog; i++) {
        const step *s = &f->prog[i];
        switch (s->kind) {
        case T_NUM:
        case T_STR:
        case T_NULL:
            st[n++] = literal(f, s);
            continue;
        case T_TUPLE:
            st[n++] = (value){.type = V_TUPLE, .s = (const char *)(const void *)(s + 1), .len = s->count};
            i += s->count;
            continue;
        case T_SEL:
            if (src->cols) {
                st[n] = src->cols[s->count]->v[src->row];
                if (st[n].type == TQ_ATTR_MISSING)
                    return false;
                n++;
                continue;
            }
            /* Attributes that are not one well-formed JSON value match
             * nothing: checked once, at the first field read. */
            if (!json || (!checked && !json_whole(json, len)))
                return false;
            checked = true;
            if (!json_field(ev, json, len, f->pool + s->off, s->len, &st[n]))
                return false;
            n++;
            continue;
        default:
            break;
        }
        value b = st[--n], a = {0};
        if (s->count == 2) /* an operator step's count is its arity */
            a = st[--n];
        double r = 0;
        switch (s->op) {
        case OP_NOT: r = !truthy(&b); break;
        case OP_POW: r = pow(to_num(&a), to_num(&b)); break;
        case OP_MUL: r = to_num(&a) * to_num(&b); break;
        case OP_DIV: r = to_num(&a) / to_num(&b); break;
        case OP_MOD: r = fmod(to_num(&a), to_num(&b)); break;
        case OP_ADD: r = to_num(&a) + to_num(&b); break;
        case OP_SUB: r = to_num(&a) - to_num(&b); break;
        case OP_GT: r = to_num(&a) > to_num(&b); break;
        case OP_GE: r = to_num(&a) >= to_num(&b); break;
        case OP_LT: r = to_num(&a) < to_num(&b); break;
        case OP_LE: r = to_num(&a) <= to_num(&b); break;
        case OP_EQ: r = equal(&a, &b); break;
        case OP_NE: r = !equal(&a, &b); break;
        case OP_IN: r = contains(ev, f, &a, &b); break;
        case OP_AND: r = truthy(&a) && truthy(&b); break;
        case OP_OR: r = truthy(&a) || truthy(&b); break;
        }
        st[n++] = (value){.type = V_NUM, .num = r};
    }
    return n == 1 && truthy(&st[0]);
}

bool tq_filter_match_columns(const tq_filter *f, tq_filter_eval *ev, const tq_attr_column *const *cols, size_t row)
{
    const source src = {.cols = cols, .row = row};
    ev->overflow = false;
    return match_once(f, ev, &src); /* column strings are unescaped already: no overflow */
}

bool tq_filter_match(const tq_filter *f, tq_filter_eval *ev, const char *json, size_t len)
{
    const source src = {.json = json, .len = len};
    ev->overflow = false;
    bool r = match_once(f, ev, &src);
    if (ev->overflow && ev->spare) {
        /* Retry with the larger buffer made ready by the failed run. */
        tq_free(ev->scratch);
        ev->scratch = ev->spare;
        ev->scratch_cap = ev->spare_cap;
        ev->spare = NULL;
        ev->overflow = false;
        r = match_once(f, ev, &src);
    }
    return r;
}

/* ------------------------------------------------------------- columns */

size_t tq_filter_selector_count(const tq_filter *f)
{
    return f->nsel;
}

const char *tq_filter_selector(const tq_filter *f, size_t i, uint32_t *len)
{
    for (size_t k = 0; k < f->nprog; k++)
        if (f->prog[k].kind == T_SEL && f->prog[k].count == i) {
            *len = f->prog[k].len;
            return f->pool + f->prog[k].off;
        }
    *len = 0;
    return NULL;
}

/* Unescaped strings of a column live in blocks chained through their first
 * bytes; blocks never move, so values can point into them. */
typedef struct block {
    struct block *next;
    size_t used, cap;
    char data[];
} block;

static char *block_copy(block **head, const char *s, size_t n)
{
    block *b = *head;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 65536 ? n : 65536;
        block *nb = tq_malloc(sizeof(block) + cap);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        *head = b = nb;
    }
    char *dst = b->data + b->used;
    memcpy(dst, s, n);
    b->used += n;
    return dst;
}

int tq_attr_column_build(const char *field, uint32_t flen, size_t n, tq_attr_fn get, void *ctx,
                         tq_attr_column *out)
{
    memset(out, 0, sizeof(*out));
    out->v = tq_malloc((n ? n : 1) * sizeof(tq_attr_value));
    tq_filter_eval ev = {.scratch_cap = 4096};
    ev.scratch = tq_malloc(ev.scratch_cap);
    if (!out->v || !ev.scratch) {
        tq_free(out->v);
        tq_free(ev.scratch);
        out->v = NULL;
        return TQ_ENOMEM;
    }
    block *blocks = NULL;
    int rc = TQ_OK;
    for (size_t r = 0; r < n && !rc; r++) {
        uint32_t len;
        const char *json = get(ctx, r, &len);
        tq_attr_value *v = &out->v[r];
        v->type = TQ_ATTR_MISSING;
        if (!json || !json_whole(json, len))
            continue;
        ev.scratch_used = 0;
        ev.overflow = false;
        if (!json_field(&ev, json, len, field, flen, v)) {
            if (ev.overflow) { /* an escaped string longer than the scratch: grow it and retry */
                tq_free(ev.scratch);
                ev.scratch = ev.spare;
                ev.scratch_cap = ev.spare_cap;
                ev.spare = NULL;
                if (!ev.scratch) {
                    rc = TQ_ENOMEM;
                    break;
                }
                r--;
                continue;
            }
            v->type = TQ_ATTR_MISSING;
            continue;
        }
        /* A string unescaped into the scratch moves to the column's blocks. */
        if (v->type == TQ_ATTR_STR && v->s >= ev.scratch && v->s < ev.scratch + ev.scratch_cap) {
            char *kept = block_copy(&blocks, v->s, v->len);
            if (!kept)
                rc = TQ_ENOMEM;
            v->s = kept;
        }
    }
    tq_free(ev.scratch);
    tq_free(ev.spare);
    out->n = n;
    out->blocks = blocks;
    if (rc)
        tq_attr_column_free(out);
    return rc;
}

void tq_attr_column_free(tq_attr_column *c)
{
    for (block *b = c->blocks; b;) {
        block *next = b->next;
        tq_free(b);
        b = next;
    }
    tq_free(c->v);
    memset(c, 0, sizeof(*c));
}

/* [selector, number, comparison] or [number, selector, comparison]: the
 * shape of most real filters, run over a numeric column without the
 * interpreter. Other rows, and other shapes, take the general path. */
static bool simple_compare(const tq_filter *f, int *op, double *c, bool *sel_first)
{
    if (f->nprog != 3 || f->prog[2].kind != T_OP)
        return false;
    *op = f->prog[2].op;
    if (*op != OP_GT && *op != OP_GE && *op != OP_LT && *op != OP_LE && *op != OP_EQ && *op != OP_NE)
        return false;
    if (f->prog[0].kind == T_SEL && f->prog[1].kind == T_NUM) {
        *sel_first = true;
        *c = f->prog[1].num;
        return true;
    }
    if (f->prog[0].kind == T_NUM && f->prog[1].kind == T_SEL) {
        *sel_first = false;
        *c = f->prog[0].num;
        return true;
    }
    return false;
}

static bool compare(int op, double a, double b)
{
    switch (op) {
    case OP_GT: return a > b;
    case OP_GE: return a >= b;
    case OP_LT: return a < b;
    case OP_LE: return a <= b;
    case OP_EQ: return a == b;
    default: return a != b;
    }
}

size_t tq_filter_allow_columns(const tq_filter *f, tq_filter_eval *ev, const tq_attr_column *const *cols, size_t n,
                               uint32_t *bits)
{
    memset(bits, 0, ((n + 31) / 32) * sizeof(uint32_t));
    int op = 0;
    double c = 0;
    bool sel_first = false;
    const bool simple = simple_compare(f, &op, &c, &sel_first);
    size_t pass = 0;
    for (size_t r = 0; r < n; r++) {
        bool ok;
        const tq_attr_value *v = simple ? &cols[0]->v[r] : NULL;
        if (simple && v->type == TQ_ATTR_NUM)
            ok = sel_first ? compare(op, v->num, c) : compare(op, c, v->num);
        else
            ok = tq_filter_match_columns(f, ev, cols, r);
        if (ok) {
            bits[r / 32] |= 1u << (r % 32);
            pass++;
        }
    }
    return pass;
}
