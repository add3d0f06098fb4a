"""The teacher cache: same loss as the live teacher within the bound, resumable, guarded."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainingArguments

from uld import TokenKLLoss, ULDLoss
from uld.data import collate
from uld.models import load_model
from uld.loss import SortedTeacher
from uld.teacher_cache import TeacherCache, build_teacher_cache, sorted_answer_rows
from uld.trainer import DistillationTrainer, PairCollator, build_pairs

TEACHER_VOCAB = 1355  # default-teacher: restricted Llama SentencePiece, 1,354 pieces and a pad token


@pytest.fixture(scope="module")
def pairs(pair):
    dataset, _ = build_pairs(pair["rows"], kind="extractive_qa", method="uld", shots=1, max_length=1024,
                             student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"])
    return dataset


def build(pair, pairs, folder, **options):
    options = {"top_k": TEACHER_VOCAB, "dtype": "float32", "batch_size": 8, "progress": False, **options}
    return build_teacher_cache(pair["teacher"], pairs, folder, pad_token_id=pair["teacher_tokenizer"].pad_token_id,
                               **options)


def live_and_cached(pair, pairs, cache, loss_fn, indices=range(8), vocab=1500):
    """The loss on one batch with the live teacher and from the cache, with student gradients."""
    collator = PairCollator(pair["student_tokenizer"].pad_token_id, pair["teacher_tokenizer"].pad_token_id)
    batch = collator([pairs[i] for i in indices])
    torch.manual_seed(0)
    student_logits = torch.randn(*batch["input_ids"].shape, vocab, dtype=torch.float64) * 3
    with torch.no_grad():
        teacher_logits = pair["teacher"](input_ids=batch["teacher_input_ids"],
                                         attention_mask=batch["teacher_attention_mask"]).logits
    results, grads = [], []
    for cached in (False, True):
        logits = student_logits.clone().requires_grad_(True)
        if cached:
            out = loss_fn.from_sorted_teacher(logits, batch["labels"], cache.rows(list(indices)))
        else:
            out = loss_fn(logits, teacher_logits.double(), batch["labels"], batch["teacher_labels"])
        out.loss.backward()
        results.append(out)
        grads.append(logits.grad)
    return results, grads


def test_a_cache_of_the_whole_vocabulary_gives_the_exact_loss_and_gradient(pair, pairs, tmp_path):
    cache = build(pair, pairs, tmp_path / "cache")
    (live, cached), (live_grad, cached_grad) = live_and_cached(pair, pairs, cache, ULDLoss(1.5, skip_student_eos=True))
    assert cached.distillation.item() == pytest.approx(live.distillation.item(), rel=1e-6)
    assert cached.crossentropy.item() == pytest.approx(live.crossentropy.item(), rel=1e-12)
    assert cached.distillation_error_bound.item() < 1e-5
    torch.testing.assert_close(cached_grad, live_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("top_k, dtype", [(16, "float16"), (64, "float16"), (64, "float32")])
def test_a_top_k_cache_stays_within_its_reported_bound(pair, pairs, tmp_path, top_k, dtype):
    cache = build(pair, pairs, tmp_path / "cache", top_k=top_k, dtype=dtype)
    assert cache.bytes_per_token == top_k * (2 if dtype == "float16" else 4) + 4
    (live, cached), _ = live_and_cached(pair, pairs, cache, ULDLoss(1.5, skip_student_eos=True))
    gap = live.distillation.item() - cached.distillation.item()
    assert -1e-6 <= gap <= cached.distillation_error_bound.item() + 1e-6
    # Against the live loss in the same top-k mode, only the storage rounding differs. The cache
    # keeps each tail as one mass: its bound is 2 min(P, Q) (plus the rounding), never tighter
    # than the live loss's, which a histogram of both tails tightens (uld.tail_bound).
    (live_top_k, cached_again), _ = live_and_cached(pair, pairs, cache, ULDLoss(1.5, skip_student_eos=True, top_k=top_k))
    rounding = cache.rows(list(range(8))).rounding.max().item()
    assert abs(live_top_k.distillation.item() - cached_again.distillation.item()) <= 1.5 * rounding + 1e-7
    assert live_top_k.distillation_error_bound.item() < cached_again.distillation_error_bound.item()
    assert (rounding > 1e-6) == (dtype == "float16")


def test_token_kl_from_a_cache_with_token_ids_is_exact_on_the_whole_vocabulary_and_below_it_on_a_head(
        pair, pairs, tmp_path):
    """KL needs each probability's token: the cache keeps them on request (4 bytes more each)."""
    kl = TokenKLLoss(1.5, skip_student_eos=True)
    tokenizer = pair["teacher_tokenizer"]  # a student with the teacher's vocabulary
    pairs, _ = build_pairs(pair["rows"], kind="extractive_qa", method="kl", shots=1, max_length=1024,
                           student_tokenizer=tokenizer, teacher_tokenizer=tokenizer)
    whole = build(pair, pairs, tmp_path / "whole", token_ids=True)
    (live, cached), (live_grad, cached_grad) = live_and_cached(pair, pairs, whole, kl, vocab=TEACHER_VOCAB)
    assert cached.distillation.item() == pytest.approx(live.distillation.item(), rel=1e-6)
    assert cached.crossentropy.item() == pytest.approx(live.crossentropy.item(), rel=1e-12)
    assert cached.distillation_error_bound.item() == 0
    torch.testing.assert_close(cached_grad, live_grad, rtol=1e-4, atol=1e-7)
    head = build(pair, pairs, tmp_path / "head", top_k=16, dtype="float16", token_ids=True)
    assert head.bytes_per_token == 16 * (2 + 4) + 4
    (live, cached), _ = live_and_cached(pair, pairs, head, kl, vocab=TEACHER_VOCAB)
    assert 0 < cached.distillation.item() <= live.distillation.item() + 1e-4  # grouping never raises a KL
    assert cached.distillation_error_bound.item() == float("inf")
    with pytest.raises(ValueError, match="token_ids=True"):
        live_and_cached(pair, pairs, build(pair, pairs, tmp_path / "sorted"), kl, vocab=TEACHER_VOCAB)
    with pytest.raises(ValueError, match="one shared vocabulary"):
        live_and_cached(pair, pairs, whole, kl, vocab=1000)


