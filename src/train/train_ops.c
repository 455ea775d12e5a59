/*
 * train_ops.c -- fp32 scalar forward / backward pairs (see train_ops.h for the contract:
 * backward halves accumulate). Sums run in float in a fixed order, so results are a pure
 * function of the inputs (activation recomputation gives bitwise identical gradients).
 */
#include "train/train_ops.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ embedding (get_rows) */

void l3c_tr_embedding_fwd(const float *table, int64_t D, const int32_t *ids, int64_t N, float *out) {
    for (int64_t n = 0; n < N; n++) memcpy(out + n * D, table + (int64_t)ids[n] * D, (size_t)D * sizeof(float));
}

void l3c_tr_embedding_bwd(float *dtable, int64_t D, const int32_t *ids, int64_t N, const float *dout) {
    for (int64_t n = 0; n < N; n++) {
        float *dr = dtable + (int64_t)ids[n] * D;
        const float *g = dout + n * D;
        for (int64_t i = 0; i < D; i++) dr[i] += g[i];
    }
}

/* ------------------------------------------------------------------ rmsnorm */

void l3c_tr_rmsnorm_fwd(const float *x, const float *w, int64_t N, int64_t D, float eps, float *y,
                        float *rstd) {
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D;
        float *yr = y + n * D;
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float r = 1.0f / sqrtf((float)(ss / (double)D) + eps);
        for (int64_t i = 0; i < D; i++) yr[i] = (xr[i] * r) * w[i];
        rstd[n] = r;
    }
}

void l3c_tr_rmsnorm_bwd(const float *x, const float *w, const float *rstd, const float *dy, int64_t N,
                        int64_t D, float *dx, float *dw) {
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D, *g = dy + n * D;
        float *dxr = dx + n * D;
        const float r = rstd[n];
        float dot = 0.0f; /* sum_i dy_i w_i x_i */
        for (int64_t i = 0; i < D; i++) dot += g[i] * w[i] * xr[i];
        const float c = dot * r * r / (float)D;
        for (int64_t i = 0; i < D; i++) {
            dxr[i] += r * (g[i] * w[i] - xr[i] * c);
            if (dw) dw[i] += g[i] * xr[i] * r;
        }
    }
}

/* ------------------------------------------------------------------ matmul */

void l3c_tr_matmul_fwd(const float *x, const float *W, int64_t N, int64_t n_in, int64_t n_out, float *y) {
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * n_in;
        for (int64_t o = 0; o < n_out; o++) {
            const float *wr = W + o * n_in;
            float s = 0.0f;
            for (int64_t i = 0; i < n_in; i++) s += wr[i] * xr[i];
            y[n * n_out + o] = s;
        }
    }
}

void l3c_tr_matmul_bwd(const float *x, const float *W, const float *dy, int64_t N, int64_t n_in,
                       int64_t n_out, float *dx, float *dW) {
    if (dx)
        for (int64_t n = 0; n < N; n++) { /* dx[n,:] += sum_o dy[n,o] W[o,:] */
            float *dxr = dx + n * n_in;
            for (int64_t o = 0; o < n_out; o++) {
                const float a = dy[n * n_out + o];
                const float *wr = W + o * n_in;
                for (int64_t i = 0; i < n_in; i++) dxr[i] += a * wr[i];
            }
        }
    if (dW)
        for (int64_t o = 0; o < n_out; o++) { /* dW[o,:] += sum_n dy[n,o] x[n,:] */
            float *dwr = dW + o * n_in;
            for (int64_t n = 0; n < N; n++) {
                const float a = dy[n * n_out + o];
                const float *xr = x + n * n_in;
                for (int64_t i = 0; i < n_in; i++) dwr[i] += a * xr[i];
            }
        }
}

/* ------------------------------------------------------------------ rope */

void l3c_tr_rope_tables(const int32_t *pos, int64_t N, int n_rot, float theta, const float *rope_freqs,
                        float *cos_t, float *sin_t) {
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)theta, -2.0 * i / (double)n_rot);
        if (rope_freqs) f /= (double)rope_freqs[i];
        for (int64_t n = 0; n < N; n++) {
            double a = (double)pos[n] * f;
            cos_t[n * half + i] = (float)cos(a);
            sin_t[n * half + i] = (float)sin(a);
        }
    }
}

