/* ADWIN (Bifet and Gavalda, 2007, the ADWIN2 form with an exponential histogram) over
 * a whole batch of values in one call; model/adwin.py keeps the state and holds the
 * same algorithm in Python (the reference, and the fallback without a compiler).
 *
 * The window is a histogram of buckets: row r holds up to max_buckets buckets of 2^r
 * values each (their sum), oldest first; the newest values are in row 0. A row that overflows passes its two oldest
 * buckets, merged, to the next row. Every `clock` values (once the window holds more
 * than `grace` values) every boundary between buckets splits the window into an older
 * part W0 and a newer W1, and the split is a change when both hold at least
 * `min_window` values and their means differ by more than
 *     eps = sqrt(2 m var dp) + 2/3 dp m,  m = 1/(n0 - min_window + 1) + 1/(n1 - min_window + 1),
 * dp = ln(2 ln(width) / delta), var the window's variance: the first such split is an
 * alarm, and the detector starts afresh (an empty window), as the other detectors here
 * do after an alarm.
 *
 * The window's variance comes from its sum and sum of squares (values in [0, 1]: no
 * cancellation to fear); a bucket is its sum alone, since the window never loses its
 * oldest buckets (an alarm empties it).
 *
 * State: ints [rows in use, values since the start, buckets in each of ADWIN_ROWS
 * rows]; doubles [width, sum, sum of squares, then the buckets' sums (ADWIN_ROWS rows
 * of max_buckets + 1 slots)].
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ADWIN_ROWS 64

static void adwin_reset(int64_t *si, double *sd, int32_t slots) {
    memset(si, 0, sizeof(int64_t) * (2 + ADWIN_ROWS));
    memset(sd, 0, sizeof(double) * (3 + (size_t)ADWIN_ROWS * (size_t)slots));
}

static void adwin_insert(int64_t *si, double *sd, int32_t slots, double x) {
    int64_t *count = si + 2;
    double *sums = sd + 3;
    if (si[0] == 0) si[0] = 1;
    sums[count[0]++] = x;
    sd[0] += 1.0;
    sd[1] += x;
    sd[2] += x * x;
    for (int32_t r = 0; r < ADWIN_ROWS - 1 && count[r] == slots; r++) {
        double *row = sums + (int64_t)r * slots;
        sums[(int64_t)(r + 1) * slots + count[r + 1]++] = row[0] + row[1];
        if (si[0] < r + 2) si[0] = r + 2;
        memmove(row, row + 2, sizeof(double) * (size_t)(slots - 2));
        row[slots - 2] = row[slots - 1] = 0.0;
        count[r] -= 2;
    }
}

/* 1 and the split's difference of means in *stat when some split is a change: the
 * splits are laid out first (values and sum of the older part at each boundary, oldest
 * first), then tested in one loop without branches, which the compiler vectorizes. */
static int adwin_check(const int64_t *si, const double *sd, int32_t slots, double delta,
                       double min_window, double *stat) {
    const int64_t *count = si + 2;
    const double *sums = sd + 3;
    const double width = sd[0], total = sd[1], dp = log(2.0 * log(width) / delta);
    const double mean = total / width, var = sd[2] / width - mean * mean;
    double n0s[ADWIN_ROWS * 17], u0s[ADWIN_ROWS * 17]; /* slots <= 17 (adwin.py checks) */
    int64_t splits = 0;
    double n0 = 0.0, u0 = 0.0;
    for (int64_t r = si[0] - 1; r >= 0; r--) {
        const double n = ldexp(1.0, (int)r);
        for (int64_t k = 0; k < count[r]; k++) {
            n0 += n;
            u0 += sums[r * slots + k];
            n0s[splits] = n0;
            u0s[splits++] = u0;
        }
    }
    splits--; /* the last boundary is the window's end: no split */
    const double c = 2.0 / 3.0 * dp, e = 2.0 * var * dp;
    int64_t first = -1;
    for (int64_t k = splits - 1; k >= 0; k--) {
        /* gap > eps, multiplied through by n0 n1 a b (all > 0): no division */
        const double m0 = n0s[k], m1 = width - m0, v0 = u0s[k], v1 = total - v0;
        const double a = m0 - min_window + 1.0, b = m1 - min_window + 1.0, p = m0 * m1;
        const double d = fabs(v0 * m1 - v1 * m0), over = d * a * b - c * (a + b) * p;
        const int hit = (m0 >= min_window) & (m1 >= min_window) & (over > 0.0) &
                        (over * over > e * (a + b) * a * b * p * p);
        first = hit ? k : first;
    }
    if (first < 0) return 0;
    const double m0 = n0s[first], m1 = width - m0;
    *stat = fabs(u0s[first] * m1 - (total - u0s[first]) * m0) / (m0 * m1);
    return 1;
}

/* Add values[0..n) in order; the positions of the alarms in drifts (and their
 * statistics in stats), at most n of them; returns how many. */
int64_t adwin_update_many(const double *values, int64_t n, int64_t *si, double *sd,
                          int32_t max_buckets, int64_t clock, double grace, double min_window,
                          double delta, int64_t *drifts, double *stats) {
    const int32_t slots = max_buckets + 1;
    int64_t found = 0;
    for (int64_t i = 0; i < n; i++) {
        adwin_insert(si, sd, slots, values[i]);
        si[1]++;
        double stat;
        if (si[1] % clock == 0 && sd[0] > grace &&
            adwin_check(si, sd, slots, delta, min_window, &stat)) {
            drifts[found] = i;
            stats[found] = stat;
            found++;
            adwin_reset(si, sd, slots);
        }
    }
    return found;
}
