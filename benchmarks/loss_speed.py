"""Forward+backward time and peak memory of `ULDLoss` beside two peers, on one batch.

Peers, on the same batch and settings (lambda 1.5, temperatures 1, student EOS skipped):
  published  a loop shaped like the authors' training code: per-sample softmax written
             into full-length buffers, cut to the longest answer, a full sort of every
             kept row, vocabulary padding, per-sample L1 (written here, below);
  trl        TRL's ULDLoss (trl.experimental.gold, positional mode, "bayesian" merge
             strategy: the causal shift ours applies, so the same loss), when `trl` is
             installed: `pip install -r benchmarks/requirements.txt`
             (benchmarks/gold_side_by_side.py compares the values mode by mode).
Ours: `uld.ULDLoss` exact, with `top_k=256` (its error is checked against the exact
loss on the same batch and against the bound it reports), and exact with
`alignment="offsets"` (answers cut at random character boundaries on each side, so it
compares the positions whose tokens start together), and the hybrid loss
(`shared_vocabulary=`: a quarter of the smaller vocabulary taken as shared, as id pairs in
a random order).

Each variant runs in its own process; memory is the peak resident memory above what the
inputs hold, over forward+backward (the student-logit gradient included).

    python benchmarks/loss_speed.py                    # paper-sized batch (about 1 minute)
    python benchmarks/loss_speed.py --batch 2 --seq 64 --student-vocab 4000 --teacher-vocab 3000
    python benchmarks/loss_speed.py --device cuda     # on a GPU (memory: peak CUDA allocation)

Prints a table and writes benchmarks/results/loss_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

VARIANTS = ("uld_exact", "uld_top_k", "uld_offsets", "uld_hybrid", "published", "trl")
SETTINGS = dict(distillation_weight=1.5, crossentropy_weight=1.0, student_temperature=1.0,
                teacher_temperature=1.0, skip_student_eos=True, skip_teacher_eos=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=192)
    parser.add_argument("--min-answer", type=int, default=16)
    parser.add_argument("--max-answer", type=int, default=80)
    parser.add_argument("--student-vocab", type=int, default=50_304, help="Pythia's")
    parser.add_argument("--teacher-vocab", type=int, default=32_000, help="Llama-2's")
    parser.add_argument("--student-exponents", type=_range, default=(1.5, 2.5),
                        help="Zipf exponents of the student's logits, drawn per position from LOW,HIGH")
    parser.add_argument("--teacher-exponents", type=_range, default=(1.8, 3.0),
                        help="the teacher's (more confident)")
    parser.add_argument("--top-k", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: memory is then the peak CUDA allocation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loss_speed.json")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    if not 1 <= args.min_answer <= args.max_answer < args.seq - 1:
        parser.error("need 1 <= --min-answer <= --max-answer < --seq - 1")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def _range(text):
    low, high = (float(x) for x in text.split(","))
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"need 0 < LOW <= HIGH, got {text!r}")
    return low, high


# ---------------------------------------------------------------- inputs

def make_batch(args):
    """Logits shaped like a language model's and labels with prompts, answers, EOS, padding."""
    g = torch.Generator().manual_seed(args.seed)
    student_labels = torch.full((args.batch, args.seq), -100, dtype=torch.long)
    teacher_labels = torch.full((args.batch, args.seq), -100, dtype=torch.long)
    for b in range(args.batch):
        answer = int(torch.randint(args.min_answer, args.max_answer + 1, (1,), generator=g))
        # The teacher's tokenizer cuts the same answer into a different number of tokens.
        teacher_answer = max(1, min(args.max_answer, round(answer * (0.8 + 0.4 * torch.rand(1, generator=g).item()))))
        for labels, size, vocab in ((student_labels, answer, args.student_vocab),
                                    (teacher_labels, teacher_answer, args.teacher_vocab)):
            prompt = int(torch.randint(1, args.seq - size, (1,), generator=g))
            labels[b, prompt:prompt + size] = torch.randint(0, vocab, (size,), generator=g)
            labels[b, prompt + size - 1] = 0  # EOS (the last answer token)
    return (zipf_logits(g, args.batch, args.seq, args.student_vocab, args.student_exponents),
            zipf_logits(g, args.batch, args.seq, args.teacher_vocab, args.teacher_exponents),
            student_labels, teacher_labels)


