/* The fused MLP training step of model/fused.py in C: one call per step instead of
 * about forty numpy calls (each a few microseconds on a micro-batch of a hundred rows).
 *
 * Layout (the same as FusedMLP's flat float32 buffer): layer i has its weight
 * W_i (out_i x in_i, row-major) then its bias b_i (out_i); layers follow each other.
 * sizes[0] is the input width, sizes[i + 1] the output width of layer i; ReLU after
 * every layer but the last. Single-threaded, fixed order of operations: the same
 * input gives the same bits.
 *
 * Built and loaded by model/native.py (ctypes); no Python headers needed.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_LAYERS 64

/* Where a call's scratch (floats, for n rows) holds what: every layer's output, two
 * n x widest gradient buffers (wrt a layer's output, wrt its input), one in x out
 * transposed weight; end is the size. */
typedef struct {
    int64_t g, gin, wt, end;
} layout_t;

static layout_t layout(const int32_t *sizes, int32_t layers, int64_t n) {
    int64_t acts = 0, widest = 0, wmax = 0;
    for (int32_t i = 0; i <= layers; i++) {
        if (i > 0) acts += n * sizes[i];
        if (sizes[i] > widest) widest = sizes[i];
        if (i < layers && (int64_t)sizes[i] * sizes[i + 1] > wmax)
            wmax = (int64_t)sizes[i] * sizes[i + 1];
    }
    const layout_t at = {acts, acts + n * widest, acts + 2 * n * widest,
                         acts + 2 * n * widest + wmax};
    return at;
}

int64_t mlp_scratch_floats(const int32_t *sizes, int32_t layers, int64_t n) {
    return layout(sizes, layers, n).end;
}

/* Inner loops run along whichever side of a layer is longer, so that the compiler
 * vectorizes them: axpy over a row, or a dot product with eight partial sums (a float
 * reduction is not reordered by the compiler on its own). */
#define LANES 8

static inline float dot(const float *restrict a, const float *restrict b, int32_t n) {
    float acc[LANES] = {0};
    int32_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int32_t j = 0; j < LANES; j++) acc[j] += a[k + j] * b[k + j];
    float s = 0.0f;
    for (int32_t j = 0; j < LANES; j++) s += acc[j];
    for (; k < n; k++) s += a[k] * b[k];
    return s;
}

static inline void axpy(float *restrict y, float a, const float *restrict x, int32_t n) {
    for (int32_t k = 0; k < n; k++) y[k] += a * x[k];
}

/* z (n x out) = h (n x in) @ W^T + b, then ReLU if relu. wt: scratch of in x out. */
static void linear_forward(const float *restrict h, int64_t n, int32_t in,
                           const float *restrict w, const float *restrict b, int32_t out,
                           float *restrict z, float *restrict wt, int relu) {
    if (in >= out) {
        for (int64_t r = 0; r < n; r++)
            for (int32_t o = 0; o < out; o++)
                z[r * out + o] = b[o] + dot(h + r * in, w + (int64_t)o * in, in);
    } else {
        for (int32_t o = 0; o < out; o++)
            for (int32_t k = 0; k < in; k++) wt[(int64_t)k * out + o] = w[(int64_t)o * in + k];
        for (int64_t r = 0; r < n; r++) {
            float *zr = z + r * out;
            memcpy(zr, b, sizeof(float) * (size_t)out);
            for (int32_t k = 0; k < in; k++) axpy(zr, h[r * in + k], wt + (int64_t)k * out, out);
        }
    }
    if (relu)
        for (int64_t i = 0; i < n * out; i++) z[i] = z[i] > 0.0f ? z[i] : 0.0f;
}

/* Forward pass; returns a pointer to the logits (inside scratch). acts[i]: output
 * of layer i. */
static float *forward(const float *x, int64_t n, const int32_t *sizes, int32_t layers,
                      const float *flat, float *scratch, float **acts, float *wt) {
    const float *h = x;
    const float *p = flat;
    float *next = scratch;
    for (int32_t i = 0; i < layers; i++) {
        const int32_t in = sizes[i], out = sizes[i + 1];
        const float *w = p, *b = p + (int64_t)in * out;
        p = b + out;
        acts[i] = next;
        linear_forward(h, n, in, w, b, out, next, wt, i < layers - 1);
        h = next;
        next += n * out;
    }
    return acts[layers - 1];
}