/* (x0, x1) -> (x0 c - x1 s, x0 s + x1 c); sign -1 rotates by -angle (the transpose). */
static void rope_rotate(float *x, int64_t N, int n_heads, int hd, int n_rot, const float *cos_t,
                        const float *sin_t, float sign) {
    const int half = n_rot / 2;
    for (int64_t n = 0; n < N; n++) {
        const float *c = cos_t + n * half, *s = sin_t + n * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (n * n_heads + h) * (int64_t)hd;
            for (int i = 0; i < half; i++) {
                const float x0 = v[2 * i], x1 = v[2 * i + 1], si = sign * s[i];
                v[2 * i] = x0 * c[i] - x1 * si;
                v[2 * i + 1] = x0 * si + x1 * c[i];
            }
        }
    }
}

void l3c_tr_rope_fwd(float *x, int64_t N, int n_heads, int hd, int n_rot, const float *cos_t,
                     const float *sin_t) {
    rope_rotate(x, N, n_heads, hd, n_rot, cos_t, sin_t, 1.0f);
}

void l3c_tr_rope_bwd(float *dx, int64_t N, int n_heads, int hd, int n_rot, const float *cos_t,
                     const float *sin_t) {
    rope_rotate(dx, N, n_heads, hd, n_rot, cos_t, sin_t, -1.0f);
}

/* ------------------------------------------------------------------ causal GQA attention */

