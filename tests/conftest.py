import os
import sys

# Nothing in the tests may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """The default teacher and student, their tokenizers, and 24 training rows with teacher answers."""
    from uld.data import load_task
    from uld.models import load_model, load_tokenizer
    from uld.teacher_answers import generate_teacher_answers

    cache = tmp_path_factory.mktemp("pair-cache")
    teacher, teacher_tokenizer = load_model("default-teacher", cache=cache), load_tokenizer("default-teacher", cache)
    student_tokenizer = load_tokenizer("default-student", cache)
    rows = load_task("extractive_qa", "train", limit=24)
    answered = generate_teacher_answers(teacher, teacher_tokenizer, rows, kind="extractive_qa", shots=1,
                                        run_dir=tmp_path_factory.mktemp("run"), max_new_tokens=8, progress=False)
    return dict(cache=cache, teacher=teacher, teacher_tokenizer=teacher_tokenizer,
                student_tokenizer=student_tokenizer, rows=answered)
