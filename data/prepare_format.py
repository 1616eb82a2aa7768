"""The prepared-corpus format written by ``lipx data prepare`` and read by the training data sets.

Layout of a prepared corpus ``OUT/``::

    corpus.json        format name/version, layout, fps, sample rate, mouth box, margin, labels,
                       and where each split protocol came from (users' files or the rules below)
    index.jsonl        one JSON object per clip (sorted by id), see :func:`make_record`
    report.json        the last run's counts and the clips that could not be read, with reasons
    clips/<id>.npz     one clip: GRID ``clips/s1/bbaf2n.npz``,
                       LRW ``clips/ABOUT/train/ABOUT_00001.npz``

A clip file (``numpy.savez_compressed``, no pickles) holds:

- ``video``: (T, S, S) uint8 luma of the aligned face's mouth box grown by ``margin`` px on each
  side (S = 136 + 2 margin; the region's top-left is at (59 - margin, 95 - margin) of the 256x256
  face), 25 fps. :func:`lipx.video.mouth_crop` with ``origin=region_origin(spec, margin)`` turns it
  into model input; the margin leaves room for crop jitter.
- ``audio``: (T * 640,) int16, 16 kHz mono, exactly as long as the video (GRID: 55 Hz high-pass).
- ``meta``: a JSON string (id, speaker, text, word, label, fps, sample_rate, margin, box, source,
  words with times in seconds for GRID, duration from LRW's .txt).

Split protocols (each record's ``splits`` maps protocol -> list of parts it belongs to):

- LRW ``lrw``: train / val / test from the folder.
- GRID ``overlap`` (multi-speaker): every speaker; per speaker 25.6 % of the utterances are held
  out (the original's 8,415 of 32,822); the held-out clips are both ``val`` and ``test`` (the
  original tests on its validation list).
- GRID ``unseen``: speakers in natural order; the last round(10/33 n) (at least 1) are ``test``,
  the round(7/33 n) before them (at least 1 when n >= 3) ``val``, the rest ``train`` (33 speakers
  give the original's 16/7/10 sizes, not its speaker choice: pass its ``unseen_splits.txt`` for
  that). With 2 speakers the second is ``val`` and ``test``; with 1 the protocol is absent.
- GRID ``four``: s1, s2, s4, s29 if all present, else the first four speakers; per speaker 5 % of
  utterances ``test``, 5 % ``val`` (at least 1 each from 3 utterances), the rest ``train``.
- GRID ``sN`` (one per speaker): that speaker's utterances with the ``four`` rule.

Utterances are ordered by a CRC32 of their id (salted per protocol), so the rules are
deterministic and independent of file-system order. Users' split files (``--splits DIR``) replace
the rule of each protocol they cover: ``overlap_{train,val,test}.txt``, ``{train,val,test}_4.txt``,
``unseen_{train,val,test}.txt`` and ``unseen_splits.txt`` (lines ``part/sN/name``); any line naming
``sN`` and the utterance (``sN/video/name.mpg``, ``sN/name``) is understood.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import InputError
from lipx.files import atomic_write

FORMAT = "lipx-prepared"
VERSION = 1
PARTS = ("train", "val", "test")
FOUR_SPEAKERS = ("s1", "s2", "s4", "s29")
_SPLIT_LINE = re.compile(r"(?:(train|val|test)/)?(s\d+)/(?:video/)?([A-Za-z0-9_\-]+)")


# --- clip files -----------------------------------------------------------------------------


def write_clip(path: Path, video: np.ndarray, audio: np.ndarray, meta: dict) -> None:
    """Write one clip atomically (temporary file, then rename).

    Args:
        video: (T, S, S) uint8 luma region.
        audio: (N,) float32 in [-1, 1] (stored as int16).
    """
    pcm = np.clip(np.rint(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, video=np.ascontiguousarray(video, np.uint8), audio=pcm,
                        meta=np.array(json.dumps(meta)))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data), tmp=path.with_name(path.name + ".tmp"))


def read_meta(path: Path) -> dict:
    """The ``meta`` of a clip file, without decompressing its video."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"]))