/* A row's top class (in *top) and the sum over its classes of exp(l[c] - l[top]);
 * e, unless NULL, receives those exps. The top class's probability is 1 / sum. */
static inline float softmax_row(const float *l, int32_t classes, float *e, int32_t *top) {
    int32_t best = 0;
    for (int32_t c = 1; c < classes; c++)
        if (l[c] > l[best]) best = c;
    const float m = l[best];
    float s = 0.0f;
    for (int32_t c = 0; c < classes; c++) {
        const float v = expf(l[c] - m);
        if (e) e[c] = v;
        s += v;
    }
    *top = best;
    return s;
}

static void classify(const float *logits, int64_t n, int32_t classes, int64_t *cls,
                     float *conf) {
    for (int64_t r = 0; r < n; r++) {
        int32_t best;
        const float s = softmax_row(logits + r * classes, classes, NULL, &best);
        cls[r] = best;
        conf[r] = 1.0f / s; /* the top class has exp(0) = 1 */
    }
}

/* Running standardization (model/learner.py RunningScaler) of x (n x d), in place:
 * every row scaled by the moments of the count rows seen so far (float32 mean and
 * std = sqrt(m2 / (count - 1)) + 1e-6, as numpy computes them; count >= 2), then the
 * first n_new rows (raw) folded into mean and m2 (Chan's merge, in float64).
 * stats: 2 * d doubles of scratch. */
static void scaler_apply(float *restrict x, int64_t n, int64_t n_new, int32_t d, double *restrict mean,
                  double *restrict m2, int64_t count, double *restrict stats) {
    double *bmean = stats, *bm2 = stats + d;
    if (n_new > 0) {
        for (int32_t j = 0; j < d; j++) bmean[j] = bm2[j] = 0.0;
        for (int64_t r = 0; r < n_new; r++)
            for (int32_t j = 0; j < d; j++) bmean[j] += (double)x[r * d + j];
        for (int32_t j = 0; j < d; j++) bmean[j] /= (double)n_new;
        for (int64_t r = 0; r < n_new; r++)
            for (int32_t j = 0; j < d; j++) {
                const double e = (double)x[r * d + j] - bmean[j];
                bm2[j] += e * e;
            }
    }
    for (int32_t j = 0; j < d; j++) {
        const float mu = (float)mean[j];
        const float sd = (float)(sqrt(m2[j] / (double)(count - 1)) + 1e-6);
        for (int64_t r = 0; r < n; r++) x[r * d + j] = (x[r * d + j] - mu) / sd;
    }
    if (n_new > 0) {
        const double na = (double)count, nb = (double)n_new, total = na + nb;
        for (int32_t j = 0; j < d; j++) {
            const double delta = bmean[j] - mean[j];
            mean[j] = mean[j] + delta * nb / total;
            m2[j] = m2[j] + bm2[j] + delta * delta * na * nb / total;
        }
    }
}

/* Class and probability of each row; with mean != NULL the rows (x is overwritten)
 * are first scaled by the running moments (scaler_apply, nothing folded). */
int32_t mlp_predict(float *x, int64_t n, const int32_t *sizes, int32_t layers,
                    const float *flat, float *scratch, int64_t *cls, float *conf,
                    double *mean, double *m2, int64_t count, double *stats) {
    float *acts[MAX_LAYERS];
    if (layers > MAX_LAYERS) return -2;
    if (mean) scaler_apply(x, n, 0, sizes[0], mean, m2, count, stats);
    const layout_t at = layout(sizes, layers, n);
    const float *logits = forward(x, n, sizes, layers, flat, scratch, acts, scratch + at.wt);
    classify(logits, n, sizes[layers], cls, conf);
    return 0;
}

