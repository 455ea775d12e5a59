/*
 * backend_dist.c -- the backend of a tensor-split model (shard.h): every op is the CPU
 * backend's on this rank's share, and three of them add the split's messages, so forward.c's
 * op sequence stays the one definition of the block:
 *   get_rows   first op of a batch: rank 0's batch (token count and a hash of the ids) is
 *              broadcast and compared, so ranks that were fed different batches stop with a
 *              message instead of computing garbage (16 bytes per batch);
 *   matmul     attn_output and ffn_down (L3C_WDIST_SUM): the rank's partial sums are
 *              all-reduced, T x n_embd floats each, twice per layer (Megatron);
 *              the output head (L3C_WDIST_GATHER): every rank's vocabulary slice is gathered on
 *              rank 0, one row at a time into the logits (n_vocab floats per row); the other
 *              ranks' logits are zeros (they follow rank 0's sampled tokens, llama3c.h).
 * Every other op touches only the rank's own heads / FFN units, whose counts are the model
 * config's (attention, rope and the KV cache see n_head_kv of this rank).
 *
 * The backend of a layer-split model (pipeline stages) shares get_rows and the gathered output
 * head, and adds:
 *   stage      forward.c runs the layers in micro-batches of stage_rows tokens; before the
 *              stage's layers a micro-batch's x rows come from the previous rank, after them they
 *              go to the next (point to point, the send not waited for: GPipe, stage r works on
 *              micro-batch m while r+1 works on m-1), and after the last micro-batch the last
 *              rank's x is broadcast to every rank for its vocabulary slice of the head;
 *   kv_store, attention   the cache holds the stage's layers only: layer - layer0.
 */
#include "dist/comm.h"
#include "dist/shard.h"

#include <pthread.h>
#include <string.h>

static void tp_get_rows(l3c_context *ctx, const l3c_weight *w, const int32_t *ids, int64_t T,
                        float *x) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t t = 0; t < T; t++)
        h = (h ^ (uint32_t)ids[t]) * 0x100000001b3ull;
    uint64_t ref[2] = {(uint64_t)T, h};
    l3c_comm_bcast(ref, sizeof ref, 0);
    if (ref[0] != (uint64_t)T || ref[1] != h)
        l3c_comm_abort(
            "decode: this rank's batch (%lld tokens) differs from rank 0's (%llu tokens): "
            "every rank must decode the same batches",
            (long long)T, (unsigned long long)ref[0]);
    l3c_backend_cpu.get_rows(ctx, w, ids, T, x);
}

static void tp_matmul(l3c_context *ctx, const l3c_weight *w, const float *x, float *y, int64_t T) {
    if (w->dist == L3C_WDIST_GATHER) {
        const l3c_shard *s = ctx->model->shard;
        const int64_t V = ctx->model->cfg.n_vocab;
        float *part = ctx->act.dist_part; /* [T x vocab slice] */
        l3c_backend_cpu.matmul(ctx, w, x, part, T);
        if (s->rank != 0) memset(y, 0, (size_t)(T * V) * sizeof(float));
        for (int64_t t = 0; t < T; t++)
            l3c_comm_gather_f32(part + t * w->n_out, s->rank == 0 ? y + t * V : NULL, s->vocab_n,
                                0);
        return;
    }
    l3c_backend_cpu.matmul(ctx, w, x, y, T);
    if (w->dist == L3C_WDIST_SUM) l3c_comm_allreduce_sum_f32(y, T * w->n_out);
}

static l3c_backend g_tensor;
static pthread_once_t g_tensor_once = PTHREAD_ONCE_INIT;

static void tensor_init(void) {
    g_tensor = l3c_backend_cpu;
    g_tensor.name = "tensor";
    g_tensor.get_rows = tp_get_rows;
    g_tensor.matmul = tp_matmul;
}

const l3c_backend *l3c_backend_tensor(void) {
    pthread_once(&g_tensor_once, tensor_init);
    return &g_tensor;
}

/* ---- layer split: the KV cache holds the stage's layers only, so the cache ops see the
 * layer's index within the stage */

static void pp_kv_store(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *k,
                        const float *v) {
    l3c_backend_cpu.kv_store(ctx, layer - ctx->model->layer0, b, k, v);
}

static void pp_attention(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q,
                         float *out, float *probs, int64_t n_kv) {
    l3c_backend_cpu.attention(ctx, layer - ctx->model->layer0, b, q, out, probs, n_kv);
}

/* One micro-batch, rows [t0, t0 + n) of x: before the stage's layers they come from the previous
 * stage (rank 0 keeps its embedding); after them they go to the next one without waiting (the
 * rows are not touched again until the batch ends), and the stage goes on to the next
 * micro-batch. After the batch's last micro-batch the sends are waited for and the last stage's x
 * goes to every rank for the head (each computes its vocabulary slice of the logits, gathered on
 * rank 0 by tp_matmul). */
static void pp_stage(l3c_context *ctx, int end, float *x, int64_t t0, int64_t n, int64_t T) {
    const l3c_shard *s = ctx->model->shard;
    const int64_t E = ctx->model->cfg.n_embd;
    float *rows = x + t0 * E;
    if (!end) {
        if (s->rank > 0) l3c_comm_recv_f32(rows, n * E, s->rank - 1);
        return;
    }
    if (s->rank < s->size - 1) l3c_comm_isend_f32(rows, n * E, s->rank + 1);
    if (t0 + n < T) return;
    l3c_comm_wait_sends();
    l3c_comm_bcast(x, (size_t)(T * E) * sizeof(float), s->size - 1);
}

/* Micro-batch rows: --ubatch (l3c_dist_set_ubatch), else 2 per stage (the pipeline's fill and
 * drain idle N-1 of M + N - 1 steps per stage), but at least PIPE_MIN_ROWS tokens: the matmuls
 * cost more per row in small batches (1B Q4_0, 1 thread, CPU time per token against batches of
 * 128: 1.1x at 64 rows, 1.2x at 32, 1.5x at 16; docs/DISTRIBUTED.md), and each micro-batch is one
 * more message per stage. */
enum { PIPE_MIN_ROWS = 32 };

static int64_t pp_stage_rows(l3c_context *ctx, int64_t T) {
    const int64_t set = l3c_comm_ubatch();
    if (set > 0) return set;
    const int64_t M = 2 * (int64_t)ctx->model->shard->size;
    return L3C_MAX((int64_t)PIPE_MIN_ROWS, (T + M - 1) / M);
}

static l3c_backend g_layers;
static pthread_once_t g_layers_once = PTHREAD_ONCE_INIT;

static void layers_init(void) {
    g_layers = l3c_backend_cpu;
    g_layers.name = "layers";
    g_layers.get_rows = tp_get_rows;
    g_layers.matmul = tp_matmul;
    g_layers.kv_store = pp_kv_store;
    g_layers.attention = pp_attention;
    g_layers.stage = pp_stage;
    g_layers.stage_rows = pp_stage_rows;
}

const l3c_backend *l3c_backend_layers(void) {
    pthread_once(&g_layers_once, layers_init);
    return &g_layers;
}