def read_clip(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a clip file.

    Returns:
        video (T, S, S) uint8, audio (N,) float32 in [-1, 1], meta dict.

    Raises:
        InputError: the file is missing or unreadable.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            video, pcm, meta = data["video"], data["audio"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zlib.error) as e:
        raise InputError(f"cannot read prepared clip {path}: {e}; re-run `lipx data prepare` "
                         "with --overwrite") from e
    return video, pcm.astype(np.float32) / 32768.0, meta


# --- index and corpus description -----------------------------------------------------------


def make_record(meta: dict, path: str) -> dict:
    """An index line: id, path (relative to the corpus), speaker, text, word, label, frames,
    samples, splits (filled by :func:`assign_splits`)."""
    keys = ("id", "speaker", "text", "word", "label", "frames", "samples")
    return {**{k: meta.get(k) for k in keys}, "path": path, "splits": {}}


def write_json_atomic(path: Path, obj: Any, lines: bool = False) -> None:
    """Write JSON (or JSON lines, one per item) atomically."""
    if lines:
        text = "".join(json.dumps(item, sort_keys=True) + "\n" for item in obj)
    else:
        text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text), tmp=path.with_name(path.name + ".tmp"))


def corpus_framing(corpus: dict) -> str:
    """How a prepared corpus' faces are framed (:data:`lipx.landmarks.FRAMINGS`): ``synthetic``
    for an LRW-layout corpus of ``lipx data synth`` (its renderer's frame), else ``landmarks``
    (GRID, aligned with its landmark files; and LRW itself, whose framing those approximate)."""
    synth = corpus.get("synth")
    return "synthetic" if isinstance(synth, dict) and synth.get("layout") == "lrw" else "landmarks"


