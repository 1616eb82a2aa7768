"""GRID's and LRW's own files, each format's writer beside its reader.

``lipx data synth`` writes these files and ``lipx data prepare`` reads them, from a synthetic
corpus or from the real one, so both go through this module:

* GRID word alignments, ``sN/align/NAME.align``: one ``start end word`` line per segment, times in
  1/25 000 s (1000 units per video frame at 25 fps), ``sil`` before and after the sentence and
  ``sp`` for pauses between words::

      0 23750 sil
      23750 29500 bin
      29500 34000 blue
      ...
      53000 74500 sil

  Continuous test streams (``lipx data synth --layout lrw-streams|grid-streams``) use the same
  format and label every non-speech stretch: ``sil`` for silence and pauses with a live face,
  ``still`` for a frozen, non-speaking face (:data:`NON_SPEECH`; :func:`parse_segments` keeps
  them, :func:`parse_align` leaves them out).

* LRW clip metadata, ``WORD/{train,val,test}/WORD_00001.txt`` beside the ``.mp4``: the word, a
  confidence and the word's duration (the clip is 1.16 s around it)::

      Text:  ABOUT
      Conf:  1
      Duration: 0.42 seconds

  (the original files space and order these lines variously; fields are found by name).

* Where one GRID utterance's files are: :func:`grid_paths`.

The 98-point landmark text format (``path:x y,x y,...|...``) is read and written by
:mod:`lipx.landmarks`, outside this package because the packaged LRW reference face is in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lipx import video
from lipx.files import atomic_write

FPS = round(video.FPS)
"""Video frames per second of GRID and LRW (lipx's rate, :data:`lipx.video.FPS`), an int so
alignment units and sample counts stay integers."""
UNITS_PER_FRAME = 1000
"""GRID alignment time units per video frame."""
UNITS_PER_SECOND = FPS * UNITS_PER_FRAME
SILENCE = ("sil", "sp")
"""GRID alignment labels that are not words: silence at the ends, a short pause between words."""
STILL = "still"
"""Label of a frozen, non-speaking face (no speech) in a synthetic test stream."""
NON_SPEECH = (*SILENCE, STILL)
"""Every alignment label that is not a word."""
_ROUND = 250
"""``lipx data synth`` writes alignment times rounded to 250 units (10 ms)."""
_LRW_FIELD = re.compile(r"^[^\S\n]*(Text|Conf|Duration):[^\S\n]*(.*?)[^\S\n]*$", re.MULTILINE)
_NUMBER = re.compile(r"[0-9.]+")


def _write_text(path: Path, text: str) -> None:
    """Write through ``<name>.part`` beside ``path`` (parents created), then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                 tmp=path.with_name(path.name + ".part"))


# --- GRID word alignments -------------------------------------------------------------------


class TimedWord(NamedTuple):
    """A spoken word (or a :data:`NON_SPEECH` label) and its time in the clip."""

    word: str
    start: float
    """Seconds from the clip start."""
    end: float


def format_align(words: Iterable[tuple[str, float, float]], n_frames: int) -> str:
    """GRID ``.align`` text for ``(word, start_s, end_s)`` in time order, covering ``n_frames``
    video frames: times rounded to 250 units, ``sil`` before the first word and after the last,
    ``sp`` for a gap between words.

    Entries may be labelled segments of :data:`NON_SPEECH` (``sil``, ``still``) too; they are
    written as given (one that rounds to zero length is dropped), and only what no entry
    covers is filled in.
    """
    def units(t: float) -> int:
        return int(round(t * FPS * UNITS_PER_FRAME / _ROUND)) * _ROUND

    end = n_frames * UNITS_PER_FRAME
    rows, t = [], 0
    for word, a, b in words:
        start, stop = units(a), units(b)
        if start > t:
            rows.append((t, start, "sil" if t == 0 else "sp"))
        if stop > start or word not in NON_SPEECH:  # a pause shorter than the rounding goes
            rows.append((start, stop, word))
        t = stop
    if t < end:
        rows.append((t, end, "sil"))
    return "".join(f"{a} {b} {w}\n" for a, b, w in rows)