/* Prequential step on n rows: class and probability of every row (before the step),
 * the mean cross-entropy in *loss, and scale times its gradient added to grad (same
 * layout as flat). With mean != NULL the rows (x is overwritten) are first scaled by
 * the running moments, and the first fold rows folded into them (scaler_apply).
 * Returns 0; -1 when a label is out of range, -2 with too many layers (nothing is
 * changed then). */
int32_t mlp_forward_backward(float *x, const int64_t *y, int64_t n, const int32_t *sizes,
                             int32_t layers, const float *flat, float *grad, float scale,
                             float *scratch, int64_t *cls, float *conf, double *loss,
                             double *mean, double *m2, int64_t count, int64_t fold,
                             double *stats) {
    const int32_t classes = sizes[layers];
    float *acts[MAX_LAYERS];
    if (layers > MAX_LAYERS) return -2;
    for (int64_t r = 0; r < n; r++)
        if (y[r] < 0 || y[r] >= classes) return -1;
    if (mean) scaler_apply(x, n, fold, sizes[0], mean, m2, count, stats);
    const layout_t at = layout(sizes, layers, n);
    float *g = scratch + at.g, *gin = scratch + at.gin, *wt = scratch + at.wt;
    const float *logits = forward(x, n, sizes, layers, flat, scratch, acts, wt);

    /* per row: class and probability (as classify), and the softmax cross-entropy's
     * gradient g = (softmax - onehot) * scale / n */
    double total = 0.0;
    const float gs = scale / (float)n;
    for (int64_t r = 0; r < n; r++) {
        const float *l = logits + r * classes;
        float *gr = g + r * classes;
        int32_t best;
        const float s = softmax_row(l, classes, gr, &best);
        cls[r] = best;
        conf[r] = 1.0f / s;
        total += (double)logf(s) - (double)(l[y[r]] - l[best]);
        const float inv = 1.0f / s;
        for (int32_t c = 0; c < classes; c++) gr[c] *= inv;
        gr[y[r]] -= 1.0f;
        for (int32_t c = 0; c < classes; c++) gr[c] *= gs;
    }
    *loss = total / (double)n;

    /* backward, last layer first */
    int64_t offset = 0;
    int64_t offsets[MAX_LAYERS];
    for (int32_t i = 0; i < layers; i++) {
        offsets[i] = offset;
        offset += (int64_t)sizes[i] * sizes[i + 1] + sizes[i + 1];
    }
    for (int32_t i = layers - 1; i >= 0; i--) {
        const int32_t in = sizes[i], out = sizes[i + 1];
        const float *input = i ? acts[i - 1] : x;
        const float *w = flat + offsets[i];
        float *gw = grad + offsets[i], *gb = gw + (int64_t)in * out;
        /* dW (out x in) = g^T @ input, accumulated row by row along the longer side */
        if (in >= out) {
            for (int64_t r = 0; r < n; r++)
                for (int32_t o = 0; o < out; o++)
                    axpy(gw + (int64_t)o * in, g[r * out + o], input + r * in, in);
        } else {
            memset(wt, 0, sizeof(float) * (size_t)in * (size_t)out);
            for (int64_t r = 0; r < n; r++)
                for (int32_t k = 0; k < in; k++)
                    axpy(wt + (int64_t)k * out, input[r * in + k], g + r * out, out);
            for (int32_t o = 0; o < out; o++)
                for (int32_t k = 0; k < in; k++)
                    gw[(int64_t)o * in + k] += wt[(int64_t)k * out + o];
        }
        for (int64_t r = 0; r < n; r++) axpy(gb, 1.0f, g + r * out, out);
        if (i == 0) break;
        /* gradient wrt the input: g @ W, through the ReLU that made it */
        for (int64_t r = 0; r < n; r++) {
            const float *gr = g + r * out, *ar = input + r * in;
            float *hr = gin + r * in;
            memset(hr, 0, sizeof(float) * (size_t)in);
            for (int32_t o = 0; o < out; o++) axpy(hr, gr[o], w + (int64_t)o * in, in);
            for (int32_t k = 0; k < in; k++) hr[k] = ar[k] > 0.0f ? hr[k] : 0.0f;
        }
        float *swap = g;
        g = gin;
        gin = swap;
    }
    return 0;
}