def read_corpus(root: str | Path) -> tuple[dict, list[dict]]:
    """Read ``corpus.json`` and ``index.jsonl`` of a prepared corpus.

    Raises:
        InputError: not a prepared corpus, or a format version this lipx cannot read.
    """
    root = Path(root)
    try:
        corpus = json.loads((root / "corpus.json").read_text())
        lines = (root / "index.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line]
    except (OSError, ValueError) as e:
        raise InputError(f"{root} is not a prepared corpus ({e}); run `lipx data prepare grid|lrw "
                         f"SRC -o {root}` first") from e
    if corpus.get("format") != FORMAT or corpus.get("version") != VERSION:
        found = f"{corpus.get('format')} v{corpus.get('version')}"
        raise InputError(f"{root}: prepared format {found}, expected {FORMAT} v{VERSION}; "
                         "re-run `lipx data prepare --overwrite`")
    return corpus, records


def select(records: Iterable[dict], protocol: str, part: str) -> list[dict]:
    """The records of ``part`` (train/val/test) in split ``protocol``.

    Raises:
        InputError: no record belongs to that protocol at all (unknown or absent protocol).
    """
    records = list(records)
    known = sorted({p for r in records for p in r["splits"]})
    if protocol not in known:
        from lipx.errors import did_you_mean

        hint = did_you_mean(protocol, known)
        raise InputError(f"split protocol {protocol!r} is not in this corpus{hint}")
    if part not in PARTS:
        raise InputError(f"unknown split part {part!r}; choose from: {', '.join(PARTS)}")
    return [r for r in records if part in r["splits"].get(protocol, ())]


LAYOUT_SPLITS = {"lipreading": "lrw"}
"""Task -> the one split protocol of its corpora's layout (LRW's ``lrw``), its default."""
PREFERRED_SPLITS = ("unseen", "overlap", "four")
"""The default split of a task not in :data:`LAYOUT_SPLITS` (lip-to-speech): the first of these
the corpus has (GRID's speaker-independent, multi-speaker, then four-speaker protocol), else its
first protocol."""


def default_split(task: str, root: str | Path) -> str:
    """The split protocol a task's training, evaluation and benchmark use on the prepared corpus
    ``root`` when none is given: its layout's (:data:`LAYOUT_SPLITS`: ``lrw`` for lipreading),
    else the first of :data:`PREFERRED_SPLITS` the corpus has, else its first protocol.

    Raises:
        InputError: ``root`` is not a prepared corpus, or (lip-to-speech) has no protocols.
    """
    _, records = read_corpus(root)
    protocols = sorted({p for r in records for p in r["splits"]})
    if task in LAYOUT_SPLITS:
        return LAYOUT_SPLITS[task]
    for choice in PREFERRED_SPLITS:
        if choice in protocols:
            return choice
    if not protocols:
        raise InputError(f"{root} has no split protocols")
    return protocols[0]


# --- split rules ----------------------------------------------------------------------------


def natural_key(name: str) -> list:
    """Sort key that orders s2 before s10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _ordered(ids: Iterable[str], salt: str) -> list[str]:
    return sorted(ids, key=lambda i: (zlib.crc32(f"{salt}/{i}".encode()), i))


def _held_out(ids: list[str], salt: str, fraction: float,
              minimum: int) -> tuple[set[str], list[str]]:
    ordered = _ordered(ids, salt)
    count = max(minimum, round(fraction * len(ordered))) if len(ordered) > minimum else 0
    return set(ordered[:count]), ordered[count:]


def _utterance_parts(ids: list[str], salt: str) -> dict[str, list[str]]:
    ordered = _ordered(ids, salt)
    k = max(1, round(0.05 * len(ordered))) if len(ordered) >= 3 else 0
    return {i: (["test"] if n < k else ["val"] if n < 2 * k else ["train"])
            for n, i in enumerate(ordered)}


def speaker_parts(speakers: list[str]) -> dict[str, list[str]]:
    """GRID ``unseen``: speaker -> parts, for speakers in natural order (the rule above)."""
    n = len(speakers)
    if n < 2:
        return {}
    if n == 2:
        return {speakers[0]: ["train"], speakers[1]: ["val", "test"]}
    n_test = max(1, round(n * 10 / 33))
    n_val = max(1, round(n * 7 / 33))
    n_train = max(1, n - n_test - n_val)
    n_val = n - n_test - n_train
    return {s: (["train"] if i < n_train else ["val"] if i < n_train + n_val else ["test"])
            for i, s in enumerate(speakers)}


def generated_grid_splits(records: list[dict]) -> dict[str, dict[str, list[str]]]:
    """The documented rules: protocol -> clip id -> parts, for GRID records."""
    by_speaker: dict[str, list[str]] = {}
    for r in records:
        by_speaker.setdefault(r["speaker"], []).append(r["id"])
    speakers = sorted(by_speaker, key=natural_key)
    four = [s for s in FOUR_SPEAKERS if s in by_speaker]
    four = four if len(four) == len(FOUR_SPEAKERS) else speakers[:4]
    splits: dict[str, dict[str, list[str]]] = {"overlap": {}, "unseen": {}, "four": {}}
    unseen = speaker_parts(speakers)
    for s in speakers:
        ids = by_speaker[s]
        held, _ = _held_out(ids, "overlap", 0.256, 1 if len(ids) >= 2 else 0)
        splits["overlap"].update({i: (["val", "test"] if i in held else ["train"]) for i in ids})
        if s in unseen:
            splits["unseen"].update({i: unseen[s] for i in ids})
        parts = _utterance_parts(ids, "four")
        splits[s] = parts
        if s in four:
            splits["four"].update(parts)
    return splits


def read_split_files(folder: Path) -> dict[str, dict[str, list[str]]]:
    """Users' GRID split lists in ``folder``: protocol -> clip id (``sN/name``) -> parts."""
    files: dict[str, tuple[str, str | None]] = {f"overlap_{p}.txt": ("overlap", p) for p in PARTS}
    files.update({f"{p}_4.txt": ("four", p) for p in PARTS})
    files.update({f"unseen_{p}.txt": ("unseen", p) for p in PARTS})
    files["unseen_splits.txt"] = ("unseen", None)
    splits: dict[str, dict[str, list[str]]] = {}
    for name, (protocol, part) in files.items():
        if not (folder / name).is_file():
            continue
        table = splits.setdefault(protocol, {})
        for line in (folder / name).read_text().splitlines():
            m = _SPLIT_LINE.search(line)
            if m and (part or m.group(1)):
                parts = table.setdefault(f"{m.group(2)}/{m.group(3)}", [])
                parts.append(part or m.group(1))
    if "overlap" in splits and not any("test" in p for p in splits["overlap"].values()):
        for parts in splits["overlap"].values():  # the original tests on its validation list
            parts += ["test"] if "val" in parts else []
    return splits


def assign_splits(records: list[dict], layout: str, split_dir: Path | None) -> dict[str, str]:
    """Fill each record's ``splits``; returns protocol -> source ("folders", "rule" or "files")."""
    if layout == "lrw":
        for r in records:
            r["splits"] = {"lrw": [r["id"].split("/")[1]]}
        return {"lrw": "folders"}
    tables = generated_grid_splits(records)
    sources = {p: "rule" for p in tables}
    given = read_split_files(split_dir) if split_dir else {}
    if split_dir and not given:
        raise InputError(f"no GRID split files found in {split_dir}; expected overlap_train.txt, "
                         "train_4.txt, unseen_splits.txt, ...")
    for protocol, table in given.items():
        tables[protocol] = table
        sources[protocol] = "files"
    if "four" in given:  # sN follows the four lists for the speakers they cover
        for speaker in {clip_id.split("/")[0] for clip_id in given["four"]}:
            prefix = speaker + "/"
            tables[speaker] = {i: p for i, p in given["four"].items() if i.startswith(prefix)}
    for r in records:
        r["splits"] = {p: sorted(set(t[r["id"]])) for p, t in tables.items() if r["id"] in t}
    return sources
