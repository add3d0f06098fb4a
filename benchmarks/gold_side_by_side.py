"""Our ULD losses beside TRL's GOLD `ULDLoss` on the same inputs: positional, extended, hybrid.

    pip install -r benchmarks/requirements.txt       # trl: GOLD lives in trl.experimental.gold
    python benchmarks/gold_side_by_side.py           # about 10 s, most of it importing trl

One batch of three answers (prompts of different lengths, right padding, an EOS ending each
answer), written by a student and a teacher tokenizer with their own ids and vocabulary
sizes. Each row runs `uld.ULDLoss` and GOLD's loss on it and reads one of two ways:

``same``       the two compute the same thing: the values must agree to 1e-5.
``explained``  the two differ by design: the row recomputes GOLD's value from the rule
               stated below (with `uld`'s own pieces) and that must agree with TRL to 1e-5,
               while the two losses must differ by more than 1e-4.

Where the semantics agree:
- Positional mode. GOLD's ``"bayesian"`` merge strategy reads the logits one position before
  each label, the causal shift `uld.ULDLoss` applies to a decoder: the whole loss agrees
  (cross-entropy and lambda x ULD, temperatures, either EOS skipped). GOLD's ``"observed"``
  strategy reads the logits *at* the label positions, i.e. it takes the labels as already
  shifted: it agrees with `ULDLoss` told so (``*_is_encoder_decoder=True``), distillation
  term alone (GOLD's cross-entropy still shifts).
- Extended mode (``use_extended_uld``) and ``alignment="offsets"`` agree wherever the two
  tokenizations of an answer share every token boundary.
- Hybrid mode with ``beta=0`` (GOLD's matched part is then ``KL(teacher || student)``) and
  every token shared (one vocabulary): both are the token-level KL on each compared position.

Where they differ, and why (the ``explained`` rows):
- **Empty answers.** GOLD averages the distillation term over every sample of the batch, a
  sample with no compared position counting as 0; `ULDLoss` averages over the samples that
  have one (a sample's weight does not depend on its neighbours' lengths). GOLD =
  ours x (samples with a pair) / (samples).
- **Boundaries that differ.** GOLD closes a group where both sides reach the same *end*
  byte and merges each group into one row: ``"bayesian"`` takes the distribution at the
  group's last position times the probabilities of the group's earlier actual tokens (an
  unnormalised row), then sorted L1 between the merged rows. `ULDLoss(alignment="offsets")`
  compares only positions whose tokens *start* at the same character (both models have read
  the same text there) and leaves the others to the cross-entropy, with each row a
  probability distribution. The explained value rebuilds GOLD's merged rows.
- **Partial vocabularies.** GOLD's matched part is ``sum_j Q_j log(Q_j / P_j)`` on the
  shared tokens' (partial) masses; ours is the generalized KL, which adds
  ``sum_j (P_j - Q_j)`` so that it stays >= 0 and is 0 only when the two sides agree there.
  GOLD = ours - matched_weight x lambda x mean(sum_shared P - sum_shared Q). GOLD's default
  ``beta=0.5`` is a Jensen-Shannon divergence, another divergence altogether.
- **Which tokens are shared.** GOLD pairs vocabulary *entries* (``get_vocab()`` strings),
  `uld.alignment.shared_vocabulary` pairs the *texts* tokens decode to: GPT-2's ``Ġthe`` and
  SentencePiece's ``▁the`` are one text but two strings. The last table counts both on
  real tokenizer pairs.

Prints the tables, writes benchmarks/results/gold_side_by_side.json (or --out), and exits 1
when a row breaks its rule, 2 when trl is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from uld import ULDLoss
from uld.alignment import SharedVocabulary, shared_vocabulary
from uld.distance import uld_distance

AGREE, DIFFER = 1e-5, 1e-4
EPS = 1e-8  # GOLD's clamp on the probabilities it multiplies and takes logs of

# Each answer as the two tokenizers cut it: the student splits more finely.
ANSWERS = (
    ((" the", " viol", "inist"), (" the", " violinist")),
    ((" 4", "2", " notes"), (" 42", " notes")),
    ((" played", " well"), (" play", "ed", " well")),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gold_side_by_side.json")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the batch

def side(pieces_per_answer, prompts, vocab, generator, eos):
    """Labels, input ids and character offsets ``[B, T]``, ``[B, T]``, ``[B, T, 2]`` of one side."""
    length = max(p + len(pieces) + 1 for p, pieces in zip(prompts, pieces_per_answer)) + 1
    labels = torch.full((len(prompts), length), -100)
    input_ids = torch.randint(0, vocab, (len(prompts), length), generator=generator)
    offsets = torch.zeros(len(prompts), length, 2, dtype=torch.long)
    for row, (prompt, pieces) in enumerate(zip(prompts, pieces_per_answer)):
        ends = torch.tensor([len("".join(pieces[:i + 1])) for i in range(len(pieces))] + [len("".join(pieces))])
        starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1]])
        ids = torch.randint(0, vocab, (len(pieces),), generator=generator).tolist() + [eos]
        at = slice(prompt, prompt + len(ids))
        labels[row, at] = input_ids[row, at] = torch.tensor(ids)
        offsets[row, at] = torch.stack([starts, ends], dim=-1)
    return SimpleNamespace(labels=labels, input_ids=input_ids, offsets=offsets)


def make_batch(seed, answers=ANSWERS, student_vocab=48, teacher_vocab=40):
    g = torch.Generator().manual_seed(seed)
    student = side([s for s, _ in answers], [3, 5, 2], student_vocab, g, eos=student_vocab - 1)
    teacher = side([t for _, t in answers], [4, 2, 6], teacher_vocab, g, eos=teacher_vocab - 1)
    student.logits = 2 * torch.randn(len(answers), student.labels.shape[1], student_vocab, generator=g)
    teacher.logits = 2 * torch.randn(len(answers), teacher.labels.shape[1], teacher_vocab, generator=g)
    return student, teacher


# ---------------------------------------------------------------- the two losses

SETTINGS = dict(crossentropy_weight=1.0, distillation_weight=1.5, student_temperature=1.0, teacher_temperature=1.0,
                skip_student_eos=True, skip_teacher_eos=True)


def gold_loss(settings, merge="bayesian", extended=False, hybrid=None, beta=0.0, tokenizers=(None, None)):
    """TRL's loss, configured like ours (``hybrid``: (matched, unmatched) weights)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gold.gold_trainer import ULDLoss as GOLDULDLoss

    s = settings
    config = SimpleNamespace(
        uld_crossentropy_weight=s["crossentropy_weight"], uld_distillation_weight=s["distillation_weight"],
        uld_student_temperature=s["student_temperature"], uld_teacher_temperature=s["teacher_temperature"],
        uld_skip_student_eos=s["skip_student_eos"], uld_skip_teacher_eos=s["skip_teacher_eos"],
        use_extended_uld=extended, uld_token_merge_strategy=merge, uld_use_hybrid_loss=hybrid is not None,
        uld_hybrid_matched_weight=hybrid and hybrid[0], uld_hybrid_unmatched_weight=hybrid and hybrid[1], beta=beta)
    return GOLDULDLoss(config, student_tokenizer=tokenizers[0], teacher_tokenizer=tokenizers[1])