def character_offsets(labels, seed):
    """``[B, T, 2]`` spans for each side's answer labels: the answer's tokens cut one text of
    4 characters per token of the longer side at random points; the EOS (last) gets the
    empty span at the end. Use the same ``seed`` for both sides of a batch."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(*labels.shape, 2, dtype=torch.long)
    for b, row in enumerate(labels):
        answer = (row != -100).nonzero().flatten()
        length = 4 * labels.shape[1]  # one text for both sides: longer than any answer needs
        tokens = len(answer) - 1  # before the EOS
        cuts = torch.randperm(length - 1, generator=g)[:max(tokens - 1, 0)].add(1).sort().values.tolist()
        starts = ([0] + cuts if tokens else []) + [length]
        ends = (cuts + [length] if tokens else []) + [length]
        offsets[b, answer, 0], offsets[b, answer, 1] = torch.tensor(starts), torch.tensor(ends)
    return offsets


def zipf_logits(g, batch, seq, vocab, exponents):
    """``[batch, seq, vocab]`` LM-like logits (`uld.synthetic.lm_like_logits`), one token order per row."""
    from uld.synthetic import lm_like_logits

    return torch.stack([lm_like_logits(seq, vocab, exponents, generator=g) for _ in range(batch)])


def answer_statistics(logits, labels, top_k):
    """Mean entropy (nats) and mean top-k mass of the next-token distributions on answers."""
    rows = logits[:, :-1][labels[:, 1:] != -100]
    probs = torch.softmax(rows, -1)
    entropy = -(probs * torch.log_softmax(rows, -1)).sum(-1)
    return dict(entropy_nats=entropy.mean().item(), top_k_mass=probs.topk(top_k, -1).values.sum(-1).mean().item())


# ---------------------------------------------------------------- peers

def published_loop(student_logits, teacher_logits, student_labels, teacher_labels):
    """The loss as the authors' training code computes it (decoder student and teacher)."""
    s = SETTINGS
    vocab = student_logits.shape[-1]
    crossentropy = F.cross_entropy(student_logits[:, :-1].reshape(-1, vocab), student_labels[:, 1:].reshape(-1))
    s_index, s_size = _start_and_size(student_labels)
    t_index, t_size = _start_and_size(teacher_labels)
    if s["skip_student_eos"]:
        s_size = [size - 1 for size in s_size]
    if s["skip_teacher_eos"]:
        t_size = [size - 1 for size in t_size]
    student = _softmax_into_full_buffers(student_logits, s_index, s_size, s["student_temperature"])
    teacher = _softmax_into_full_buffers(teacher_logits, t_index, t_size, s["teacher_temperature"])
    longest = max(max(s_size), max(t_size))
    student, teacher = student[:, :longest], teacher[:, :longest]
    student = student.sort(dim=-1, descending=True).values
    teacher = teacher.sort(dim=-1, descending=True).values
    difference = student.size(2) - teacher.size(2)
    if difference > 0:
        teacher = F.pad(teacher, (0, difference), value=0)
    elif difference < 0:
        student = F.pad(student, (0, -difference), value=0)
    per_sample = []
    for i in range(student.size(0)):
        size = min(s_size[i], t_size[i])
        per_sample.append(abs(student[i][:size] - teacher[i][:size]).sum(-1).mean(-1))
    distillation = s["distillation_weight"] * torch.stack(per_sample).mean()
    return s["crossentropy_weight"] * crossentropy + distillation