void l3c_tr_attention_fwd_part(const float *q, const float *k, const float *v, const int32_t *pos, int64_t b,
                               int kh, int64_t T, int n_head, int n_head_kv, int hd, float *att, float *out) {
    const int group = n_head / n_head_kv;
    const int64_t qs = (int64_t)n_head * hd, ks = (int64_t)n_head_kv * hd; /* row strides */
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int64_t t = 0; t < T; t++) {
            const float *qr = q + (b * T + t) * qs + (int64_t)h * hd;
            float *p = att + ((b * n_head + h) * T + t) * T; /* [T] */
            const int64_t j0 = t - (pos ? pos[b * T + t] : t); /* first key of t's segment */
            float mx = -INFINITY;
            for (int64_t j = 0; j < j0; j++) p[j] = 0.0f;
            for (int64_t j = j0; j <= t; j++) {
                const float *kr = k + (b * T + j) * ks + (int64_t)kh * hd;
                float s = 0.0f;
                for (int d = 0; d < hd; d++) s += qr[d] * kr[d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            float sum = 0.0f;
            for (int64_t j = j0; j <= t; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            const float inv = 1.0f / sum;
            for (int64_t j = j0; j <= t; j++) p[j] *= inv;
            for (int64_t j = t + 1; j < T; j++) p[j] = 0.0f;
            float *o = out + (b * T + t) * qs + (int64_t)h * hd;
            for (int d = 0; d < hd; d++) o[d] = 0.0f;
            for (int64_t j = j0; j <= t; j++) {
                const float *vr = v + (b * T + j) * ks + (int64_t)kh * hd;
                for (int d = 0; d < hd; d++) o[d] += p[j] * vr[d];
            }
        }
}

void l3c_tr_attention_fwd(const float *q, const float *k, const float *v, const int32_t *pos, int64_t B,
                          int64_t T, int n_head, int n_head_kv, int hd, float *att, float *out) {
    for (int64_t b = 0; b < B; b++)
        for (int kh = 0; kh < n_head_kv; kh++)
            l3c_tr_attention_fwd_part(q, k, v, pos, b, kh, T, n_head, n_head_kv, hd, att, out);
}

void l3c_tr_attention_bwd_part(const float *q, const float *k, const float *v, const float *att,
                               const float *dout, int64_t b, int kh, int64_t T, int n_head, int n_head_kv,
                               int hd, float *dq, float *dk, float *dv) {
    const int group = n_head / n_head_kv;
    const int64_t qs = (int64_t)n_head * hd, ks = (int64_t)n_head_kv * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    /* dk, dv of kv head kh sum over the group's query heads */
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int64_t t = 0; t < T; t++) {
            const float *p = att + ((b * n_head + h) * T + t) * T;
            const float *qr = q + (b * T + t) * qs + (int64_t)h * hd;
            const float *dor = dout + (b * T + t) * qs + (int64_t)h * hd;
            float *dqr = dq + (b * T + t) * qs + (int64_t)h * hd;
            /* dp_j = dout . v_j; softmax backward ds_j = p_j (dp_j - sum_i p_i dp_i) */
            float pdp = 0.0f;
            for (int64_t j = 0; j <= t; j++) {
                const float *vr = v + (b * T + j) * ks + (int64_t)kh * hd;
                float dp = 0.0f;
                for (int d = 0; d < hd; d++) dp += dor[d] * vr[d];
                pdp += p[j] * dp;
            }
            for (int64_t j = 0; j <= t; j++) {
                const float *vr = v + (b * T + j) * ks + (int64_t)kh * hd;
                const float *kr = k + (b * T + j) * ks + (int64_t)kh * hd;
                float *dvr = dv + (b * T + j) * ks + (int64_t)kh * hd;
                float *dkr = dk + (b * T + j) * ks + (int64_t)kh * hd;
                float dp = 0.0f;
                for (int d = 0; d < hd; d++) dp += dor[d] * vr[d];
                const float ds = p[j] * (dp - pdp) * scale;
                for (int d = 0; d < hd; d++) {
                    dvr[d] += p[j] * dor[d];
                    dqr[d] += ds * kr[d];
                    dkr[d] += ds * qr[d];
                }
            }
        }
}

void l3c_tr_attention_bwd(const float *q, const float *k, const float *v, const float *att,
                          const float *dout, int64_t B, int64_t T, int n_head, int n_head_kv, int hd,
                          float *dq, float *dk, float *dv) {
    for (int64_t b = 0; b < B; b++)
        for (int kh = 0; kh < n_head_kv; kh++)
            l3c_tr_attention_bwd_part(q, k, v, att, dout, b, kh, T, n_head, n_head_kv, hd, dq, dk, dv);
}

/* ------------------------------------------------------------------ swiglu */

void l3c_tr_swiglu_fwd(const float *g, const float *u, int64_t n, float *h) {
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void l3c_tr_swiglu_bwd(const float *g, const float *u, const float *dh, int64_t n, float *dg, float *du) {
    for (int64_t i = 0; i < n; i++) {
        const float sg = 1.0f / (1.0f + expf(-g[i])); /* sigmoid */
        const float silu = g[i] * sg;
        dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] += dh[i] * silu;
    }
}

/* ------------------------------------------------------------------ residual add */

void l3c_tr_add_fwd(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void l3c_tr_add_bwd(const float *dx, int64_t n, float *dy) {
    for (int64_t i = 0; i < n; i++) dy[i] += dx[i];
}

/* ------------------------------------------------------------------ output cross-entropy */

double l3c_tr_xent_fwd(const float *logits, const int32_t *targets, int64_t N, int64_t V, float *lse,
                       int64_t *n_valid) {
    double loss = 0.0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++) {
        lse[n] = 0.0f;
        if (targets[n] < 0) continue;
        const float *z = logits + n * V;
        float mx = z[0];
        for (int64_t i = 1; i < V; i++)
            if (z[i] > mx) mx = z[i];
        double s = 0.0;
        for (int64_t i = 0; i < V; i++) s += exp((double)(z[i] - mx));
        lse[n] = mx + (float)log(s);
        loss += (double)lse[n] - (double)z[targets[n]];
        cnt++;
    }
    *n_valid = cnt;
    return loss;
}

void l3c_tr_xent_bwd(const float *logits, const float *lse, const int32_t *targets, int64_t N, int64_t V,
                     float scale, float *dlogits) {
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * V;
        float *dz = dlogits + n * V;
        if (targets[n] < 0) {
            memset(dz, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int64_t i = 0; i < V; i++) dz[i] = scale * expf(z[i] - lse[n]);
        dz[targets[n]] -= scale;
    }
}