def run_gold(loss, student, teacher, offsets=False):
    extra = dict(student_byte_offsets=student.offsets, teacher_byte_offsets=teacher.offsets) if offsets else {}
    with torch.no_grad():
        return float(loss(student.logits, teacher.logits, student.labels, teacher.labels, student.input_ids,
                          teacher.input_ids, **extra))


def run_ours(loss, student, teacher, offsets=False, labels_shifted=False):
    extra = dict(student_offsets=student.offsets, teacher_offsets=teacher.offsets) if offsets else {}
    with torch.no_grad():
        return float(loss(student.logits, teacher.logits, student.labels, teacher.labels,
                          student_is_encoder_decoder=labels_shifted, teacher_is_encoder_decoder=labels_shifted,
                          **extra).loss)


def with_shared_mapping(gold, student_ids, teacher_ids):
    """Give GOLD's hybrid loss an explicit id mapping (it builds one from tokenizers otherwise)."""
    gold._vocab_mapping = dict(zip(teacher_ids.tolist(), student_ids.tolist()))
    gold._teacher_matched_ids, gold._student_matched_ids = set(teacher_ids.tolist()), set(student_ids.tolist())
    gold.mapping_tensor = torch.full((int(teacher_ids.max()) + 1,), -1, dtype=torch.long)
    gold.mapping_tensor[teacher_ids] = student_ids
    return gold


# ---------------------------------------------------------------- GOLD's rules, rebuilt

def answer_rows(side_, temperature, skip_eos):
    """Per sample: the distributions predicting each answer label and those labels."""
    rows = []
    for b in range(side_.labels.shape[0]):
        at = (side_.labels[b] != -100).nonzero().flatten()
        at = at[:len(at) - int(skip_eos)]
        probs = torch.softmax(side_.logits[b, at - 1] / temperature, -1)
        rows.append((probs, side_.labels[b, at], side_.offsets[b, at]))
    return rows