def _start_and_size(labels):
    index, size = [], []
    for row in labels:
        ignored = row.eq(-100)
        size.append(len(row) - int(ignored.sum()))
        positions = ignored.nonzero(as_tuple=True)[0]
        if len(positions) == 0 or positions[0] != 0:
            index.append(0)
        else:
            breaks = (positions[1:] - positions[:-1] != 1).nonzero()
            length = breaks[0].item() + 1 if len(breaks) > 0 else len(positions)
            index.append(length - 1)
    return index, size


def _softmax_into_full_buffers(logits, index, size, temperature):
    rows = []
    for i in range(logits.size(0)):
        answer = torch.softmax(logits[i, index[i]:index[i] + size[i]] / temperature, dim=-1)
        rows.append(torch.cat((answer, torch.zeros_like(logits[i, : logits.size(1) - size[i]])), dim=0))
    return torch.stack(rows)


def trl_loss():
    from gold_side_by_side import gold_loss  # benchmarks/, on the path when run as a script

    loss = gold_loss(SETTINGS)

    def call(student_logits, teacher_logits, student_labels, teacher_labels):
        return loss(student_logits, teacher_logits, student_labels, teacher_labels,
                    student_labels.clamp_min(0), teacher_labels.clamp_min(0))

    return call


def hybrid_loss(student_vocab, teacher_vocab):
    from uld import ULDLoss
    from uld.alignment import SharedVocabulary

    g = torch.Generator().manual_seed(0)
    size = min(student_vocab, teacher_vocab) // 4
    shared = SharedVocabulary(torch.randperm(student_vocab, generator=g)[:size],
                              torch.randperm(teacher_vocab, generator=g)[:size])
    return ULDLoss(**SETTINGS, shared_vocabulary=shared)


def make_loss(variant, top_k):
    from uld import ULDLoss

    if variant == "uld_exact":
        loss = ULDLoss(**SETTINGS)
        return lambda *batch: loss(*batch).loss
    if variant == "uld_top_k":
        loss = ULDLoss(**SETTINGS, top_k=top_k)
        return lambda *batch: loss(*batch).loss
    if variant == "uld_hybrid":
        built = {}

        def hybrid(*batch):
            if not built:  # built at the warm-up call, outside the timed ones
                built["loss"] = hybrid_loss(batch[0].shape[-1], batch[1].shape[-1])
            return built["loss"](*batch).loss

        return hybrid
    if variant == "uld_offsets":
        loss = ULDLoss(**SETTINGS, alignment="offsets")
        offsets = {}

        def call(student_logits, teacher_logits, student_labels, teacher_labels):
            if not offsets:  # made once, outside the timed calls' steady state
                offsets.update(student_offsets=character_offsets(student_labels.cpu(), 0).to(student_labels.device),
                               teacher_offsets=character_offsets(teacher_labels.cpu(), 1).to(teacher_labels.device))
            return loss(student_logits, teacher_logits, student_labels, teacher_labels, **offsets).loss

        return call
    if variant == "published":
        return published_loop
    return trl_loss()


# ---------------------------------------------------------------- measuring (child process)

def resident_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(args):
    torch.set_num_threads(args.threads)
    loss_fn = make_loss(args.child, args.top_k)
    student_logits, teacher_logits, student_labels, teacher_labels = (t.to(args.device) for t in make_batch(args))
    student_logits.requires_grad_(True)
    batch = (student_logits, teacher_logits, student_labels, teacher_labels)
    cuda = student_logits.is_cuda

    loss_fn(*batch).backward()  # warm-up
    student_logits.grad = None
    times, peaks = [], []
    for _ in range(args.repeats):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 1024
        else:
            reset_peak()
            base = resident_kib("VmRSS")
        start = time.perf_counter()
        value = loss_fn(*batch)
        value.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        student_logits.grad = None
        del value
        peaks.append((torch.cuda.max_memory_allocated() / 1024 if cuda else resident_kib("VmHWM")) - base)
    result = dict(variant=args.child, seconds=statistics.median(times), times=times,
                  peak_mib=statistics.median(peaks) / 1024,
                  loss=float(loss_fn(*batch).detach()))
    if args.child == "uld_top_k":
        result.update(top_k_error(batch, args.top_k))
        with torch.no_grad():
            result["student"] = answer_statistics(student_logits, student_labels, args.top_k)
            result["teacher"] = answer_statistics(teacher_logits, teacher_labels, args.top_k)
    return result


