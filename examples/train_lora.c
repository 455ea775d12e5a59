/*
 * train_lora.c -- LoRA fine-tuning with the public training API: load a GGUF, train rank-8
 * adapters on a text or JSONL file for a few steps, print the loss of each step and the eval loss
 * before and after, save the adapter as a llama.cpp GGUF LoRA (loadable with l3c_adapter_load,
 * `llama3c run --lora`, llama.cpp's --lora). Built only on the public header, against an
 * installed llama3c (docs/INSTALL.md, docs/TRAINING.md):
 *
 *   cc train_lora.c $(pkg-config --cflags --libs llama3c) -o train_lora
 *   ./train_lora MODEL.gguf DATA.txt ADAPTER.gguf [STEPS]
 *
 * The last line on stdout is "eval loss BEFORE -> AFTER".
 */
#include <llama3c.h>
#include <stdio.h>
#include <stdlib.h>

static void on_step(void *user, const l3c_train_step_info *s) {
    (void)user;
    printf("step %lld/%lld loss %.4f lr %.2e | %.0f trained tok/s of %.0f tok/s\n",
           (long long)s->step, (long long)s->total_steps, (double)s->loss, (double)s->lr,
           s->trained_tok_per_s, s->tok_per_s);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf DATA.txt ADAPTER.gguf [STEPS]\n", argv[0]);
        return 2;
    }
    l3c_model_params mp = l3c_model_default_params();
    l3c_model *model = NULL;
    if (l3c_model_load(argv[1], &mp, &model) != L3C_OK) {
        fprintf(stderr, "train_lora: %s\n", l3c_last_error());
        return 1;
    }
    l3c_trainer_params tp = l3c_trainer_default_params();
    tp.data_path = argv[2];
    tp.steps = argc > 4 ? atoi(argv[4]) : 10;
    tp.seq_len = 32;
    tp.batch = 4;
    tp.lr = 3e-3f;
    tp.eval_frac = 0.1f;
    tp.lora_rank = 8;
    tp.lora_targets = L3C_TRAIN_TARGET_ALL;
    tp.on_step = on_step;
    l3c_trainer *tr = NULL;
    double before = 0.0, after = 0.0;
    int rc = 1;
    if (l3c_trainer_create(model, &tp, &tr) != L3C_OK || l3c_trainer_eval(tr, &before) != L3C_OK)
        goto done;
    l3c_trainer_info info;
    l3c_trainer_get_info(tr, &info);
    for (int64_t s = info.next_step; s < info.total_steps; s++)
        if (l3c_trainer_step(tr, NULL) != L3C_OK) goto done;
    if (l3c_trainer_eval(tr, &after) != L3C_OK || l3c_trainer_save_adapter(tr, argv[3]) != L3C_OK)
        goto done;
    printf("eval loss %.4f -> %.4f\n", before, after);
    rc = 0;
done:
    if (rc) fprintf(stderr, "train_lora: %s\n", l3c_last_error());
    l3c_trainer_free(tr);
    l3c_model_free(model);
    return rc;
}