def test_the_cache_holds_every_answer_position_in_order(pair, pairs, tmp_path):
    cache = build(pair, pairs, tmp_path / "cache", top_k=8)
    answer_tokens = sum(sum(label != -100 for label in row["teacher_labels"]) for row in pairs)
    assert cache.head.shape == (answer_tokens, 8) and len(cache) == len(pairs)
    assert bool((cache.head[:, :-1] >= cache.head[:, 1:]).all())
    torch.testing.assert_close(cache.head.double().sum(-1) + cache.tail.double(),
                               torch.ones(answer_tokens, dtype=torch.float64), atol=1e-5, rtol=0)
    batch = collate([{k[8:]: pairs[3][k] for k in ("teacher_input_ids", "teacher_attention_mask", "teacher_labels")}],
                    pair["teacher_tokenizer"].pad_token_id)
    with torch.no_grad():
        logits = pair["teacher"](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    direct = sorted_answer_rows(logits, batch["labels"], top_k=8)
    one = cache.rows([3])
    torch.testing.assert_close(one.head, direct.head)
    assert one.sizes.tolist() == direct.sizes.tolist()


class CountingTeacher:
    """A teacher loader that counts how often the model was needed."""

    def __init__(self, model):
        self.model, self.loads = model, 0

    def __call__(self):
        self.loads += 1
        return self.model


def test_an_interrupted_build_keeps_its_finished_shards(pair, pairs, tmp_path):
    folder = tmp_path / "cache"
    whole = build(pair, pairs, folder, top_k=8, shard_size=10)
    shards = sorted(folder.glob("shard-*.npz"))
    assert len(shards) == 3  # 24 examples
    kept = shards[0].read_bytes()
    shards[1].unlink()
    with pytest.raises(ValueError, match="unfinished: 1 shards missing"):
        TeacherCache(folder)
    loader = CountingTeacher(pair["teacher"])
    rebuilt = build_teacher_cache(loader, pairs, folder, top_k=8, dtype="float32", shard_size=10, batch_size=8,
                                  pad_token_id=pair["teacher_tokenizer"].pad_token_id, progress=False)
    assert loader.loads == 1 and shards[0].read_bytes() == kept
    assert torch.equal(rebuilt.head, whole.head) and torch.equal(rebuilt.tail, whole.tail)
    finished = CountingTeacher(pair["teacher"])
    build_teacher_cache(finished, pairs, folder, top_k=8, dtype="float32", shard_size=10, batch_size=8,
                        pad_token_id=pair["teacher_tokenizer"].pad_token_id, progress=False)
    assert finished.loads == 0  # a finished cache never loads the teacher


@pytest.mark.parametrize("damage", ["truncated", "another shard copied over it", "not a zip file"])
def test_a_corrupt_shard_is_named_and_rebuilt_loading_the_teacher_only_then(pair, pairs, tmp_path, damage):
    folder = tmp_path / "cache"
    whole = build(pair, pairs, folder, top_k=8, shard_size=10)
    records = json.loads((folder / "meta.json").read_text())["shards"]
    assert [(r["first"], r["last"]) for r in records.values()] == [(0, 10), (10, 20), (20, 24)]
    shard = folder / "shard-00001.npz"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:300])
    elif damage == "not a zip file":
        shard.write_text("hello")
    else:
        shard.write_bytes((folder / "shard-00000.npz").read_bytes())  # a valid shard, with other rows
    with pytest.raises(ValueError, match=f"teacher cache shard {shard} "):
        TeacherCache(folder)
    lines, loader = [], CountingTeacher(pair["teacher"])
    rebuilt = build_teacher_cache(loader, pairs, folder, top_k=8, dtype="float32", shard_size=10, batch_size=8,
                                  pad_token_id=pair["teacher_tokenizer"].pad_token_id, progress=False,
                                  echo=lines.append)
    assert loader.loads == 1 and len(lines) == 1 and lines[0].startswith(f"teacher cache shard {shard} ")
    assert lines[0].endswith(": rebuilding it")
    assert torch.equal(rebuilt.head, whole.head) and torch.equal(rebuilt.offsets, whole.offsets)


