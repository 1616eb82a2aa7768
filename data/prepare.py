"""``lipx data prepare grid|lrw``: real GRID / LRW corpora -> the prepared training format.

Input layouts:

- GRID: ``SRC/sN/video/NAME.mpg`` (or ``.mp4``; ``SRC/sN/NAME.mpg`` if there is no ``video``
  folder) with the audio track inside, or ``SRC/sN/audio/NAME.wav`` when present (preferred);
  word alignments ``SRC/sN/align/NAME.align`` (optional; give the sentence text); 98-point
  landmarks in the original's text format, searched in this order:
  ``SRC/sN/landmark/NAME.txt`` (``lipx data synth`` writes them here),
  ``SRC/sN/landmarks/NAME.txt``, ``SRC/landmark/sN/NAME.txt``, ``SRC/landmarks/sN/NAME.txt``.
- LRW: ``SRC/WORD/{train,val,test}/WORD_NNNNN.mp4`` (+ ``.txt`` with ``Duration: ... seconds``).

Per clip: decode, resample to 25 fps; GRID aligns every frame to the LRW reference face by a
similarity transform on its 98 landmarks (a frame without landmarks uses the nearest frame's); a
GRID video without a landmark file (a user's own recording) is aligned by the ``--crop auto`` face
tracker given as ``PrepareOptions.tracker`` (the CLI always gives it), frame by frame and
causally, exactly as ``lipx stream --crop auto`` aligns it, so a model trained on such videos sees
in a stream the crop it saw in training (a frame where the tracker knows no face uses the
nearest frame's alignment); LRW
uses the frames as they are (already in the 256x256 face geometry); both keep the uint8 luma mouth
region (box + margin) and 16 kHz audio cut or zero-padded to the video's length (GRID: 55 Hz
high-pass, padded at the end; LRW: centred, as the original). Clips that cannot be used (corrupt,
truncated, no audio, too short, missing or bad landmarks, wrong frame size) are skipped and
listed in ``report.json``. Finished clips are skipped on a re-run (``overwrite`` redoes them).
GRID ``.align`` and LRW ``.txt`` files are read by :mod:`lipx.data.formats` (which also writes
them for ``lipx data synth``), landmark files by :mod:`lipx.landmarks`. The output format is
described in :mod:`lipx.data.prepare_format`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lipx import __version__
from lipx import video as vid
from lipx.audio import SAMPLE_RATE, NoAudioError, fit_length, highpass, load_audio
from lipx.data import prepare_format as fmt
from lipx.data.formats import grid_paths, read_align, read_lrw_info
from lipx.errors import InputError
from lipx.landmarks import N_POINTS, align_face, read_landmarks, warp_face
from lipx.video import VideoSpec

log = logging.getLogger(__name__)

LAYOUTS = ("grid", "lrw")
MIN_FRAMES = {"grid": 25, "lrw": 29}
"""Default shortest usable clip per layout (GRID 1 s; LRW clips are 29 frames)."""
VIDEO_SUFFIXES = (".mpg", ".mpeg", ".mp4")
LANDMARK_DIRS = ("{s}/landmark", "{s}/landmarks", "landmark/{s}", "landmarks/{s}")
"""Where a GRID video's landmark file NAME.txt is looked for, relative to SRC, in this order."""
_SPEAKER = re.compile(r"s\d+")
_SPEC = VideoSpec()
_SAMPLES_PER_FRAME = round(SAMPLE_RATE / _SPEC.fps)
"""Audio samples per video frame (640): a clip's audio is cut to this many per frame."""

Progress = Callable[[int, int], None]
"""progress(done, total), called after every clip."""


class FaceTracker(Protocol):
    """What prepare needs of ``--crop auto``'s tracker (:class:`lipx.runtime.landmark_tracker.
    LandmarkTracker`): fed frames in order, it knows each frame's source -> face transform."""

    def __call__(self, frame: np.ndarray) -> object:
        """Track one (H, W, 3) uint8 RGB frame."""

    def transform(self) -> np.ndarray | None:
        """(2, 3) source pixels -> 256x256 LRW face, or None while no face is known."""


