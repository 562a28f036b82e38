#!/usr/bin/env bash
# GPU check of the training scripts: fp32 / --fp16 / --bf16 training of seq_bn, LoRA and full fine-tuning with
# run_qa.py on a BERT-base-sized random model and toy data built locally (no network needed), plus 2-GPU DDP and
# DeepSpeed ZeRO-2 when `nvidia-smi -L` lists 2 or more GPUs. Writes one JSON of results and exits 1 if a check fails.
#
#   benchmarks/gpu_check.sh                     # on the GPU machine: ~5-10 minutes (one GPU: 9 runs of 200 steps)
#   benchmarks/gpu_check.sh --cpu_smoke         # anywhere: the same steps on the CPU, tiny model, under a minute
#   benchmarks/gpu_check.sh --steps 400 --peak_tflops 989 --output /tmp/gpu_check.json
#
# Results go to --output, else $OUT/gpu_check.json when $OUT is set, else benchmarks/results/gpu_check.json.
# All the logic is in benchmarks/gpu_check.py (python benchmarks/gpu_check.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing may come from the model/dataset hub: the GPU machine has no network either.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python}"

if ! "$PYTHON" -c "import torch, transformers, adapters" 2>/dev/null; then
    echo "error: $PYTHON cannot import torch, transformers and adapters (pip install -r requirements.txt)" >&2
    exit 2
fi
if [[ " $* " != *" --cpu_smoke "* ]]; then
    command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "warning: nvidia-smi not found" >&2
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
