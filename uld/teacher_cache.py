"""The teacher cache: what ULD needs of the teacher, computed once and kept on disk.

ULD compares *sorted* probability vectors, so it never needs to know which token a
teacher probability belongs to. Per teacher answer position the ``k`` largest
probabilities, sorted, and the mass of the rest are all the training reads (the top-k
form of `uld.distance.top_k_uld_distance`, exact when ``k`` covers the teacher's vocabulary).
Computing them once lets every run on the same teacher answers (other lambdas, seeds,
students with the same prompts) train without loading the teacher at all.

On disk, a folder::

    meta.json            k, temperature, storage dtype, examples, shard size, fingerprint,
                         and per finished shard its examples and SHA-256 ("shards")
    shard-00000.npz      head [rows, k] (float16 by default), tail [rows] float32,
    shard-00001.npz      sizes [examples in the shard] int32 (answer positions each),
                         with ``token_ids=True`` also index [rows, k] int32 (for KL)

Shards are written whole (scratch file, then rename), so an interrupted build keeps the
finished shards and redoes only the rest. The fingerprint hashes the teacher token ids
the cache was built from: a cache is never used for other pairs. A shard that cannot be
read, fails its checksum (truncated, or another shard copied over it) or holds another
number of examples is rebuilt by the next build, with one line naming it; loading such a
cache raises ``ValueError`` naming the file. One answer token costs
``2 k + 4`` bytes in float16 (516 bytes at k = 256). Token-level KL on a shared
vocabulary (the positive control) needs to know which token each probability belongs to:
built with ``token_ids=True`` the cache keeps those too (``6 k + 4`` bytes a token, 1,540 at k = 256).

    cache = build_teacher_cache(teacher, pairs, "runs/x/teacher_cache", top_k=256)
    batch = cache.rows([0, 5, 7])          # a uld.loss.SortedTeacher for ULDLoss.from_sorted_teacher
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from uld.alignment import shift_labels
from uld.storage import write_atomically
from uld.distance import top_k_and_tail_mass
from uld.loss import SortedTeacher

__all__ = ["TeacherCache", "build_teacher_cache", "answer_logits", "sorted_answer_rows", "pairs_fingerprint",
           "CACHE_DTYPES"]

FORMAT = 1
CACHE_DTYPES = ("float16", "float32")


def answer_logits(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *alongside: Tensor,
                  ignore_index: int = -100) -> tuple[Tensor, ...]:
    """A frozen teacher's logits where the answers are, and the labels cut to match.

    A decoder's logits are computed only for the last positions of the batch from the one
    before the earliest answer token on (``logits_to_keep``): a 262,144-token vocabulary over
    a 768-token few-shot prompt is 805 MB of float32 logits per row, almost all of them on
    the prompt. Models whose forward takes no ``logits_to_keep`` (and encoder-decoders, whose
    labels are the decoder's own) get the full logits. Either way ``(logits [B, T', V],
    labels [B, T'])`` pair as `sorted_answer_rows` and `uld.loss.ULDLoss` expect; tensors
    ``alongside`` the labels (``[B, T, ...]``, e.g. character offsets) come back cut the same way.
    """
    keeps = not getattr(model.config, "is_encoder_decoder", False) and _takes_logits_to_keep(type(model))
    answer = (labels != ignore_index).any(0).nonzero()
    if not keeps or len(answer) == 0:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits, labels, *alongside
    first = max(int(answer[0]) - 1, 0)  # position t predicts label t + 1
    kept = labels.shape[1] - first
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=kept).logits
    return logits, labels[:, first:], *(tensor[:, first:] for tensor in alongside)


@functools.lru_cache(maxsize=None)
def _takes_logits_to_keep(model_class) -> bool:
    """Whether a model class's forward takes ``logits_to_keep`` (read once per class: the live
    teacher asks at every training batch)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def sorted_answer_rows(logits: Tensor, labels: Tensor, *, top_k: int, temperature: float = 1.0,
                       is_encoder_decoder: bool = False, ignore_index: int = -100) -> SortedTeacher:
    """The sorted heads and tail masses of a teacher batch's answer positions.

    Args:
        logits: ``[B, T, V]`` teacher logits; labels: ``[B, T]`` with prompt and padding
            at ``ignore_index`` (a decoder's position ``t`` predicts label ``t + 1``).
        top_k: how many probabilities to keep per position (at most ``V``).

    Returns a `SortedTeacher` (float32 or float64 values, no ``rounding``, the head's
    token ids as ``index``).

    >>> logits = torch.log(torch.tensor([[[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [1.0, 1.0, 1.0]]]))
    >>> rows = sorted_answer_rows(logits, torch.tensor([[-100, 4, 5]]), top_k=2)
    >>> rows.head, rows.tail, rows.sizes
    (tensor([[0.7000, 0.2000],
            [0.5000, 0.3000]]), tensor([0.1000, 0.2000]), tensor([2]))
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not float(temperature) > 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    labels = shift_labels(labels, is_encoder_decoder, ignore_index)
    answer = labels != ignore_index
    dtype = torch.promote_types(torch.float32, logits.dtype)
    z = logits[answer].to(dtype)
    if torch.isnan(z).any() or torch.isposinf(z).any():
        raise ValueError("teacher logits contain NaN or +inf at answer positions")
    probs = torch.softmax(z / temperature, -1)
    head, tail, index = top_k_and_tail_mass(probs, top_k)
    return SortedTeacher(head, tail, answer.sum(1), index=index)


class TeacherCache:
    """A finished cache folder, loaded into memory; `rows` serves training batches."""

    def __init__(self, folder):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise ValueError(f"{self.folder} is not a teacher cache (no meta.json)")
        self.meta = _read_meta(meta_path)
        missing = [path.name for path in _shard_paths(self.folder, self.meta) if not path.exists()]
        if missing:
            raise ValueError(f"teacher cache {self.folder} is unfinished: {len(missing)} shards missing "
                             f"(first: {missing[0]}); build it again to finish it")
        heads, tails, sizes, indices = [], [], [], []
        records = self.meta.get("shards", {})
        for path, (first, last) in zip(_shard_paths(self.folder, self.meta), _shard_ranges(self.meta)):
            shard, problem = _read_shard(path, records.get(path.name), first, last, self.has_token_ids)
            if problem:
                raise ValueError(f"teacher cache shard {path} {problem}; build the cache again to rebuild it")
            heads.append(shard["head"])
            tails.append(shard["tail"])
            sizes.append(shard["sizes"])
            if self.has_token_ids:
                indices.append(shard["index"])
        self.head = torch.from_numpy(np.concatenate(heads))
        self.tail = torch.from_numpy(np.concatenate(tails))
        self.index = torch.from_numpy(np.concatenate(indices)).long() if self.has_token_ids else None
        sizes = torch.from_numpy(np.concatenate(sizes)).long()
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes, 0)])
        unit = float(np.finfo(self.meta["dtype"]).eps) / 2
        smallest = float(np.finfo(self.meta["dtype"]).smallest_subnormal)
        # |x - stored(x)| <= unit |x| for normal values, <= half the smallest subnormal below them.
        self.rounding = (unit / (1 - unit)) * (self.head.double().sum(-1) + self.tail.double()) \
            + self.head.shape[-1] * smallest / 2 + float(np.finfo(np.float32).eps) * self.tail.double()

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @property
    def top_k(self) -> int:
        return self.meta["top_k"]

    @property
    def temperature(self) -> float:
        return self.meta["temperature"]

    @property
    def has_token_ids(self) -> bool:
        """Whether the head's token ids were kept (``token_ids=True``: what KL needs)."""
        return bool(self.meta.get("token_ids", False))

    @property
    def bytes_per_token(self) -> int:
        """Bytes on disk per answer token: the head, the tail (float32), the token ids (int32) if kept."""
        return self.head.shape[-1] * (self.head.element_size() + 4 * self.has_token_ids) + 4

    def rows(self, indices) -> SortedTeacher:
        """The cached answers of examples ``indices`` (in that order), as one batch."""
        indices = torch.as_tensor(list(indices), dtype=torch.long)
        if indices.numel() and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"example index out of range for a cache of {len(self)} examples")
        starts, ends = self.offsets[indices], self.offsets[indices + 1]
        rows = torch.cat([torch.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())]) if indices.numel() \
            else torch.zeros(0, dtype=torch.long)
        return SortedTeacher(self.head[rows].float(), self.tail[rows], ends - starts, self.rounding[rows].float(),
                             None if self.index is None else self.index[rows])