/* Adam (torch's rule, with bias correction and L2 weight decay), then grad = 0. */
void adam_step(float *flat, float *grad, float *m, float *v, int64_t count, float lr_bias1,
               float beta1, float beta2, float sqrt_bias2, float eps, float wd) {
    const float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    for (int64_t i = 0; i < count; i++) {
        const float g = wd != 0.0f ? grad[i] + wd * flat[i] : grad[i];
        m[i] += a1 * (g - m[i]);
        v[i] = v[i] * beta2 + a2 * g * g;
        const float denom = sqrtf(v[i]) / sqrt_bias2 + eps;
        flat[i] -= lr_bias1 * m[i] / denom;
        grad[i] = 0.0f;
    }
}

/* SGD with optional momentum (no dampening) and L2 weight decay, then grad = 0.
 * first: the momentum buffer starts as the gradient (torch's rule). */
void sgd_step(float *flat, float *grad, float *buf, int64_t count, float lr, float momentum,
              float wd, int32_t first) {
    for (int64_t i = 0; i < count; i++) {
        float g = wd != 0.0f ? grad[i] + wd * flat[i] : grad[i];
        if (buf) {
            buf[i] = first ? g : buf[i] * momentum + g;
            g = buf[i];
        }
        flat[i] -= lr * g;
        grad[i] = 0.0f;
    }
}

/* Prequential learning of n rows in steps of `step` rows, each followed by an optimizer
 * step: the loop FusedMLP.step runs from Python (forward_backward, then adam_step or
 * sgd_step), in one call, with the same arithmetic, so it gives the same bits. cls and
 * conf: every row's class and probability before its step; *loss_sum: the steps' mean
 * losses summed. With mean != NULL every step's rows are scaled by the moments of the
 * count rows before them and then folded in (as mlp_forward_backward with fold = the
 * step's rows). kind 0: Adam, whose step counter was t0 before the first step (t0 >= 1:
 * its moments m, v exist); kind 1: SGD, with momentum into m (NULL without, else a
 * started buffer). lr, betas, eps, weight decay and momentum come as Python's floats
 * (doubles): the bias corrections are computed in double, then rounded to float, as
 * Python computes and ctypes passes them. x is overwritten (scaled). Returns the
 * number of steps; -1 when a label is out of range, -2 with too many layers (then
 * nothing is changed). */
int64_t mlp_prequential_steps(float *x, const int64_t *y, int64_t n, int64_t step,
                              const int32_t *sizes, int32_t layers, float *flat, float *grad,
                              float *scratch, int64_t *cls, float *conf, double *loss_sum,
                              double *mean, double *m2, int64_t count, double *stats,
                              int32_t kind, double lr, double beta1, double beta2, double eps,
                              double wd, double momentum, int64_t t0, float *m, float *v,
                              int64_t params) {
    const int32_t classes = sizes[layers], d = sizes[0];
    if (layers > MAX_LAYERS) return -2;
    for (int64_t r = 0; r < n; r++)
        if (y[r] < 0 || y[r] >= classes) return -1;
    double total = 0.0;
    int64_t steps = 0;
    for (int64_t r = 0; r < n; r += step) {
        const int64_t k = n - r < step ? n - r : step;
        double loss;
        mlp_forward_backward(x + r * d, y + r, k, sizes, layers, flat, grad, 1.0f, scratch,
                             cls + r, conf + r, &loss, mean, m2, count, k, stats);
        if (mean) count += k;
        total += loss;
        steps++;
        if (kind == 0) {
            const double t = (double)(t0 + steps);
            adam_step(flat, grad, m, v, params, (float)(lr / (1.0 - pow(beta1, t))),
                      (float)beta1, (float)beta2, (float)sqrt(1.0 - pow(beta2, t)),
                      (float)eps, (float)wd);
        } else {
            sgd_step(flat, grad, m, params, (float)lr, (float)momentum, (float)wd, 0);
        }
    }
    *loss_sum = total;
    return steps;
}