def parse_segments(text: str) -> list[TimedWord]:
    """Every segment of GRID ``.align`` text, non-speech included (``sil``, ``sp``, ``still``:
    :data:`NON_SPEECH`), in file order, times in seconds.

    Lines that are not ``start end label`` with integer times are ignored.
    """
    segments = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            segments.append(TimedWord(parts[2], int(parts[0]) / UNITS_PER_SECOND,
                                      int(parts[1]) / UNITS_PER_SECOND))
    return segments


def parse_align(text: str) -> list[TimedWord]:
    """The words of GRID ``.align`` text (``sil``, ``sp`` and ``still`` left out), times in
    seconds; :func:`parse_segments` keeps them."""
    return [s for s in parse_segments(text) if s.word not in NON_SPEECH]


def read_align(path: str | Path) -> list[TimedWord]:
    """:func:`parse_align` of a file (undecodable bytes replaced)."""
    return parse_align(Path(path).read_text(errors="replace"))


def read_segments(path: str | Path) -> list[TimedWord]:
    """:func:`parse_segments` of a file (undecodable bytes replaced)."""
    return parse_segments(Path(path).read_text(errors="replace"))


def write_align(path: str | Path, words: Iterable[tuple[str, float, float]],
                n_frames: int) -> None:
    """Write :func:`format_align` to ``path`` atomically."""
    _write_text(Path(path), format_align(words, n_frames))


# --- LRW clip metadata ----------------------------------------------------------------------


@dataclass(frozen=True)
class LrwInfo:
    """The fields of an LRW ``.txt``; a field the file lacks (or garbles) is None."""

    word: str | None
    """``Text:``, the clip's word."""
    conf: float | None
    """``Conf:``."""
    duration: float | None
    """``Duration: ... seconds``, the word's length."""


def format_lrw_info(word: str, duration: float, conf: int = 1) -> str:
    """LRW ``.txt`` text for a clip whose word lasts ``duration`` seconds."""
    return f"Text: {word}\nConf: {conf}\nDuration: {duration:.2f} seconds\n"


def parse_lrw_info(text: str) -> LrwInfo:
    """The fields of LRW ``.txt`` text (``Key: value`` lines in any order, the first of each key;
    other lines ignored)."""
    fields: dict[str, str] = {}
    for key, value in _LRW_FIELD.findall(text):
        fields.setdefault(key, value)
    return LrwInfo(fields.get("Text") or None, _number(fields.get("Conf")),
                   _number(fields.get("Duration")))


def _number(value: str | None) -> float | None:
    m = _NUMBER.match(value or "")
    try:
        return float(m.group()) if m else None
    except ValueError:  # "1.2.3"
        return None


def read_lrw_info(path: str | Path) -> LrwInfo:
    """:func:`parse_lrw_info` of a file (undecodable bytes replaced)."""
    return parse_lrw_info(Path(path).read_text(errors="replace"))


def write_lrw_info(path: str | Path, word: str, duration: float) -> None:
    """Write :func:`format_lrw_info` to ``path`` atomically."""
    _write_text(Path(path), format_lrw_info(word, duration))


# --- GRID layout ----------------------------------------------------------------------------


def grid_paths(root: str | Path, speaker: str, name: str) -> dict[str, Path]:
    """The files of GRID utterance ``name`` of ``speaker`` (``s1``) under ``root``, by kind:
    ``video`` (``sN/video/NAME.mpg``), ``audio`` (``sN/audio/NAME.wav``), ``align``
    (``sN/align/NAME.align``) and ``landmark`` (``sN/landmark/NAME.txt``)."""
    base = Path(root) / speaker
    return {"audio": base / "audio" / f"{name}.wav", "align": base / "align" / f"{name}.align",
            "landmark": base / "landmark" / f"{name}.txt", "video": base / "video" / f"{name}.mpg"}
