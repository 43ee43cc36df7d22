/*
 * Lloyd-Max codebooks for one coordinate of a uniform point on the unit
 * sphere in R^d, computed at run time from the exact density
 *
 *     f(x) ∝ (1 - x^2)^((d-3)/2),  x in [-1, 1]
 *
 * (TurboQuant, Lemma 1: a Beta distribution that tends to N(0, 1/d)).
 * Nothing is copied from tables: every centroid follows from the density.
 *
 * Numerics. Substituting x = sin(θ) turns f(x)dx into cos^(d-2)(θ)dθ, which is
 * smooth on [-π/2, π/2] for every d >= 2 (f itself is singular at ±1 when
 * d = 2). The cell masses need the CDF of that, integrated once per (d, e)
 * into a table of panels with 8-point Gauss-Legendre (machine precision on
 * panels far narrower than the density's width); a CDF value is a table entry
 * plus one partial panel. The first moment has a closed form,
 *     ∫ x (1-x^2)^((d-3)/2) dx = -(1-x^2)^((d-1)/2) / (d-1),
 * so each Lloyd step (centroid = conditional mean of its cell, bound =
 * midpoint of neighbouring centroids) is cheap. The iteration starts from
 * the companding approximation (point density ∝ f^(1/3), Panter & Dite),
 * which is already close, and runs until no centroid moves by more than
 * 1e-13 standard deviations, capped for 8 bits where only refine codes use
 * the result.
 *
 * By symmetry only the positive half is solved; codebooks are cached per
 * (d, bits) and live as long as the process (tq_solved_get, here too: the
 * vector codebooks use it).
 */
#include "tq_index.h"

#define GL_POINTS 8
#define PANELS 2048
#define SIGMAS_KEPT 14.0

typedef struct cdf_table {
    double exponent;      /* w(θ) = cos^exponent(θ) */
    double theta_max;     /* beyond it w is negligible (or it is π/2) */
    double panel;         /* panel width */
    double cum[PANELS + 1];
} cdf_table;

static double gl_node[GL_POINTS], gl_weight[GL_POINTS];
static pthread_once_t gl_once = PTHREAD_ONCE_INIT;

/* Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on P_n. */
static void gl_init(void)
{
    const int n = GL_POINTS;
    for (int i = 0; i < n; i++) {
        double x = cos(M_PI * (i + 0.75) / (n + 0.5)), dp = 1.0;
        for (int it = 0; it < 100; it++) {
            double p0 = 1.0, p1 = x;
            for (int j = 2; j <= n; j++) {
                double p2 = ((2.0 * j - 1.0) * x * p1 - (j - 1.0) * p0) / j;
                p0 = p1;
                p1 = p2;
            }
            dp = n * (x * p1 - p0) / (x * x - 1.0);
            double dx = p1 / dp;
            x -= dx;
            if (fabs(dx) < 1e-16)
                break;
        }
        gl_node[i] = x;
        gl_weight[i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
}

static double weight_fn(double exponent, double theta)
{
    double c = cos(theta);
    return c <= 0.0 ? 0.0 : exp(exponent * log(c));
}

static double integrate(double exponent, double a, double b)
{
    double mid = 0.5 * (a + b), half = 0.5 * (b - a), sum = 0.0;
    for (int i = 0; i < GL_POINTS; i++)
        sum += gl_weight[i] * weight_fn(exponent, mid + half * gl_node[i]);
    return sum * half;
}

static void cdf_build(cdf_table *t, double exponent)
{
    pthread_once(&gl_once, gl_init);
    t->exponent = exponent;
    /* cos^e(θ) ≈ exp(-e θ²/2): past SIGMAS_KEPT widths it is below 1e-40. */
    double width = exponent > 0.0 ? 1.0 / sqrt(exponent) : M_PI;
    t->theta_max = fmin(M_PI / 2, SIGMAS_KEPT * width);
    t->panel = t->theta_max / PANELS;
    t->cum[0] = 0.0;
    for (int i = 0; i < PANELS; i++)
        t->cum[i + 1] = t->cum[i] + integrate(exponent, i * t->panel, (i + 1) * t->panel);
}

/* ∫_0^{asin x} cos^e(θ) dθ for x in [0, 1]. */
static double cdf_half(const cdf_table *t, double x)
{
    double theta = asin(fmin(fmax(x, 0.0), 1.0));
    if (theta >= t->theta_max)
        return t->cum[PANELS];
    size_t i = (size_t)(theta / t->panel);
    if (i >= PANELS)
        i = PANELS - 1;
    return t->cum[i] + integrate(t->exponent, i * t->panel, theta);
}

/* ∫_a^b x (1-x²)^((d-3)/2) dx for 0 <= a <= b <= 1. */
static double first_moment(uint32_t d, double a, double b)
{
    double e = 0.5 * (d - 1.0);
    double fa = a >= 1.0 ? 0.0 : exp(e * log1p(-a * a));
    double fb = b >= 1.0 ? 0.0 : exp(e * log1p(-b * b));
    return (fa - fb) / (d - 1.0);
}

/* Smallest x in [0,1] with cdf_half(x) >= target, by bisection. */
static double cdf_invert(const cdf_table *t, double target)
{
    double lo = 0.0, hi = 1.0;
    for (int it = 0; it < 80; it++) {
        double mid = 0.5 * (lo + hi);
        if (cdf_half(t, mid) < target)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static unsigned max_iterations(unsigned bits)
{
    return bits >= 8 ? 4000u : 200000u;
}

/* Solve the positive half: c[0..half) ascending, returns iterations used. */
static unsigned lloyd_max(uint32_t d, unsigned bits, double *c, double *mass_out,
                          cdf_table *density, cdf_table *compander)
{
    unsigned half = 1u << (bits - 1);
    double sigma = 1.0 / sqrt((double)d), total = density->cum[PANELS];
    double t[129];

    /* Companding start: cells of equal f^(1/3) mass, in θ the weight
     * cos^(d/3). */
    cdf_build(compander, d / 3.0);
    double ctotal = compander->cum[PANELS];
    for (unsigned i = 0; i < half; i++)
        c[i] = cdf_invert(compander, ctotal * (i + 0.5) / half);

    unsigned it = 0;
    for (; it < max_iterations(bits); it++) {
        t[0] = 0.0;
        for (unsigned i = 1; i < half; i++)
            t[i] = 0.5 * (c[i - 1] + c[i]);
        t[half] = 1.0;
        double moved = 0.0, prev_cdf = 0.0;
        for (unsigned i = 0; i < half; i++) {
            double next_cdf = i + 1 == half ? total : cdf_half(density, t[i + 1]);
            double mass = next_cdf - prev_cdf;
            double nc = mass > 0.0 ? first_moment(d, t[i], t[i + 1]) / mass : c[i];
            moved = fmax(moved, fabs(nc - c[i]));
            c[i] = nc;
            mass_out[i] = mass / total;
            prev_cdf = next_cdf;
        }
        if (moved < 1e-13 * sigma)
            break;
    }
    return it + 1;
}

/* The grid spans a little past the outer bounds; a cell is narrower than the
 * closest pair of bounds at 8 bits, so the count at a cell's start is at most
 * one step from the answer for any x in it. */
static void build_grid(tq_codebook *cb)
{
    unsigned nb = cb->levels - 1;
    double lo = cb->bound[0], hi = cb->bound[nb - 1];
    double width = (hi - lo) * 1.01 + 1e-30;
    lo -= (width - (hi - lo)) / 2;
    cb->grid_lo = (float)lo;
    cb->grid_scale = (float)(TQ_CODEBOOK_GRID / width);
    unsigned count = 0;
    for (unsigned g = 0; g < TQ_CODEBOOK_GRID; g++) {
        float start = cb->grid_lo + (float)g / cb->grid_scale;
        while (count < nb && cb->bound_f[count] < start)
            count++;
        cb->grid[g] = (uint8_t)count;
    }
}

void tq_codebook_quantize(const tq_codebook *cb, const float *x, size_t n, uint8_t *codes)
{
    if (cb->bits <= TQ_MAX_CODE_BITS) {
        tq_simd()->quantize(x, n, cb->bound_f, cb->levels - 1, codes);
        return;
    }
    const unsigned nb = cb->levels - 1;
    for (size_t i = 0; i < n; i++) {
        float cell = (x[i] - cb->grid_lo) * cb->grid_scale;
        /* NaN and out-of-range values clamp to an end cell; the steps below
         * then settle the exact count whatever cell was picked. */
        int g = cell >= 0.0f ? (cell < (float)TQ_CODEBOOK_GRID ? (int)cell : TQ_CODEBOOK_GRID - 1) : 0;
        unsigned c = cb->grid[g];
        while (c > 0 && !(cb->bound_f[c - 1] < x[i]))
            c--;
        while (c < nb && cb->bound_f[c] < x[i])
            c++;
        codes[i] = (uint8_t)c;
    }
}

static int codebook_compute(tq_codebook *cb, uint32_t d, unsigned bits)
{
    cdf_table *tables = tq_malloc(2 * sizeof(cdf_table));
    if (!tables)
        return TQ_ENOMEM;
    unsigned levels = 1u << bits, half = levels / 2;
    double c[128], mass[128];
    cdf_build(&tables[0], d - 2.0);
    cb->iterations = lloyd_max(d, bits, c, mass, &tables[0], &tables[1]);
    tq_free(tables);

    cb->d = d;
    cb->bits = bits;
    cb->levels = levels;
    double explained = 0.0;
    for (unsigned i = 0; i < half; i++) {
        cb->centroid[half + i] = c[i];
        cb->centroid[half - 1 - i] = -c[i];
        explained += mass[i] * c[i] * c[i];
    }
    for (unsigned i = 0; i + 1 < levels; i++)
        cb->bound[i] = 0.5 * (cb->centroid[i] + cb->centroid[i + 1]);
    for (unsigned i = 0; i < levels; i++)
        cb->centroid_f[i] = (float)cb->centroid[i];
    for (unsigned i = 0; i + 1 < levels; i++)
        cb->bound_f[i] = (float)cb->bound[i];
    /* E[X²] = 1/d on the sphere; a Lloyd-Max quantizer's error is what the
     * centroids do not explain. */
    cb->mse = 1.0 / d - explained;
    build_grid(cb);
    return TQ_OK;
}

struct tq_solved {
    struct tq_solved *next;
    uint32_t d;
    unsigned bits;
    max_align_t table[]; /* the solved table, `size` bytes */
};

const void *tq_solved_get(tq_solved_cache *cache, uint32_t d, unsigned bits, size_t size,
                          int (*solve)(void *table, uint32_t d, unsigned bits))
{
    pthread_mutex_lock(&cache->lock);
    const void *found = NULL;
    for (struct tq_solved *e = cache->head; e; e = e->next)
        if (e->d == d && e->bits == bits) {
            found = e->table;
            break;
        }
    if (!found) {
        /* Solved under the lock: concurrent first users of the same
         * table wait rather than solve it twice. */
        struct tq_solved *e = tq_calloc(1, sizeof(*e) + size);
        if (e && solve(e->table, d, bits) == TQ_OK) {
            e->d = d;
            e->bits = bits;
            e->next = cache->head;
            cache->head = e;
            found = e->table;
        } else {
            tq_free(e);
        }
    }
    pthread_mutex_unlock(&cache->lock);
    return found;
}

static int solve_codebook(void *table, uint32_t d, unsigned bits)
{
    return codebook_compute(table, d, bits);
}

const tq_codebook *tq_codebook_get(uint32_t d, unsigned bits)
{
    static tq_solved_cache cache = TQ_SOLVED_CACHE_INIT;
    if (d < TQ_MIN_DIM || d > TQ_MAX_DIM || bits < 1 || bits > TQ_MAX_BITS)
        return NULL;
    return tq_solved_get(&cache, d, bits, sizeof(tq_codebook), solve_codebook);
}

double tq_sphere_abs_mean(uint32_t d)
{
    int sign;
    return exp(lgamma_r(d / 2.0, &sign) - lgamma_r((d + 1) / 2.0, &sign)) / sqrt(M_PI);
}