def build_teacher_cache(teacher, pairs, folder, *, top_k: int = 256, temperature: float = 1.0,
                        pad_token_id: int, dtype: str = "float16", batch_size: int = 16, shard_size: int = 256,
                        token_ids: bool = False, progress: bool = True, echo=print) -> TeacherCache:
    """Run ``teacher`` once over the teacher side of ``pairs`` and store its sorted answers.

    Args:
        teacher: the frozen teacher model (decoder or encoder-decoder), or a function
            returning it, called only when some shard is still missing.
        pairs: rows with ``teacher_input_ids``, ``teacher_attention_mask``,
            ``teacher_labels`` (as `uld.trainer.build_pairs` makes them); example ``i`` of
            the cache is row ``i``.
        folder: the cache folder; an existing cache of the same pairs and settings is
            reused (its finished shards kept), one of other pairs raises ``ValueError``.
        top_k, temperature: what is kept: the ``top_k`` largest probabilities at this
            teacher temperature (the loss's teacher temperature must match).
        dtype: storage of the head, ``float16`` (half the bytes, a rounding the loss's
            bound includes) or ``float32``.
        token_ids: also keep each head probability's token id (int32, 4 more bytes per
            kept probability), for token-level KL (`uld.loss.TokenKLLoss`); ULD needs none.
        echo: where the line naming a corrupt shard (rebuilt) goes.
    """
    from tqdm.auto import tqdm

    from uld.data import collate

    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if "teacher_input_ids" not in pairs.column_names:
        raise ValueError("pairs have no teacher side (teacher_input_ids); build them for the uld method")
    folder = Path(folder)
    meta = {"format": FORMAT, "top_k": top_k, "temperature": float(temperature), "dtype": dtype,
            "examples": len(pairs), "shard_size": shard_size, "fingerprint": pairs_fingerprint(pairs)}
    if token_ids:  # only then, so that caches built before token ids existed stay valid
        meta["token_ids"] = True
    records = _claim(folder, meta)
    load = (lambda: teacher) if isinstance(teacher, torch.nn.Module) else teacher
    bar = tqdm(total=len(pairs), desc="teacher cache", disable=not progress)
    for path, (first, last) in zip(_shard_paths(folder, meta), _shard_ranges(meta)):
        if path.exists():
            _, problem = _read_shard(path, records.get(path.name), first, last, token_ids)
            if not problem:
                if path.name not in records:  # a shard of a cache built before checksums: record it now
                    records[path.name] = _shard_record(path, first, last)
                    write_atomically(folder / "meta.json", json.dumps({**meta, "shards": records}, indent=2))
                bar.update(last - first)
                continue
            echo(f"teacher cache shard {path} {problem}: rebuilding it")
        model = load().eval()
        device = next(model.parameters()).device
        is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        heads, tails, sizes, indices = [], [], [], []
        for start in range(first, last, batch_size):
            rows = pairs.select(range(start, min(start + batch_size, last)))
            batch = collate([{key: r[f"teacher_{key}"] for key in ("input_ids", "attention_mask", "labels")}
                             for r in rows], pad_token_id)
            with torch.no_grad():
                logits, labels = answer_logits(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                               batch["labels"].to(device))
            part = sorted_answer_rows(logits, labels, top_k=top_k, temperature=temperature,
                                      is_encoder_decoder=is_encoder_decoder)
            heads.append(part.head.cpu().numpy().astype(dtype))
            tails.append(part.tail.cpu().numpy().astype(np.float32))
            sizes.append(part.sizes.cpu().numpy().astype(np.int32))
            indices.append(part.index.cpu().numpy().astype(np.int32))
            bar.update(len(rows))
        kept = {"index": np.concatenate(indices)} if token_ids else {}
        _save_shard(path, head=np.concatenate(heads), tail=np.concatenate(tails), sizes=np.concatenate(sizes), **kept)
        records[path.name] = _shard_record(path, first, last)
        write_atomically(folder / "meta.json", json.dumps({**meta, "shards": records}, indent=2))
    bar.close()
    return TeacherCache(folder)