def end_groups(student_offsets, teacher_offsets):
    """GOLD's grouping: walk both sides, close a group where they reach the same end."""
    groups, s, t, s0, t0 = [], 0, 0, 0, 0
    s_ends, t_ends = student_offsets[:, 1].tolist(), teacher_offsets[:, 1].tolist()
    while s < len(s_ends) and t < len(t_ends):
        if s_ends[s] < t_ends[t]:
            s += 1
        elif s_ends[s] > t_ends[t]:
            t += 1
        else:
            s, t = s + 1, t + 1
            groups.append((range(s0, s), range(t0, t)))
            s0, t0 = s, t
    if s0 < len(s_ends) and t0 < len(t_ends):
        groups.append((range(s0, len(s_ends)), range(t0, len(t_ends))))
    return groups


def merged(probs, tokens, group):
    """The group's last distribution times its earlier actual tokens' probabilities."""
    scale = torch.ones(())
    for k in list(group)[:-1]:
        scale = scale * probs[k, tokens[k]].clamp_min(EPS)
    return probs[list(group)[-1]] * scale


def gold_extended_distillation(student, teacher, settings):
    s = settings
    per_sample = []
    for (p, s_tok, s_off), (q, t_tok, t_off) in zip(answer_rows(student, s["student_temperature"],
                                                                s["skip_student_eos"]),
                                                    answer_rows(teacher, s["teacher_temperature"],
                                                                s["skip_teacher_eos"])):
        groups = end_groups(s_off, t_off)
        rows_p = torch.stack([merged(p, s_tok, sg) for sg, _ in groups])
        rows_q = torch.stack([merged(q, t_tok, tg) for _, tg in groups])
        per_sample.append(uld_distance(rows_p, rows_q).mean())
    return s["distillation_weight"] * float(torch.stack(per_sample).mean())


def shared_mass_gap(student, teacher, settings, shared):
    """mean over samples of mean over compared positions of sum_shared P - sum_shared Q."""
    s = settings
    gaps = []
    for (p, _, _), (q, _, _) in zip(answer_rows(student, s["student_temperature"], s["skip_student_eos"]),
                                    answer_rows(teacher, s["teacher_temperature"], s["skip_teacher_eos"])):
        n = min(len(p), len(q))
        gaps.append((p[:n, shared.student].sum(-1) - q[:n, shared.teacher].sum(-1)).mean())
    return float(torch.stack(gaps).mean())


# ---------------------------------------------------------------- the rows

def row(mode, case, ours, gold, explained=None):
    out = {"mode": mode, "case": case, "ours": ours, "trl": gold, "difference": ours - gold}
    if explained is None:
        out.update(relation="same", holds=abs(ours - gold) <= AGREE)
    else:
        out.update(relation="explained", explained=explained,
                   holds=abs(explained - gold) <= AGREE and abs(ours - gold) > DIFFER)
    return out


def positional_rows(seed):
    student, teacher = make_batch(seed)
    rows = []
    for name, changes in (("paper settings", {}),
                          ("temperatures 2 and 0.5, no EOS skipped",
                           dict(student_temperature=2.0, teacher_temperature=0.5, skip_student_eos=False,
                                skip_teacher_eos=False))):
        settings = {**SETTINGS, **changes}
        rows.append(row("positional", f"bayesian, {name}", run_ours(ULDLoss(**settings), student, teacher),
                        run_gold(gold_loss(settings), student, teacher)))
    distill_only = {**SETTINGS, "crossentropy_weight": 0.0}
    rows.append(row("positional", "observed = labels already shifted (distillation term)",
                    run_ours(ULDLoss(**distill_only), student, teacher, labels_shifted=True),
                    run_gold(gold_loss(distill_only, merge="observed"), student, teacher)))
    # An empty answer (its EOS alone, skipped): the first sample has nothing to compare.
    short = ((), ()), *ANSWERS[1:]
    student, teacher = make_batch(seed, answers=short)
    ours = run_ours(ULDLoss(**distill_only), student, teacher)
    rows.append(row("positional", "a sample with no compared position", ours,
                    run_gold(gold_loss(distill_only), student, teacher), explained=ours * 2 / 3))
    return rows


