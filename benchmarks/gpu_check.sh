#!/usr/bin/env bash
# The kit's GPU path end to end, in one run on a CUDA machine with no hub access:
#   1. the environment: GPU, torch, CUDA;
#   2. the two real models from their PyPI packages (converted once into the cache);
#   3. benchmarks/loss_speed.py on the GPU (the paper-sized batch);
#   4. one cell of configs/grids/real.yaml at its gpu preset (uld, seed 0): Gemma 3 270M
#      teaches SmolLM2-135M-Instruct on every training question;
#   5. notebook 05 with its gpu preset (its grid reuses the cell of step 4);
# then a short summary. Everything goes under $OUT (default runs/gpu_check); a step that
# fails is reported and the next one runs. Set from a clean checkout:
#
#   python3 -m venv .venv && . .venv/bin/activate
#   pip install -r requirements.txt && pip install --no-deps -r requirements-assets.txt
#   pip install --no-deps -e . && bash benchmarks/gpu_check.sh
#
# GPU_CHECK_STEPS picks steps (default "env models loss cell notebook").
set -uo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
out="${OUT:-runs/gpu_check}"
steps="${GPU_CHECK_STEPS:-env models loss cell notebook}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: needs a CUDA GPU (torch.cuda.is_available() is False here)" >&2
    exit 2
fi

note() { echo "$*" | tee -a "$summary"; }

step() {  # step NAME COMMAND...: time it, keep its log, go on when it fails
    local name="$1"; shift
    case " $steps " in *" $name "*) ;; *) return 0 ;; esac
    local start=$SECONDS
    echo "== $name: $*"
    if "$@" > "$out/$name.log" 2>&1; then
        note "$(printf '%-9s ok      %5d s' "$name" $((SECONDS - start)))"
    else
        note "$(printf '%-9s FAILED  %5d s  (%s)' "$name" $((SECONDS - start)) "$(tail -n 1 "$out/$name.log")")"
    fi
}

step env python -c "
import torch, transformers
print('gpu', torch.cuda.get_device_name(), f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB')
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)
print('bfloat16', torch.cuda.is_bf16_supported())"
step models python -m uld assets
step loss python benchmarks/loss_speed.py --device cuda --variants uld_exact,uld_top_k,published \
    --out "$out/loss_speed.json"
step cell python -c "
from uld.replicate import load_grid, run_grid
grid = load_grid('configs/grids/real.yaml', 'gpu')
grid.axes = {**grid.axes, 'method': ['uld'], 'seed': [0]}
report = run_grid(grid, '$out/nb/05_real_language_models/runs')
raise SystemExit(1 if report['failed'] else 0)"
step notebook python -m uld notebooks --preset gpu --only 05 --out "$out/nb"

echo
echo "== summary ($out)"
cat "$summary"
[ -f "$out/env.log" ] && cat "$out/env.log"
[ -f "$out/loss.log" ] && grep -E "^(variant|uld_|published|top_k)" "$out/loss.log"
[ -f "$out/nb/05_real_language_models/runs/results.md" ] && \
    grep -E "^\| extractive_qa|^The teacher" "$out/nb/05_real_language_models/runs/results.md"
! grep -q FAILED "$summary"