def _claim(folder: Path, meta: dict) -> dict:
    """Write ``meta.json``, or check that the one there describes the same cache; returns
    the finished shards' records (``{name: {"first", "last", "sha256"}}``)."""
    path = folder / "meta.json"
    if path.exists():
        found = _read_meta(path)
        records = found.pop("shards", {})
        if found != meta:
            changed = sorted(key for key in meta if found.get(key) != meta[key])
            raise ValueError(f"{folder} holds a teacher cache built with other {', '.join(changed)}; "
                             f"delete it or choose another folder")
        return records
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(meta, indent=2))
    return {}


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except ValueError as problem:
        raise ValueError(f"teacher cache {path} cannot be read ({type(problem).__name__}); delete the folder "
                         f"to build the cache again") from None
    if not isinstance(meta, dict):
        raise ValueError(f"teacher cache {path} does not describe a cache; delete the folder to build it again")
    return meta


def _shard_paths(folder: Path, meta: dict) -> list[Path]:
    count = -(-meta["examples"] // meta["shard_size"])
    return [folder / f"shard-{number:05d}.npz" for number in range(count)]


def _shard_ranges(meta: dict) -> list[tuple[int, int]]:
    """The examples ``[first, last)`` of each shard, in order."""
    size, examples = meta["shard_size"], meta["examples"]
    return [(start, min(start + size, examples)) for start in range(0, examples, size)]


def _shard_record(path: Path, first: int, last: int) -> dict:
    return {"first": first, "last": last, "sha256": _sha256(path)}


def _read_shard(path: Path, record: dict | None, first: int, last: int, token_ids: bool) -> tuple[dict, str]:
    """The shard's arrays and ``""``, or ``({}, what is wrong with it)``. ``record`` is the
    shard's entry in meta.json (None for a cache built before checksums were kept)."""
    if record is not None:
        if (record.get("first"), record.get("last")) != (first, last):
            return {}, f"is recorded for examples {record.get('first')}-{record.get('last')}, not {first}-{last}"
        if record.get("sha256") != _sha256(path):
            return {}, "does not match its checksum in meta.json (truncated, or another file copied over it)"
    try:
        with np.load(path) as shard:
            arrays = {name: shard[name] for name in ("head", "tail", "sizes", *(("index",) if token_ids else ()))}
    except Exception as problem:  # noqa: BLE001 - zip, pickle and key errors alike mean an unreadable shard
        return {}, f"cannot be read ({type(problem).__name__})"
    rows = int(arrays["sizes"].sum())
    if len(arrays["sizes"]) != last - first or any(len(arrays[name]) != rows for name in arrays if name != "sizes"):
        return {}, f"holds {len(arrays['sizes'])} examples, not the {last - first} of examples {first}-{last}"
    return arrays, ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_shard(path: Path, **arrays) -> None:
    scratch = path.with_name(path.name + ".partial")
    with open(scratch, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(scratch, path)


def pairs_fingerprint(pairs) -> str:
    """A hash of the pairs' teacher token ids and labels, row by row (hex)."""
    digest = hashlib.sha256()
    for ids, labels in zip(pairs["teacher_input_ids"], pairs["teacher_labels"]):
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(b"|")
        digest.update(np.asarray(labels, dtype=np.int64).tobytes())
        digest.update(b"\n")
    return digest.hexdigest()
