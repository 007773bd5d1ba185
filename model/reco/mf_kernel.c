/* Prequential biased matrix factorization over a stream of (user, item, rating).
 *
 * mf_prequential walks n events in order. Each event's prediction uses the
 * parameters as they were before it (written to out[e]); then, if the event has a
 * rating (not NaN) and learning is on, it learns from it:
 *
 *   prediction = mean + bu[u] + bi[i] + dot(P[u], Q[i])   (clipped to [lo, hi])
 *   error      = rating - prediction (unclipped)
 *
 * The global mean is a running mean, or with mean_decay > 0 an exponentially
 * weighted one. Biases and factor rows learn with row-wise RMSProp: a row's
 * step is lr * gradient / sqrt(v + eps), v a decaying mean of the row's squared
 * gradient (a moving average, so the step size does not shrink for good and the
 * model keeps following drifting tastes). L2 regularization reg on biases and
 * factors. Deterministic: no randomness here (rows are initialized by the caller).
 */
#include <math.h>
#include <stdint.h>

static inline double clampd(double x, double lo, double hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

int64_t mf_prequential(int64_t n, const int64_t *users, const int64_t *items,
                       const float *ratings, double *mean_state, double mean_decay,
                       float *bu, float *bi, float *P, float *Q, int32_t k,
                       float *vu, float *vi, float *vbu, float *vbi, float lr,
                       float bias_lr, float reg, float beta, float eps, float lo,
                       float hi, int32_t learn, float *out) {
  int64_t learned = 0;
  for (int64_t e = 0; e < n; e++) {
    const int64_t u = users[e], i = items[e];
    float *pu = P + u * (int64_t)k;
    float *qi = Q + i * (int64_t)k;
    double dot = 0.0;
    for (int32_t f = 0; f < k; f++) dot += (double)pu[f] * (double)qi[f];
    const double raw = mean_state[1] + bu[u] + bi[i] + dot;
    out[e] = (float)clampd(raw, lo, hi);
    const float r = ratings[e];
    if (!learn || isnan(r)) continue;
    const double err = (double)r - raw;
    /* the global mean: running (weight = count) or exponentially weighted */
    if (mean_decay > 0.0) {
      mean_state[0] = mean_state[0] * (1.0 - mean_decay) + 1.0;
    } else {
      mean_state[0] += 1.0;
    }
    mean_state[1] += ((double)r - mean_state[1]) / mean_state[0];
    /* biases: gradient of 0.5 err^2 + 0.5 reg b^2 is -(err - reg b) */
    const double gbu = -(err - reg * bu[u]);
    const double gbi = -(err - reg * bi[i]);
    vbu[u] = beta * vbu[u] + (1.0f - beta) * (float)(gbu * gbu);
    vbi[i] = beta * vbi[i] + (1.0f - beta) * (float)(gbi * gbi);
    bu[u] -= (float)(bias_lr * gbu / sqrt((double)vbu[u] + eps));
    bi[i] -= (float)(bias_lr * gbi / sqrt((double)vbi[i] + eps));
    /* factors: row-wise RMSProp on the mean squared gradient of the row */
    double su = 0.0, si = 0.0;
    for (int32_t f = 0; f < k; f++) {
      const double gu = -(err * qi[f] - reg * pu[f]);
      const double gi = -(err * pu[f] - reg * qi[f]);
      su += gu * gu;
      si += gi * gi;
    }
    vu[u] = beta * vu[u] + (1.0f - beta) * (float)(su / k);
    vi[i] = beta * vi[i] + (1.0f - beta) * (float)(si / k);
    const double stepu = lr / sqrt((double)vu[u] + eps);
    const double stepi = lr / sqrt((double)vi[i] + eps);
    for (int32_t f = 0; f < k; f++) {
      const double p = pu[f], q = qi[f];
      pu[f] = (float)(p + stepu * (err * q - reg * p));
      qi[f] = (float)(q + stepi * (err * p - reg * q));
    }
    learned++;
  }
  return learned;
}