def test_a_cache_built_before_checksums_is_accepted_and_recorded(pair, pairs, tmp_path):
    folder = tmp_path / "cache"
    build(pair, pairs, folder, top_k=8, shard_size=10)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["shards"]
    (folder / "meta.json").write_text(json.dumps(meta))
    loader = CountingTeacher(pair["teacher"])
    build_teacher_cache(loader, pairs, folder, top_k=8, dtype="float32", shard_size=10, batch_size=8,
                        pad_token_id=pair["teacher_tokenizer"].pad_token_id, progress=False)
    assert loader.loads == 0 and len(json.loads((folder / "meta.json").read_text())["shards"]) == 3


def test_a_cache_is_never_used_for_other_pairs_or_settings(pair, pairs, tmp_path):
    build(pair, pairs, tmp_path / "cache", top_k=8)
    with pytest.raises(ValueError, match="other examples, fingerprint"):
        build(pair, pairs.select(range(10)).flatten_indices(), tmp_path / "cache", top_k=8)
    with pytest.raises(ValueError, match="other temperature, top_k"):
        build(pair, pairs, tmp_path / "cache", top_k=4, temperature=2.0)
    with pytest.raises(ValueError, match="not a teacher cache"):
        TeacherCache(tmp_path)
    with pytest.raises(ValueError, match="cache dtype"):
        build(pair, pairs, tmp_path / "other", dtype="bfloat16")


