#!/usr/bin/env bash
# Train a model of stae_ref/models/ with the demo checkpoint's recipe and budget (same footage,
# crops, sequence lengths, batch, iterations, learning rates, seed and threads; three stages,
# stae_ref/checkpoints/demo/README.md), then evaluate it on the held-out frames. The cell stays
# the model's own in every stage (the demo's first stage used the unbounded STAM cell).
#
#     bash stae_ref/models/train_like_demo.sh convlstm [RUNS_DIR]     (after `make install`)
#
# Writes stae_ref/checkpoints/<name>/ (checkpoint, config, logs, eval.json): what
# `stae bench --models` reads for the quality column.
set -euo pipefail
name=$1
runs=${2:-runs/$name}
bin=$(dirname "$0")/../../.venv/bin
config=stae_ref/models/$name.json
out=stae_ref/checkpoints/$name
test -f "$config" || { echo "no config $config" >&2; exit 2; }
test ! -e "$out" || { echo "$out already exists; move it away first" >&2; exit 2; }
common=(--config "$config" --crop 64 --batch 8 --seed 0 --threads 2)
checkpoint() { "$bin/python" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["checkpoint"])'; }
one=$("$bin/stae" train "${common[@]}" --run-dir "$runs/1" --iterations 1600 --val-every 200 \
  --steps 9 --quiet | checkpoint)
two=$("$bin/stae" train "${common[@]}" --run-dir "$runs/2" --init-from "$one" --iterations 1000 \
  --val-every 125 --steps 12 --clips city carphone motion --loss psnr --lr 3e-4 --lr-min 3e-5 \
  --quiet | checkpoint)
three=$("$bin/stae" train "${common[@]}" --run-dir "$runs/3" --init-from "$two" --iterations 600 \
  --val-every 100 --steps 12 --clips city carphone motion --loss psnr --lr 1e-4 --lr-min 1e-5 \
  --pause-probability 0.2 --ema-decay 0.995 --quiet | checkpoint)
mkdir -p "$out"
cp "$three" "$out/$name.pt"
cp "$config" "$out/model_config.json"
for stage in 1 2 3; do cp "$runs/$stage/log.jsonl" "$out/train_log.$stage.jsonl"; done
"$bin/stae" eval "$out/$name.pt" --long-stream 1000 --json > "$out/eval.json"
"$bin/python" - "$out" "$name" <<'PY'
import json, sys
from pathlib import Path
from stae_deploy.runtime.files import sha256_file
out, name = Path(sys.argv[1]), sys.argv[2]
record = {"file": f"{name}.pt", "sha256": sha256_file(out / f"{name}.pt"),
          "recipe": "stae_ref/models/train_like_demo.sh (the demo checkpoint's three stages)"}
(out / "checkpoint.json").write_text(json.dumps(record, indent=2) + "\n")
PY
echo "wrote $out" >&2
