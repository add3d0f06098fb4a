"""Tasks load offline with one schema; hub tasks fail fast offline or load from local copies;
tokenisation puts -100 exactly on prompt and padding and keeps the answer whole."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uld.data import TASKS, TaskUnavailable, collate, encode_decoder, encode_encoder_decoder, ensure_pad_token, \
    load_task, tokenize_dataset
from uld.prompts import first_line, student_prompt, teacher_prompt
from uld.tokenizers import train_tokenizer

EMBEDDED = [name for name, spec in TASKS.items() if spec.embedded]
HUB = [name for name, spec in TASKS.items() if not spec.embedded]


@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize("split", ["train", "validation", "test", "eval"])
def test_embedded_tasks_load_with_the_schema(name, split):
    dataset = load_task(name, split)
    assert dataset.column_names == ["id", "context", "question", "answers"]
    assert len(dataset) > 100 and all(isinstance(a, list) and a and all(isinstance(x, str) for x in a)
                                      for a in dataset["answers"])
    record = json.loads(dataset.info.description)
    assert record["kind"] == TASKS[name].kind and record["metric"] == TASKS[name].metric


def test_limit_and_kinds():
    assert len(load_task("generative_qa", "train", limit=7)) == 7
    assert {TASKS[n].kind for n in EMBEDDED} == {"extractive_qa", "generative_qa", "summarization"}
    assert {n: TASKS[n].metric for n in HUB} == {"squad": "f1", "qed": "f1", "fairytaleqa": "bertscore",
                                                 "pubmedqa": "bertscore", "dialogsum": "rougeLsum"}


@pytest.mark.parametrize("name", HUB)
def test_hub_tasks_fail_at_once_offline_and_say_what_to_do(name, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(TaskUnavailable, match=r"needs the Hugging Face hub.*offline mode.*source="):
        load_task(name, "eval")
    assert time.perf_counter() - start < 10


def test_a_datasets_cache_is_passed_to_the_hub_loader(monkeypatch, tmp_path):
    import datasets

    seen = {}

    def fake_load_dataset(path, name=None, split=None, cache_dir=None):
        seen.update(path=path, name=name, split=split, cache_dir=cache_dir)
        return datasets.Dataset.from_list([RAW_ROWS["dialogsum"]])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_task("dialogsum", "eval", datasets_cache=tmp_path)
    assert seen == dict(path="knkarthick/dialogsum", name=None, split="validation", cache_dir=str(tmp_path))
    assert dataset[0]["answers"] == ["They greet."]


@pytest.mark.parametrize("call, message", [
    (lambda: load_task("trivia", "train"), "unknown task 'trivia'"),
    (lambda: load_task("extractive_qa", "dev"), "unknown split 'dev'"),
    (lambda: load_task("extractive_qa", "train", limit=0), "limit must be"),
    (lambda: load_task("squad", "train", source="/nonexistent/copy"), "does not exist"),
])
def test_bad_requests_are_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


RAW_ROWS = {
    "squad": {"id": "a1", "title": "T", "context": "Ada lives in Lund.", "question": "Where?",
              "answers": {"text": ["Lund"], "answer_start": [13]}},
    "qed": {"example_id": 7, "title_text": "T", "paragraph_text": "Astro is a dog.", "question": "dog name?",
            "original_nq_answers": [[{"start": 0, "end": 5, "string": "Astro"}]]},
    "fairytaleqa": {"gem_id": "f-1", "story_name": "s", "content": "Once upon a time.", "question": "When?",
                    "answer": "once upon a time", "references": ["once upon a time"]},
    "pubmedqa": {"pubid": 12, "question": "Does it work?", "context": {"contexts": ["Part one.", "Part two."]},
                 "long_answer": "It works.", "final_decision": "yes"},
    "dialogsum": {"id": "d1", "dialogue": "#Person1#: Hi.", "summary": "They greet.", "topic": "greeting"},
}
EXPECTED = {
    "squad": ("a1", "Ada lives in Lund.", ["Lund"]), "qed": ("7", "Astro is a dog.", ["Astro"]),
    "fairytaleqa": ("f-1", "Once upon a time.", ["once upon a time"]),
    "pubmedqa": ("12", "Part one. Part two.", ["It works."]), "dialogsum": ("d1", "#Person1#: Hi.", ["They greet."]),
}


@pytest.mark.parametrize("name", HUB)
@pytest.mark.parametrize("form", ["save_to_disk", "jsonl"])
def test_local_copies_of_hub_tasks_are_mapped_to_the_schema(name, form, tmp_path):
    from datasets import Dataset

    raw = Dataset.from_list([RAW_ROWS[name]])
    split = TASKS[name].eval_split
    if form == "save_to_disk":
        raw.save_to_disk(str(tmp_path / "copy"))
        source = tmp_path / "copy"
    else:
        source = tmp_path / f"{split}.jsonl"
        source.write_text(json.dumps(RAW_ROWS[name]) + "\n")
    dataset = load_task(name, "eval", source=source)
    row = dataset[0]
    assert dataset.column_names == ["id", "context", "question", "answers"]
    assert (row["id"], row["context"], row["answers"]) == EXPECTED[name]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [row["context"] + " " + row["question"] + " " + row["answers"][0]
             for row in load_task("extractive_qa", "train", limit=300)]
    tokenizer = train_tokenizer(texts, kind="bpe", vocab_size=800)
    return tokenizer


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 149), st.integers(8, 200), st.sampled_from(["extractive_qa", "generative_qa"]))
def test_decoder_labels_mask_exactly_the_prompt_and_keep_the_answer(tokenizer, index, max_length, task):
    row = load_task(task, "test")[index]
    render = lambda context: student_prompt(TASKS[task].kind, context, row["question"])  # noqa: E731
    encoded = encode_decoder(tokenizer, render, row["context"], row["answers"][0], max_length)
    answer_ids = tokenizer(" " + row["answers"][0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    question_ids = tokenizer(render(""), add_special_tokens=False)["input_ids"]
    if encoded is None:
        assert len(answer_ids) + len(question_ids) > max_length - 2  # only when even an empty context cannot fit
        return
    labels, ids = encoded["labels"], encoded["input_ids"]
    assert len(ids) == len(labels) == len(encoded["attention_mask"]) <= max_length
    prompt = labels.count(-100)
    assert labels[:prompt] == [-100] * prompt and -100 not in labels[prompt:]
    assert labels[prompt:] == ids[prompt:] == answer_ids  # the whole answer and its EOS
    assert tokenizer.decode(ids[:prompt]).endswith(row["question"] + "\nAnswer:")  # the context was cut, not the question


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 149), st.integers(8, 200), st.integers(4, 40))
def test_encoder_decoder_inputs_are_the_prompt_and_labels_the_answer(tokenizer, index, max_length, max_target):
    row = load_task("generative_qa", "test")[index]
    render = lambda context: student_prompt("generative_qa", context, row["question"])  # noqa: E731
    encoded = encode_encoder_decoder(tokenizer, render, row["context"], row["answers"][0], max_length, max_target)
    answer_ids = tokenizer(row["answers"][0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if encoded is None:
        assert len(answer_ids) > max_target or len(tokenizer(render(""))["input_ids"]) > max_length - 2
        return
    assert encoded["labels"] == answer_ids and len(encoded["input_ids"]) <= max_length
    assert -100 not in encoded["input_ids"]


def test_rows_that_cannot_fit_are_counted_not_dropped_silently(tokenizer):
    dataset = load_task("extractive_qa", "validation", limit=30)
    render = lambda row, context: student_prompt("extractive_qa", context, row["question"])  # noqa: E731
    tokens, report = tokenize_dataset(dataset, tokenizer, render, is_encoder_decoder=False, max_length=20)
    assert report["kept"] + report["too_long"] == 30 and report["too_long"] > 0
    assert len(tokens) == report["kept"] and len(report["too_long_ids"]) == report["too_long"]
    roomy, report = tokenize_dataset(dataset, tokenizer, render, is_encoder_decoder=False, max_length=1024)
    assert report == {"kept": 30, "too_long": 0, "truncated": 0, "too_long_ids": []}


def test_collate_pads_inputs_masks_and_labels():
    batch = collate([dict(input_ids=[1, 2, 3], attention_mask=[1, 1, 1], labels=[-100, 2, 3]),
                     dict(input_ids=[4], attention_mask=[1], labels=[4])], pad_token_id=9, padding_side="left")
    assert batch["input_ids"].tolist() == [[1, 2, 3], [9, 9, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [-100, -100, 4]]
    with pytest.raises(ValueError, match="padding_side"):
        collate([dict(input_ids=[1], attention_mask=[1], labels=[1])], 0, "middle")


def test_a_missing_pad_token_is_added_without_colliding():
    from uld.tokenizers import load_real_tokenizer

    gpt2 = load_real_tokenizer("gpt2")
    size = len(gpt2)
    assert gpt2.pad_token_id is None and ensure_pad_token(gpt2)
    assert gpt2.pad_token_id == size and not ensure_pad_token(gpt2)
    assert gpt2.pad_token_id not in gpt2("any text at all, even <|uld_pad|>", split_special_tokens=True)["input_ids"]


def test_prompts_student_plain_teacher_few_shot():
    rows = load_task("generative_qa", "train", limit=3)
    plain = train_tokenizer(["x y z"] * 20, "bpe", 300)
    teacher = teacher_prompt(plain, "generative_qa", rows[0]["context"], rows[0]["question"], [rows[1], rows[2]])
    assert teacher.endswith(student_prompt("generative_qa", rows[0]["context"], rows[0]["question"]))
    assert teacher.count("Answer:") == 3 and rows[1]["answers"][0] in teacher
    plain.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    chat = teacher_prompt(plain, "generative_qa", rows[0]["context"], rows[0]["question"], [rows[1]])
    assert chat.startswith("<system>") and chat.endswith("<assistant>Answer:")
    assert first_line("  It was 34.\nQuestion: more") == "It was 34."
    with pytest.raises(ValueError, match="unknown task kind"):
        student_prompt("translation", "a", "b")
