#!/usr/bin/env bash
# Train the demo weights shipped in engines/assets/moext_demo.safetensors, from scratch,
# on synthetic micro-expressions only (train identities), and score them on identities the
# network never saw. CPU is enough (about 20 minutes on 2 cores); add --device cuda to the
# train commands on a GPU.
#
#   bash scripts/train_demo_weights.sh [RUN_DIR]      # default runs/demo
#
# Outputs: RUN_DIR/{cache_train_big,cache_eval,pretrain,finetune}; the held-out figures are
# in RUN_DIR/finetune/eval/report.json. The last step copies the classifier to the package.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/demo}
WIDTH=0.25
mkdir -p "$RUN"

# 1. onset/apex pairs: 400 micro per class + 100 macro (pseudo-apex) per class on the five
#    train identities; 40 micro per class on the eval identities (disjoint people).
[ -f "$RUN/cache_train_big/index.csv" ] || python -m train.synth pairs --split train \
    --n-per-class 400 --macro-per-class 100 --seed 0 --out "$RUN/cache_train_big"
[ -f "$RUN/cache_eval/index.csv" ] || python -m train.synth pairs --split eval \
    --n-per-class 40 --macro-per-class 0 --seed 1 --out "$RUN/cache_eval"

# 2. self-supervised pre-training (micro + macro pairs, labels unused): a seeded subset,
#    a short schedule (the paper's 30 epochs at full width need a GPU).
python -m train.pretrain --cache "$RUN/cache_train_big" --width $WIDTH --epochs 2 \
    --max-pairs 600 --device cpu --preload --seed 0 --quiet --out "$RUN/pretrain"

# 3. fine-tuning with cross-entropy on the micro pairs; fixed schedule (the last epoch is
#    kept: nothing is chosen on the eval identities), fp16 storage; then scored on the
#    eval identities.
python -m train.finetune --cache "$RUN/cache_train_big" --protocol demo --width $WIDTH \
    --pretrained "$RUN/pretrain/pretrained.safetensors" --epochs 8 --repeats 2 --lr 3e-4 \
    --device cpu --preload --seed 0 --fp16 --quiet \
    --eval-cache "$RUN/cache_eval" --out "$RUN/finetune"

cp "$RUN/finetune/classifier.safetensors" engines/assets/moext_demo.safetensors
python - "$RUN/finetune/eval/report.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]["overall"]
print(f"demo weights on unseen identities: n={m['n']} UF1={m['uf1']:.3f} UAR={m['uar']:.3f} ACC={m['acc']:.3f}")
EOF
