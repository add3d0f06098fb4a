"""Prompts: the teacher's few-shot prompt and the student's zero-shot plain prompt.

The paper's recipe: the teacher answers the training questions with a few-shot prompt
(its chat template when it has one), greedy, and only the first line of its answer is
kept; the student is trained and evaluated zero-shot on a plain prompt.

>>> student_prompt("extractive_qa", "Ada was born in Lund.", "Where was Ada born?")
'Context: Ada was born in Lund.\\nQuestion: Where was Ada born?\\nAnswer:'
>>> first_line(" Lund.\\nQuestion: next one")
'Lund.'
"""

from __future__ import annotations

__all__ = ["KINDS", "INSTRUCTIONS", "student_prompt", "teacher_prompt", "teacher_messages", "follow_up_question",
           "first_line", "draw_shots", "shots_for_row"]

KINDS = ("extractive_qa", "generative_qa", "summarization")
INSTRUCTIONS = {
    "extractive_qa": "Answer the question with a short span copied from the context.",
    "generative_qa": "Answer the question in one short sentence, using the context.",
    "summarization": "Summarize the dialogue in one sentence.",
}
_ANSWER_CUE = {"extractive_qa": "Answer:", "generative_qa": "Answer:", "summarization": "Summary:"}


def _request(kind: str, context: str, question: str) -> str:
    if kind not in _ANSWER_CUE:
        raise ValueError(f"unknown task kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "summarization":
        return f"Dialogue:\n{context}"
    return f"Context: {context}\nQuestion: {question}"


def student_prompt(kind: str, context: str, question: str) -> str:
    """The plain zero-shot prompt; the answer follows after a space."""
    return f"{_request(kind, context, question)}\n{_ANSWER_CUE[kind]}"


def follow_up_question(kind: str, question: str) -> str:
    """Another question on the same context, after an answer (the task teachers' training text).

    >>> follow_up_question("extractive_qa", "Where was Ada born?")
    '\\nQuestion: Where was Ada born?\\nAnswer:'
    """
    if kind == "summarization":
        raise ValueError("a dialogue has one summary: no follow-up question")
    return f"\nQuestion: {question}\n{_ANSWER_CUE[kind]}"


def teacher_messages(kind: str, context: str, question: str, shots: list[dict]) -> list[dict]:
    """Chat messages: the instruction, one user/assistant pair per shot, then the request.

    ``shots`` are records with ``context``, ``question`` and ``answers`` (the first answer
    is shown).
    """
    messages = [{"role": "system", "content": INSTRUCTIONS[kind]}] if kind in INSTRUCTIONS else []
    for shot in shots:
        messages.append({"role": "user", "content": _request(kind, shot["context"], shot["question"])})
        messages.append({"role": "assistant", "content": f"{_ANSWER_CUE[kind]} {shot['answers'][0]}"})
    messages.append({"role": "user", "content": _request(kind, context, question)})
    return messages


def teacher_prompt(tokenizer, kind: str, context: str, question: str, shots: list[dict]) -> str:
    """The teacher's few-shot prompt, ending where its answer starts (after the answer cue).

    With a chat template the messages are rendered by it (a system turn is folded into the
    first user turn when the template rejects system messages); without one, the shots
    are plain text blocks separated by blank lines.
    """
    messages = teacher_messages(kind, context, question, shots)
    if getattr(tokenizer, "chat_template", None):
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # templates such as Mistral's refuse a system role
            merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}] + messages[2:]
            rendered = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return f"{rendered}{_ANSWER_CUE[kind]}"
    blocks = [f"{INSTRUCTIONS[kind]}"]
    blocks += [f"{_request(kind, s['context'], s['question'])}\n{_ANSWER_CUE[kind]} {s['answers'][0]}" for s in shots]
    blocks.append(student_prompt(kind, context, question))
    return "\n\n".join(blocks)


def first_line(text: str) -> str:
    """A generated answer cut at its first line break, as the paper keeps it."""
    return text.strip().split("\n", 1)[0].strip()


def draw_shots(train_rows, count: int, seed: int = 0, exclude_id: str | None = None) -> list[dict]:
    """``count`` few-shot examples drawn (seeded) from training rows, never the row being asked.

    >>> rows = [{"id": str(i), "context": "c", "question": "q", "answers": [str(i)]} for i in range(10)]
    >>> [shot["id"] for shot in draw_shots(rows, 3, seed=0, exclude_id="4")]
    ['7', '9', '0']
    """
    import random

    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pool = [row for row in train_rows if row["id"] != exclude_id]
    if count > len(pool):
        raise ValueError(f"asked for {count} shots from {len(pool)} training rows")
    return random.Random(seed).sample(pool, count)


def shots_for_row(pool, count: int, seed: int, index: int, row_id: str) -> list[dict]:
    """The shots of row ``index`` in a run seeded with ``seed``.

    The teacher's prompt when it answers a question and its prompt when its logits are
    read during training must be the same, so both draw their shots here.
    """
    return draw_shots(pool, count, seed=seed * 1_000_003 + index, exclude_id=row_id)
