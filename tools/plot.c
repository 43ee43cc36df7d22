/*
 * SVG line plots for the evaluation report, written here so a report needs
 * no plotting package at run time.
 *
 * One plot: a frame with labelled axes (x optionally log10), grid lines at
 * "nice" ticks (1-2-5 steps; decades with 2x and 5x marks on a log axis),
 * one polyline with circle markers per series in a fixed colour cycle, and a
 * legend to the right of the frame. Points that cannot be drawn (NaN, or
 * x <= 0 on a log axis) are skipped, never written as NaN coordinates that
 * would make the file invalid. Text is XML-escaped.
 */
#include "tq_tools.h"

#include <math.h>

enum { WIDTH = 900, HEIGHT = 520, LEFT = 70, RIGHT = 300, TOP = 40, BOTTOM = 60 };

static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

static void xml_text(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        default:
            if ((unsigned char)*s >= 0x20)
                fputc(*s, out);
        }
    }
}

static bool drawable(const tool_plot *p, double x, double y)
{
    return isfinite(x) && isfinite(y) && (!p->log_x || x > 0);
}

/* Step between ticks for a linear span: 1, 2 or 5 times a power of ten,
 * giving about 5-10 ticks. */
static double nice_step(double span)
{
    double raw = span / 6.0, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

typedef struct axis {
    double lo, hi; /* in plotted units (log10 for a log axis) */
    bool log;
} axis;

static double axis_pos(const axis *a, double v, double from, double to)
{
    double u = a->log ? log10(v) : v;
    return from + (u - a->lo) / (a->hi - a->lo) * (to - from);
}

static void tick_label(char *buf, size_t cap, double v)
{
    if (fabs(v) >= 1e6)
        snprintf(buf, cap, "%.6gM", v / 1e6);
    else if (fabs(v) >= 1e4)
        snprintf(buf, cap, "%.6gk", v / 1e3);
    else if (fabs(v) < 1e-3 && v != 0)
        snprintf(buf, cap, "%.0e", v);
    else
        snprintf(buf, cap, "%.10g", v);
}

enum { MAX_TICKS = 256 };

typedef struct tick {
    double v;
    bool major;    /* a decade on a log axis: a darker grid line */
    bool labelled;
} tick;

/* The x axis's ticks. Log: every m x 10^e (m = 1..9), labelled at 1, 2 and
 * 5 (only the decades when the axis spans more than 3); linear: every nice
 * step, each labelled. */
static size_t x_ticks(const axis *a, tick *t)
{
    size_t n = 0;
    if (!a->log) {
        const double step = nice_step(a->hi - a->lo);
        for (double u = a->lo; u <= a->hi + 1e-9 && n < MAX_TICKS; u += step)
            t[n++] = (tick){.v = u, .labelled = true};
        return n;
    }
    for (double e = a->lo; e <= a->hi + 1e-9; e += 1)
        for (int m = 1; m <= 9 && n < MAX_TICKS; m++) {
            const double v = pow(10.0, e) * m;
            if (log10(v) > a->hi + 1e-9)
                break;
            t[n++] = (tick){.v = v, .major = m == 1,
                            .labelled = m == 1 || ((m == 2 || m == 5) && a->hi - a->lo <= 3)};
        }
    return n;
}

int tool_plot_svg(const tool_plot *p, FILE *out)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t s = 0; s < p->nseries; s++)
        for (size_t i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!drawable(p, x, y))
                continue;
            xmin = fmin(xmin, x), xmax = fmax(xmax, x);
            ymin = fmin(ymin, y), ymax = fmax(ymax, y);
        }
    if (!isfinite(xmin)) /* nothing to draw: an empty frame over [1, 10] x [0, 1] */
        xmin = 1, xmax = 10, ymin = 0, ymax = 1;
    axis ax = {.log = p->log_x}, ay = {0};
    if (ax.log) {
        ax.lo = floor(log10(xmin));
        ax.hi = ceil(log10(xmax));
        if (ax.hi <= ax.lo)
            ax.hi = ax.lo + 1;
    } else {
        double step = nice_step(xmax > xmin ? xmax - xmin : fabs(xmax) + 1);
        ax.lo = floor(xmin / step) * step;
        ax.hi = ceil(xmax / step) * step;
        if (ax.hi <= ax.lo)
            ax.hi = ax.lo + step;
    }
    double ystep = nice_step(ymax > ymin ? ymax - ymin : fabs(ymax) + 0.1);
    ay.lo = floor(ymin / ystep) * ystep;
    ay.hi = ceil(ymax / ystep) * ystep;
    /* Keep markers off the frame: a fifth of a step of room each side. */
    if (ymin - ay.lo < 0.2 * ystep && !(ymin >= 0 && ay.lo <= 0))
        ay.lo -= ystep;
    if (ay.hi - ymax < 0.2 * ystep)
        ay.hi += ystep;
    if (ay.hi <= ay.lo)
        ay.hi = ay.lo + ystep;
    if (p->y_max_one && ay.hi > 1.0 && ymax <= 1.0)
        ay.hi = 1.0;

    const double x0 = LEFT, x1 = WIDTH - RIGHT, y0 = HEIGHT - BOTTOM, y1 = TOP;
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            WIDTH, HEIGHT, WIDTH, HEIGHT);
    /* A long title gets a smaller font rather than running off the frame. */
    const size_t title_len = p->title ? strlen(p->title) : 0;
    fprintf(out, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"%d\">", (x0 + x1) / 2,
            title_len > 100 ? 11 : title_len > 75 ? 13 : 15);
    xml_text(out, p->title ? p->title : "");
    fputs("</text>\n", out);

    /* grid and ticks */
    tick ticks[MAX_TICKS];
    const size_t nticks = x_ticks(&ax, ticks);
    fputs("<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n", out);
    for (size_t i = 0; i < nticks; i++) {
        double px = axis_pos(&ax, ticks[i].v, x0, x1);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"%s/>\n", px, y0, px, y1,
                ticks[i].major ? " stroke=\"#c8c8c8\"" : "");
    }
    for (double v = ay.lo; v <= ay.hi + ystep * 1e-6; v += ystep) {
        double py = axis_pos(&ay, v, y0, y1);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x0, py, x1, py);
    }
    fputs("</g>\n<g text-anchor=\"middle\" fill=\"#333\">\n", out);
    char label[32];
    for (size_t i = 0; i < nticks; i++) {
        if (!ticks[i].labelled)
            continue;
        tick_label(label, sizeof(label), ticks[i].v);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", axis_pos(&ax, ticks[i].v, x0, x1), y0 + 16, label);
    }
    fputs("</g>\n<g text-anchor=\"end\" fill=\"#333\">\n", out);
    for (double v = ay.lo; v <= ay.hi + ystep * 1e-6; v += ystep) {
        tick_label(label, sizeof(label), fabs(v) < ystep * 1e-6 ? 0.0 : v);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x0 - 6, axis_pos(&ay, v, y0, y1) + 4, label);
    }
    fputs("</g>\n", out);
    fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", x0,
            y1, x1 - x0, y0 - y1);
    fprintf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, HEIGHT - 18);
    xml_text(out, p->x_label ? p->x_label : "");
    fprintf(out, "</text>\n<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">",
            (y0 + y1) / 2);
    xml_text(out, p->y_label ? p->y_label : "");
    fputs("</text>\n", out);

    /* series and legend */
    for (size_t s = 0; s < p->nseries; s++) {
        const tool_plot_series *se = &p->series[s];
        const char *colour = se->dashed ? "#555555" : colours[s % (sizeof(colours) / sizeof(*colours))];
        fprintf(out, "<g stroke=\"%s\" fill=\"%s\">\n<polyline fill=\"none\" stroke-width=\"%s\"%s points=\"", colour,
                colour, se->dashed ? "1.2" : "1.8", se->dashed ? " stroke-dasharray=\"5 4\"" : "");
        for (size_t i = 0; i < se->n; i++)
            if (drawable(p, se->x[i], se->y[i]))
                fprintf(out, "%.1f,%.1f ", axis_pos(&ax, se->x[i], x0, x1), axis_pos(&ay, se->y[i], y0, y1));
        fputs("\"/>\n", out);
        for (size_t i = 0; i < se->n && !se->dashed; i++)
            if (drawable(p, se->x[i], se->y[i]))
                fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>\n", axis_pos(&ax, se->x[i], x0, x1),
                        axis_pos(&ay, se->y[i], y0, y1));
        const double ly = y1 + 8 + 18.0 * (double)s;
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke-width=\"2\"%s/>\n", x1 + 14, ly,
                x1 + 38, ly, se->dashed ? " stroke-dasharray=\"5 4\"" : "");
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" stroke=\"none\" fill=\"#222\">", x1 + 44, ly + 4);
        xml_text(out, se->label ? se->label : "");
        fputs("</text>\n</g>\n", out);
    }
    fputs("</svg>\n", out);
    return ferror(out) ? -1 : 0;
}