def extended_rows(seed):
    distill_only = {**SETTINGS, "crossentropy_weight": 0.0}
    alike = tuple((t, t) for _, t in ANSWERS)  # one cut on both sides, two vocabularies
    rows = []
    for case, answers in (("every boundary shared", alike), ("boundaries differ", ANSWERS)):
        student, teacher = make_batch(seed, answers=answers)
        ours = run_ours(ULDLoss(**distill_only, alignment="offsets"), student, teacher, offsets=True)
        gold = run_gold(gold_loss(distill_only, extended=True), student, teacher, offsets=True)
        explained = gold_extended_distillation(student, teacher, distill_only) if answers is ANSWERS else None
        rows.append(row("extended / offsets", case, ours, gold, explained))
    return rows


def hybrid_rows(seed):
    distill_only = {**SETTINGS, "crossentropy_weight": 0.0}
    rows = []
    student, teacher = make_batch(seed, student_vocab=40, teacher_vocab=40)
    everything = SharedVocabulary(torch.arange(40), torch.arange(40))
    for weights in ((1.0, 0.0), (1.0, 1.0)):
        ours = run_ours(ULDLoss(**distill_only, shared_vocabulary=everything, matched_weight=weights[0],
                                unmatched_weight=weights[1]), student, teacher)
        gold = run_gold(with_shared_mapping(gold_loss(distill_only, hybrid=weights), everything.student,
                                            everything.teacher), student, teacher)
        rows.append(row("hybrid, beta=0", f"one vocabulary, weights {weights}", ours, gold))
    student, teacher = make_batch(seed)
    g = torch.Generator().manual_seed(seed)
    part = SharedVocabulary(torch.randperm(47, generator=g)[:12], torch.randperm(39, generator=g)[:12])
    ours = run_ours(ULDLoss(**distill_only, shared_vocabulary=part), student, teacher)
    gold = run_gold(with_shared_mapping(gold_loss(distill_only, hybrid=(1.0, 1.0)), part.student, part.teacher),
                    student, teacher)
    explained = ours - distill_only["distillation_weight"] * shared_mass_gap(student, teacher, distill_only, part)
    rows.append(row("hybrid, beta=0", "12 shared tokens of 40 and 48", ours, gold, explained))
    return rows


def shared_token_counts(pairs=(("gpt2", "llama"), ("gpt2", "qwen2"), ("llama", "qwen2"))):
    """Shared tokens on real tokenizer pairs: GOLD's vocabulary strings against our texts."""
    from uld.tokenizers import AssetUnavailable, load_real_tokenizer

    counts = []
    for student_name, teacher_name in pairs:
        try:
            student, teacher = load_real_tokenizer(student_name), load_real_tokenizer(teacher_name)
        except AssetUnavailable as missing:
            print(f"skipped {student_name}/{teacher_name}: {missing}", file=sys.stderr)
            continue
        gold = gold_loss(SETTINGS, hybrid=(1.0, 1.0), tokenizers=(student, teacher))
        counts.append({"student": student_name, "teacher": teacher_name,
                       "vocabularies": [len(student), len(teacher)], "gold_entries": len(gold._vocab_mapping),
                       "uld_texts": len(shared_vocabulary(student, teacher).student)})
    return counts


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("trl") is None:
        print("trl is not installed: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2
    import trl

    torch.manual_seed(args.seed)
    rows = positional_rows(args.seed) + extended_rows(args.seed) + hybrid_rows(args.seed)
    counts = shared_token_counts()
    print(f"uld.ULDLoss beside TRL {trl.__version__} GOLD ULDLoss (same: |ours - trl| <= {AGREE}; "
          f"explained: |rebuilt - trl| <= {AGREE}, |ours - trl| > {DIFFER})")
    print(f"{'mode':<20} {'case':<54} {'ours':>9} {'trl':>9} {'rebuilt':>9}  relation   holds")
    for r in rows:
        rebuilt = f"{r['explained']:9.5f}" if "explained" in r else " " * 9
        print(f"{r['mode']:<20} {r['case']:<54} {r['ours']:9.5f} {r['trl']:9.5f} {rebuilt}  "
              f"{r['relation']:<10} {r['holds']}")
    print(f"\n{'student':<8} {'teacher':<8} {'vocabularies':>16} {'GOLD (entries)':>15} {'ours (texts)':>13}")
    for c in counts:
        print(f"{c['student']:<8} {c['teacher']:<8} {c['vocabularies'][0]:>7} {c['vocabularies'][1]:>8} "
              f"{c['gold_entries']:>15} {c['uld_texts']:>13}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trl": trl.__version__, "rows": rows, "shared_tokens": counts}, indent=2) + "\n")
    broken = [f"{r['mode']}: {r['case']}" for r in rows if not r["holds"]]
    if broken:
        print("rows that break their rule: " + "; ".join(broken), file=sys.stderr)
        return 1
    print(f"all {len(rows)} rows hold; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
