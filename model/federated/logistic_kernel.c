/* Prequential logistic regression for many devices at once, event by event.
 *
 * logistic_prequential walks n events in order. Event e belongs to device row
 * rows[e] of the weight matrix w (devices x (d + 1): d weights, then the bias). Its
 * class is predicted from the row as it is (out[e]); then, unless the device has
 * spent its budget of steps (budget >= 0), the row takes one SGD step on the log
 * loss: w -= lr * (p - y) * [x, 1]. steps[r] and learned[r] count the steps. Built
 * like the other kernels (model.learn.native); the numpy loop in
 * model/federated/rounds.py does the same where there is no compiler.
 */
#include <math.h>
#include <stdint.h>

void logistic_prequential(int64_t n, int32_t d, const int64_t *rows, const double *x,
                          const int64_t *y, double *w, int64_t *steps, int64_t budget,
                          double lr, int64_t *out, int64_t *learned) {
  for (int64_t e = 0; e < n; e++) {
    const int64_t r = rows[e];
    double *wr = w + r * (int64_t)(d + 1);
    const double *xe = x + e * (int64_t)d;
    double z = wr[d];
    for (int32_t f = 0; f < d; f++) z += wr[f] * xe[f];
    if (z > 30.0) z = 30.0;
    if (z < -30.0) z = -30.0;
    const double p = 1.0 / (1.0 + exp(-z));
    out[e] = p > 0.5 ? 1 : 0;
    if (budget >= 0 && steps[r] >= budget) continue;
    const double g = p - (double)y[e];
    for (int32_t f = 0; f < d; f++) wr[f] -= lr * g * xe[f];
    wr[d] -= lr * g;
    steps[r] += 1;
    learned[r] += 1;
  }
}