def test_sorted_teacher_batches_are_checked():
    loss_fn = ULDLoss()
    student, labels = torch.zeros(2, 3, 4), torch.tensor([[-100, 1, 2], [-100, 1, 2]])
    good = SortedTeacher(torch.full((3, 2), 0.5), torch.zeros(3), torch.tensor([2, 1]))
    assert loss_fn.from_sorted_teacher(student, labels, good).loss.isfinite()
    with pytest.raises(ValueError, match="one entry per sample"):
        loss_fn.from_sorted_teacher(student, labels, good._replace(sizes=torch.tensor([3])))
    with pytest.raises(ValueError, match="sum to 4 but the head has 3 rows"):
        loss_fn.from_sorted_teacher(student, labels, good._replace(sizes=torch.tensor([2, 2])))
    with pytest.raises(ValueError, match="one value per head row"):
        loss_fn.from_sorted_teacher(student, labels, good._replace(tail=torch.zeros(2)))
    with pytest.raises(ValueError, match="top_k must be an integer"):
        sorted_answer_rows(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), top_k=0)


def test_training_from_the_cache_follows_the_live_teacher(pair, pairs, tmp_path):
    cache = build(pair, pairs, tmp_path / "cache")
    losses, students = {}, {}
    for cached in (False, True):
        torch.manual_seed(0)
        student = load_model("default-student", cache=pair["cache"])
        args = TrainingArguments(output_dir=str(tmp_path / str(cached)), per_device_train_batch_size=8,
                                 num_train_epochs=1, learning_rate=1e-3, logging_steps=1, save_strategy="no",
                                 report_to=[], remove_unused_columns=False, seed=0, disable_tqdm=True, use_cpu=True)
        trainer = DistillationTrainer(
            model=student, args=args, train_dataset=pairs, teacher=None if cached else pair["teacher"],
            loss_fn=ULDLoss(1.5, skip_student_eos=True),
            data_collator=PairCollator(pair["student_tokenizer"].pad_token_id, pair["teacher_tokenizer"].pad_token_id,
                                       teacher_cache=cache if cached else None))
        trainer.train()
        losses[cached] = [e["distillation"] for e in trainer.state.log_history if "distillation" in e]
        students[cached] = student
    assert len(losses[True]) == 3 and losses[True] == pytest.approx(losses[False], rel=1e-5)
    for a, b in zip(students[False].parameters(), students[True].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        DistillationTrainer(model=students[True], args=args, teacher=pair["teacher"], loss_fn=ULDLoss(),
                            data_collator=PairCollator(0, 0, teacher_cache=cache))


def test_answer_logits_are_the_full_logits_where_the_answers_are(pair, pairs):
    from uld.teacher_cache import answer_logits

    collator = PairCollator(pair["student_tokenizer"].pad_token_id, pair["teacher_tokenizer"].pad_token_id)
    batch = collator([pairs[i] for i in range(6)])
    ids, mask, labels = batch["teacher_input_ids"], batch["teacher_attention_mask"], batch["teacher_labels"]
    with torch.no_grad():
        full = pair["teacher"](input_ids=ids, attention_mask=mask).logits
        kept, kept_labels = answer_logits(pair["teacher"], ids, mask, labels)
    assert kept.shape[1] < full.shape[1] and kept_labels.shape == kept.shape[:2]
    assert torch.equal(kept_labels, labels[:, -kept.shape[1]:])
    torch.testing.assert_close(kept, full[:, -kept.shape[1]:], atol=1e-5, rtol=1e-5)
    expected = sorted_answer_rows(full, labels, top_k=50)
    got = sorted_answer_rows(kept, kept_labels, top_k=50)
    torch.testing.assert_close(got.head, expected.head, atol=1e-6, rtol=1e-5)
    assert torch.equal(got.sizes, expected.sizes)
    no_answer = torch.full_like(labels, -100)
    assert answer_logits(pair["teacher"], ids, mask, no_answer)[0].shape == full.shape