@dataclass(frozen=True)
class PrepareOptions:
    """What ``lipx data prepare`` does."""

    layout: str
    """``grid`` or ``lrw``: the source layout."""
    src: Path
    """Root of the source corpus."""
    out: Path
    """Output folder (created); must not be inside ``src``."""
    workers: int = 1
    """Parallel processes (1 runs in this process)."""
    splits: Path | None = None
    """GRID only: folder with users' split lists (see :mod:`lipx.data.prepare_format`)."""
    overwrite: bool = False
    """Redo clips that are already prepared."""
    min_frames: int | None = None
    """Shortest usable clip in frames; None uses :data:`MIN_FRAMES` of the layout."""
    margin: int = 8
    """Pixels kept around the mouth box on each side (room for +-5 px crop jitter)."""
    tracker: Callable[[], FaceTracker] | None = None
    """GRID: makes the face tracker that aligns a video without a landmark file (picklable for
    ``workers`` > 1, e.g. ``functools.partial(lipx.runtime.roi.make_roi, "auto")``); None: such
    videos are skipped as ``missing_landmarks``."""

    def __post_init__(self) -> None:
        for name in ("src", "out", "splits"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.layout not in LAYOUTS:
            from lipx.errors import did_you_mean

            raise InputError(f"unknown layout {self.layout!r}{did_you_mean(self.layout, LAYOUTS)}")
        if not self.src.is_dir():
            raise InputError(f"source folder {self.src} does not exist or is not a folder; "
                             f"give the root of the {self.layout.upper()} corpus")
        if self.out.resolve().is_relative_to(self.src.resolve()):
            raise InputError(f"output {self.out} is inside the source {self.src}; choose a folder "
                             "outside it")
        if self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if self.splits is not None and self.layout != "grid":
            raise InputError("split lists (--splits) apply to GRID only; LRW splits come from its "
                             "train/val/test folders")
        if self.splits is not None and not self.splits.is_dir():
            raise InputError(f"split folder {self.splits} does not exist")
        if self.min_frames is not None and self.min_frames < 5:
            raise InputError(f"min_frames must be >= 5 (the 3D convolution spans 5 frames), got "
                             f"{self.min_frames}")
        if not 0 <= self.margin <= 40:
            raise InputError(f"margin must be in [0, 40] px, got {self.margin}")


@dataclass(frozen=True)
class FailedClip:
    """A source clip that could not be prepared."""

    source: str
    """Path relative to the source root."""
    reason: str
    """corrupt, truncated, no_audio, too_short, missing_landmarks, bad_landmarks, no_face
    (the tracker found none in any frame), bad_size or error (an unforeseen exception, with
    its type in ``detail``)."""
    detail: str


@dataclass(frozen=True)
class PrepareReport:
    """What a run did; also written to ``OUT/report.json``."""

    prepared: int
    """Clips written in this run."""
    skipped: int
    """Clips already prepared by an earlier run (resumed)."""
    failed: tuple[FailedClip, ...]
    out: Path
    index: Path
    report: Path
    seconds: float
    clips: int = 0
    """Clips in the index (prepared now or before)."""
    split_sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(out=str(self.out), index=str(self.index), report=str(self.report))
        return d


# --- one clip -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker needs to prepare one clip (picklable)."""

    layout: str
    clip_id: str
    source: str
    video: Path
    out: Path
    margin: int
    min_frames: int
    speaker: str = ""
    word: str | None = None
    label: int | None = None
    audio: Path | None = None
    align: Path | None = None
    landmarks: Path | None = None
    info: Path | None = None
    tracker: Callable[[], FaceTracker] | None = None


@dataclass(frozen=True)
class ClipResult:
    clip_id: str
    status: str
    """prepared, skipped, or a :class:`FailedClip` reason."""
    detail: str = ""
    meta: dict | None = None


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _decode(job: ClipJob, luma: bool = True) -> np.ndarray:
    """(T, H, W) uint8 luma frames at 25 fps (``luma=False``: (T, H, W, 3) RGB)."""
    times, frames = [], []
    try:
        for t, frame in vid.iter_frames(job.video):
            times.append(t)
            frames.append(vid.to_luma(frame) if luma else frame)
    except InputError as e:
        raise _Unusable("truncated" if frames else "corrupt", str(e)) from e
    if len(frames) < job.min_frames:  # before resampling: cheap, and a clear count
        raise _Unusable("too_short", f"{len(frames)} frames, need at least {job.min_frames}")
    resampled = vid.resample_frames(times, frames, _SPEC.fps)
    if len(resampled) < job.min_frames:
        raise _Unusable("too_short", f"{len(resampled)} frames at {_SPEC.fps:g} fps, "
                                     f"need {job.min_frames}")
    return resampled


def _audio(job: ClipJob, frames: int) -> np.ndarray:
    """The clip's 16 kHz audio, checked to cover at least 80 % of the video."""
    try:
        wav = load_audio(job.audio or job.video, SAMPLE_RATE)
    except NoAudioError as e:
        raise _Unusable("no_audio", str(e)) from e
    except InputError as e:
        raise _Unusable("corrupt", str(e)) from e
    need = frames * SAMPLE_RATE / _SPEC.fps
    if wav.size == 0:
        raise _Unusable("no_audio", f"{job.audio or job.video}: the audio stream is empty")
    if wav.size < 0.8 * need:
        raise _Unusable("truncated", f"audio lasts {wav.size / SAMPLE_RATE:.2f} s, the video "
                        f"{need / SAMPLE_RATE:.2f} s")
    return wav


def _landmarks(job: ClipJob, frames: int) -> np.ndarray:
    """(n, 98, 2) landmarks, n = min(frames, frames in the file); frames without points take the
    nearest frame's."""
    if job.landmarks is None:
        raise _Unusable("missing_landmarks", "no landmark file; looked for NAME.txt in " +
                        ", ".join(LANDMARK_DIRS).replace("{s}", job.speaker))
    try:
        points = read_landmarks(job.landmarks)
    except InputError as e:
        raise _Unusable("bad_landmarks", str(e)) from e
    if points.shape[1] != N_POINTS:
        raise _Unusable("bad_landmarks", f"{points.shape[1]} points per frame, expected {N_POINTS}")
    if len(points) < frames:
        log.debug("%s: %d landmark frames for %d video frames", job.clip_id, len(points), frames)
    n = min(frames, len(points))
    known = ~np.isnan(points[:n]).any(axis=(1, 2))
    if not known.any():
        raise _Unusable("missing_landmarks", "no frame of the landmark file has points")
    return points[_nearest_known(known)]


def _nearest_known(known: list[bool] | np.ndarray) -> np.ndarray:
    """For each frame, the index of the nearest frame whose ``known`` is true."""
    found = np.flatnonzero(known)
    return found[np.abs(np.arange(len(known))[:, None] - found[None, :]).argmin(axis=1)]


def track_faces(frames: np.ndarray, tracker: FaceTracker, size: int = _SPEC.face_size
                ) -> np.ndarray | None:
    """(T, size, size, 3) RGB frames aligned by the face tracker (in its framing), as
    ``--crop auto`` aligns a stream (a frame where it knows no face: the nearest frame's
    transform); None when it found no face in any frame. Also the crop of training streams in
    the wild (:func:`lipx.train.stream_windows.decode_stream`)."""
    matrices = []
    for frame in frames:
        tracker(frame)
        matrices.append(tracker.transform())
    known = [m is not None for m in matrices]
    if not any(known):
        return None
    return np.stack([warp_face(frame, matrices[i], size)  # type: ignore[arg-type]
                     for frame, i in zip(frames, _nearest_known(known))])


def _tracked_region(job: ClipJob, tracker: FaceTracker) -> np.ndarray:
    """The mouth regions of a video aligned by the face tracker (what a stream crops)."""
    faces = track_faces(_decode(job, luma=False), tracker)
    if faces is None:
        raise _Unusable("no_face", "the face tracker found no face in any frame")
    return vid.mouth_region(faces, _SPEC, job.margin)


def _landmark_region(job: ClipJob) -> np.ndarray:
    """The mouth regions of a video aligned by its landmark file (frames it covers)."""
    frames = _decode(job)
    points = _landmarks(job, len(frames))
    frames = frames[:len(points)]
    if len(frames) < job.min_frames:
        raise _Unusable("too_short", f"landmarks cover {len(frames)} frames, need {job.min_frames}")
    side = _SPEC.box[2] - _SPEC.box[0] + 2 * job.margin
    origin = vid.region_origin(_SPEC, job.margin)
    return np.stack([align_face(frame, p, origin=origin, out_size=side)
                     for frame, p in zip(frames, points)])


def _grid_clip(job: ClipJob) -> tuple[np.ndarray, np.ndarray, dict]:
    if job.landmarks is None and job.tracker is not None:
        region, aligned_by = _tracked_region(job, job.tracker()), "tracker"
    else:
        region, aligned_by = _landmark_region(job), "landmarks"
    wav = highpass(_audio(job, len(region)), SAMPLE_RATE)
    aligned = read_align(job.align) if job.align else []
    words = [[w.start, w.end, w.word] for w in aligned]
    return region, fit_length(wav, len(region) * _SAMPLES_PER_FRAME), {
        "speaker": job.speaker, "text": " ".join(w.word for w in aligned), "words": words,
        "aligned_by": aligned_by}


def _lrw_clip(job: ClipJob) -> tuple[np.ndarray, np.ndarray, dict]:
    frames = _decode(job)
    if frames.shape[1:] != (_SPEC.face_size, _SPEC.face_size):
        raise _Unusable("bad_size", f"frames are {frames.shape[2]}x{frames.shape[1]}, LRW faces "
                        f"are {_SPEC.face_size}x{_SPEC.face_size}")
    region = vid.mouth_region(frames, _SPEC, job.margin)
    wav = fit_length(_audio(job, len(frames)), len(frames) * _SAMPLES_PER_FRAME, centre=True)
    meta: dict[str, Any] = {"text": job.word, "word": job.word, "label": job.label}
    if job.info is not None:
        meta["duration"] = read_lrw_info(job.info).duration
    return region, wav, meta


def prepare_clip(job: ClipJob) -> ClipResult:
    """Prepare one clip and write it; never raises for a bad clip (the result says why)."""
    try:
        region, wav, extra = (_grid_clip if job.layout == "grid" else _lrw_clip)(job)
    except _Unusable as e:
        return ClipResult(job.clip_id, e.reason, str(e))
    except Exception as e:  # an unforeseen problem with one file must not stop a long run
        log.exception("preparing %s failed", job.source)
        return ClipResult(job.clip_id, "error", f"{type(e).__name__}: {e}")
    meta = {"id": job.clip_id, "speaker": job.speaker, "word": None, "label": None, **extra,
            "frames": int(len(region)), "samples": int(wav.size), "fps": _SPEC.fps,
            "sample_rate": SAMPLE_RATE, "margin": job.margin, "box": list(_SPEC.box),
            "source": job.source, "format": fmt.VERSION}
    fmt.write_clip(job.out, region, wav, meta)
    return ClipResult(job.clip_id, "prepared", meta=meta)


# --- discovery ------------------------------------------------------------------------------


def _grid_videos(src: Path) -> list[tuple[str, Path]]:
    speakers = sorted((d for d in src.iterdir() if d.is_dir() and _SPEAKER.fullmatch(d.name)),
                      key=lambda d: fmt.natural_key(d.name))
    found = []
    for d in speakers:
        folder = d / "video" if (d / "video").is_dir() else d
        videos = sorted(f for f in folder.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
        found += [(d.name, f) for f in videos]
    return found


def _landmark_file(src: Path, speaker: str, name: str) -> Path | None:
    for pattern in LANDMARK_DIRS:
        candidate = src / pattern.format(s=speaker) / f"{name}.txt"
        if candidate.is_file():
            return candidate
    return None


def find_grid_clips(opts: PrepareOptions, min_frames: int) -> list[ClipJob]:
    """One job per GRID video under ``opts.src``. Raises InputError if there is none."""
    jobs = []
    for speaker, video in _grid_videos(opts.src):
        name = video.stem
        paths = grid_paths(opts.src, speaker, name)
        wav, align = paths["audio"], paths["align"]
        jobs.append(ClipJob(
            layout="grid", clip_id=f"{speaker}/{name}", source=str(video.relative_to(opts.src)),
            video=video, out=opts.out / "clips" / speaker / f"{name}.npz", speaker=speaker,
            audio=wav if wav.is_file() else None, align=align if align.is_file() else None,
            landmarks=_landmark_file(opts.src, speaker, name), margin=opts.margin,
            min_frames=min_frames, tracker=opts.tracker))
    if not jobs:
        raise InputError(f"no GRID videos found under {opts.src}; expected sN/video/NAME.mpg "
                         "(speaker folders s1, s2, ...)")
    return jobs


def _labels(opts: PrepareOptions) -> list[str]:
    """LRW class names: the word folders, sorted (label = index), as the original."""
    return sorted(d.name for d in opts.src.iterdir() if d.is_dir())


def find_lrw_clips(opts: PrepareOptions, min_frames: int) -> list[ClipJob]:
    """One job per LRW video under ``opts.src``. Raises InputError if there is none."""
    words = _labels(opts)
    jobs = []
    for label, word in enumerate(words):
        for part in fmt.PARTS:
            for video in sorted((opts.src / word / part).glob("*.mp4")):
                txt = video.with_suffix(".txt")
                jobs.append(ClipJob(
                    layout="lrw", clip_id=f"{word}/{part}/{video.stem}",
                    source=str(video.relative_to(opts.src)), video=video,
                    out=opts.out / "clips" / word / part / f"{video.stem}.npz", word=word,
                    label=label, info=txt if txt.is_file() else None, margin=opts.margin,
                    min_frames=min_frames))
    if not jobs:
        raise InputError(f"no LRW videos found under {opts.src}; expected "
                         "WORD/train/WORD_00001.mp4 (and val/, test/)")
    return jobs


# --- running --------------------------------------------------------------------------------


def _run_jobs(jobs: list[ClipJob], workers: int, progress: Progress | None) -> list[ClipResult]:
    results: list[ClipResult] = []
    total = len(jobs)
    if workers == 1 or total <= 1:
        for job in jobs:
            results.append(prepare_clip(job))
            if progress:
                progress(len(results), total)
        return results
    context = multiprocessing.get_context("spawn")  # safe when torch threads exist in the parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(prepare_clip, job) for job in jobs]
        for future in as_completed(futures):
            results.append(future.result())
            if progress:
                progress(len(results), total)
    return results


def _resumable(job: ClipJob, overwrite: bool) -> ClipResult | None:
    """A result for a clip an earlier run finished, or None if it must be (re)done."""
    if overwrite or not job.out.is_file():
        return None
    try:
        return ClipResult(job.clip_id, "skipped", meta=fmt.read_meta(job.out))
    except Exception:  # unreadable leftovers are simply redone
        log.info("redoing unreadable %s", job.out)
        return None


def prepare_corpus(opts: PrepareOptions, progress: Progress | None = None) -> PrepareReport:
    """Prepare every clip of a GRID or LRW corpus and write the index, corpus.json and report.

    Args:
        opts: validated options.
        progress: called as progress(done, total) after each clip (the CLI draws a bar).

    Returns:
        The run's report (also written to ``OUT/report.json``).

    Raises:
        InputError: no clips found, or unusable split files. Bad clips are reported, not raised.
    """
    started = time.perf_counter()
    min_frames = opts.min_frames or MIN_FRAMES[opts.layout]
    find = find_grid_clips if opts.layout == "grid" else find_lrw_clips
    jobs = find(opts, min_frames)
    opts.out.mkdir(parents=True, exist_ok=True)
    done = {job.clip_id: r for job in jobs if (r := _resumable(job, opts.overwrite))}
    todo = [job for job in jobs if job.clip_id not in done]
    if progress and done:
        progress(0, len(todo))
    results = list(done.values()) + _run_jobs(todo, opts.workers, progress)
    return _finish(opts, jobs, results, started)


def _synth_options(src: Path) -> dict | None:
    """The options ``lipx data synth`` made ``src`` with (None for a real corpus): kept in
    corpus.json and, by training, in checkpoints, so held-out speakers can be rendered again."""
    path = src / "synth.json"
    try:
        return json.loads(path.read_text())["options"] if path.is_file() else None
    except (ValueError, KeyError, TypeError):
        log.warning("%s is not a readable synth manifest; not recorded", path)
        return None


def _finish(opts: PrepareOptions, jobs: list[ClipJob], results: list[ClipResult],
            started: float) -> PrepareReport:
    sources = {job.clip_id: job.source for job in jobs}
    records = sorted((fmt.make_record(r.meta, f"clips/{r.clip_id}.npz") for r in results if r.meta),
                     key=lambda rec: rec["id"])
    split_sources = fmt.assign_splits(records, opts.layout, opts.splits)
    failed = tuple(sorted((FailedClip(sources[r.clip_id], r.status, r.detail) for r in results
                           if r.status not in ("prepared", "skipped")), key=lambda f: f.source))
    spec = VideoSpec()
    fmt.write_json_atomic(opts.out / "index.jsonl", records, lines=True)
    fmt.write_json_atomic(opts.out / "corpus.json", {
        "format": fmt.FORMAT, "version": fmt.VERSION, "layout": opts.layout, "fps": spec.fps,
        "sample_rate": SAMPLE_RATE, "box": list(spec.box), "margin": opts.margin,
        "labels": _labels(opts) if opts.layout == "lrw" else [],
        "clips": len(records), "splits": split_sources, "lipx_version": __version__,
        **({"synth": synth} if (synth := _synth_options(opts.src)) else {})})
    report = PrepareReport(
        prepared=sum(r.status == "prepared" for r in results),
        skipped=sum(r.status == "skipped" for r in results), failed=failed, out=opts.out,
        index=opts.out / "index.jsonl", report=opts.out / "report.json",
        seconds=time.perf_counter() - started, clips=len(records), split_sources=split_sources)
    fmt.write_json_atomic(report.report, report.to_dict())
    log.info("prepared %d, skipped %d, failed %d -> %s", report.prepared, report.skipped,
             len(failed), opts.out)
    return report