def top_k_error(batch, top_k):
    from uld import ULDLoss

    with torch.no_grad():
        exact = ULDLoss(**SETTINGS)(*batch)
        approx = ULDLoss(**SETTINGS, top_k=top_k)(*batch)
    error = abs(approx.distillation.item() - exact.distillation.item())
    return dict(distillation_exact=exact.distillation.item(), distillation_approx=approx.distillation.item(),
                abs_error=error, relative_error=error / exact.distillation.item(),
                reported_bound=approx.distillation_error_bound.item())


# ---------------------------------------------------------------- parent: run, tabulate, save

def run_child(variant, argv):
    command = [sys.executable, __file__, *argv, "--child", variant]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return dict(variant=variant, skipped=last)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows, reference="published"):
    base = next((r for r in rows if r["variant"] == reference and "seconds" in r), None)
    lines = [f"{'variant':<12}{'fwd+bwd s':>11}{'peak MiB':>10}{'speed-up':>10}{'mem ratio':>11}{'loss':>12}",
             "-" * 66]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"{r['variant']:<12}  skipped: {r['skipped']}")
            continue
        speed = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        memory = f"{r['peak_mib'] / base['peak_mib']:.2f}x" if base and base["peak_mib"] > 0 else "-"
        lines.append(f"{r['variant']:<12}{r['seconds']:>11.3f}{r['peak_mib']:>10.0f}{speed:>10}{memory:>11}{r['loss']:>12.6f}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    rows = [run_child(variant, argv) for variant in args.variants.split(",")]
    print(f"batch {args.batch} x seq {args.seq}, answers {args.min_answer}-{args.max_answer} tokens, "
          f"student vocab {args.student_vocab:,}, teacher vocab {args.teacher_vocab:,}, "
          f"{args.threads} threads on {args.device}, median of {args.repeats}; speed-up and memory against 'published'")
    print(table(rows))
    top_k = next((r for r in rows if r["variant"] == "uld_top_k" and "abs_error" in r), None)
    if top_k:
        print(f"top_k={args.top_k}: |approx - exact| = {top_k['abs_error']:.3e} "
              f"({100 * top_k['relative_error']:.4f}% of {top_k['distillation_exact']:.6f}), "
              f"reported bound {top_k['reported_bound']:.3e}")
        for side in ("student", "teacher"):
            stats = top_k[side]
            print(f"  {side} answers: mean entropy {stats['entropy_nats']:.2f} nats, "
                  f"mean top-{args.top_k} mass {stats['top_k_mass']:.4f}")
    by_name = {r["variant"]: r for r in rows if "seconds" in r}
    ratios = {f"{a}_vs_{b}": {"speedup": by_name[b]["seconds"] / by_name[a]["seconds"],
                              "memory_ratio": by_name[a]["peak_mib"] / max(by_name[b]["peak_mib"], 1e-9)}
              for a in ("uld_exact", "uld_top_k") for b in ("published", "trl") if a in by_name and b in by_name}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = dict(config={k: v for k, v in vars(args).items() if k not in ("out", "child")},
                  settings=SETTINGS, machine=dict(python=platform.python_version(), torch=torch.__version__,
                                                  processor=platform.processor() or platform.machine(),
                                                  cpus=os.cpu_count(), device=args.device,
                                                  gpu=torch.cuda.get_device_name() if args.device.startswith("cuda")
                                                  else None),
                  rows=rows, ratios=ratios)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
