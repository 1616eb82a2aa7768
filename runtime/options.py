"""Options of a stream, and the part of them that opens engines.

    opts = StreamOptions(engine="onnx", threshold=0.7)
    pipeline = Pipeline("pkg", opts.engine_options())      # engines: opened once
    session = pipeline.session("clip.mp4", opts)            # everything else: per stream

:class:`StreamOptions` is what a user sets for one stream (the CLI's options), checked once
here; :class:`EngineOptions` is the part a :class:`~lipx.runtime.pipeline.Pipeline` is opened
with, so that every session of one pipeline shares its engines. Torch-free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass

from lipx.errors import InputError
from lipx.package import Manifest
from lipx.runtime.backends import BACKENDS
from lipx.runtime.package_runners import resolve_backend
from lipx.runtime.roi import check_crop
from lipx.runtime.task import HeadOptions
from lipx.runtime.tasks import stream_task
from lipx.runtime.triton_runner import triton_url
from lipx.tasks import MAX_FRAMES, Schedule

HEAD_FIELDS = ("threshold", "agreement", "min_gap", "pad", "lookahead", "crossfade", "gl_iters")
"""Stream options that are head options (each task's unit takes those it has)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How a package's engines are opened (shared by every session of a pipeline)."""

    engine: str = "onnx"
    """``onnx`` (onnxruntime) or ``trt`` (TensorRT plans of the package); see ``BACKENDS``."""
    device: str | None = None
    """onnx: ``cpu`` (default), ``cuda`` or ``tensorrt`` (execution providers); trt: ``cuda``."""
    precision: str | None = None
    """onnx: which exported graphs to run (``fp32`` default, ``fp16``, ``int8``)."""
    cache: bool = True
    """Cache per-frame features (split graphs); False recomputes each window with model.onnx."""
    threads: int | None = None
    """onnxruntime intra-op threads (None: 1 on the CPU, the default elsewhere)."""
    cuda_graph: bool = False
    """TensorRT: capture CUDA graphs for the fixed chunk and window shapes."""
    triton: str | None = None
    """``http://HOST:PORT`` of a Triton server serving the package's repository (``lipx export
    --format triton``): the engine calls go there (the stream's state stays here)."""


@dataclass(frozen=True)
class StreamOptions:
    """How to run a package on a stream; checked once, here (incompatible choices are errors)."""

    engine: str = "onnx"
    """``onnx`` (onnxruntime) or ``trt`` (TensorRT plans of the package); see ``BACKENDS``."""
    device: str | None = None
    """onnx: ``cpu`` (default), ``cuda`` or ``tensorrt`` (execution providers); trt: ``cuda``."""
    precision: str | None = None
    """onnx: which exported graphs to run (``fp32`` default, ``fp16``, ``int8``)."""
    crop: str = "lrw"
    """``lrw``: frames are aligned 256x256 faces; ``auto``: track the face in any video."""
    window: int | None = None
    """Frames per backend window (None: the package's)."""
    stride: int | None = None
    """Frames between backend runs (None: the package's)."""
    chunk: int = 1
    """New frames per front-end call (1: per frame, lowest latency; larger: throughput)."""
    threshold: float | None = None
    """Lipreading: least posterior of a window's top word for it to count (None, as for every
    head option: the package's, ``task_spec.stream_defaults``)."""
    agreement: int | None = None
    """Lipreading: successive windows that must agree before a word is emitted."""
    min_gap: float | None = None
    """Lipreading: seconds after a word within which the same word is not emitted again."""
    pad: int | None = None
    """Frames by which the stream is padded at each end, its first and last frames repeated (a
    model for streams was trained so; its first and last words then get centred windows)."""
    lookahead: int | None = None
    """Lip-to-speech: frames at each window's end kept only as right context."""
    crossfade: int | None = None
    """Lip-to-speech: frames cross-faded at each join (<= lookahead)."""
    gl_iters: int | None = None
    """Lip-to-speech: Griffin-Lim iterations per chunk."""
    cache: bool = True
    """Cache per-frame features (split graphs); False recomputes each window with model.onnx."""
    realtime: bool = False
    """Pace a file at its own speed and drop stale frames, as if it were a camera."""
    reconnect: int = 0
    """Reopen a broken network stream or webcam up to this many times in a row."""
    max_frames: int | None = None
    """Stop after this many frames (None: at the end of the source)."""
    threads: int | None = None
    """onnxruntime intra-op threads (None: 1 on the CPU, where one frame at a time gains little
    from a thread pool whose spinning threads slow every other stage; the default elsewhere)."""
    blas_threads: int | None = 1
    """numpy's BLAS threads during :func:`stream` (needs threadpoolctl; None leaves them): the
    per-frame matrices are tiny, and threads make them slower, not faster."""
    cuda_graph: bool = False
    """TensorRT: capture CUDA graphs for the fixed chunk and window shapes."""
    triton: str | None = None
    """``http://HOST:PORT`` of a Triton server serving the package's repository (``lipx export
    --format triton``): the front-end and back-end calls go there; the ring buffer, the head
    and the clocks stay here."""
    pipeline: bool | None = None
    """Run the backend and the head on a worker thread while the loop reads, crops and runs the
    front-end on the next frames, so a live source drops no frame while the total compute keeps
    up (None: on for live and ``realtime`` sources, off for files read as fast as possible)."""
    status_every_s: float = 0.5
    """Seconds between status callbacks."""

    def __post_init__(self) -> None:
        resolve_backend(self.engine, self.device, self.precision)
        check_crop(self.crop)
        Schedule.check(self.window, self.stride)
        for name in ("chunk", "agreement", "gl_iters", "max_frames", "threads", "blas_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name in ("lookahead", "crossfade", "reconnect", "pad", "min_gap"):
            if (getattr(self, name) or 0) < 0:
                raise InputError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("chunk", "lookahead", "crossfade", "pad"):
            if (getattr(self, name) or 0) > MAX_FRAMES:
                raise InputError(f"--{name} must be at most {MAX_FRAMES} frames, got "
                                 f"{getattr(self, name)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be in [0, 1], got {self.threshold}")
        if self.window and self.chunk > self.window:
            raise InputError(f"--chunk {self.chunk} is larger than --window {self.window}")
        if not self.cache and self.chunk != 1:
            raise InputError("--chunk sets the cached front-end's chunk; it has no meaning with "
                             "--no-cache")
        if self.cuda_graph and not BACKENDS[self.engine].plans:
            raise InputError("CUDA graphs are for TensorRT plans (--engine trt)")
        if self.triton is not None:
            triton_url(self.triton)

    def schedule(self, manifest: Manifest) -> Schedule:
        """The options' window and stride, else the package's; InputError when they clash."""
        schedule = manifest.spec.schedule(self.window, self.stride, default=manifest.schedule)
        if self.chunk > schedule.window:
            raise InputError(f"--chunk {self.chunk} is larger than the window "
                             f"({schedule.window} frames)")
        return schedule

    def head_options(self, manifest: Manifest) -> HeadOptions:
        """The head's typed options: these options' where given, else the package's defaults
        (the package's task decides which apply)."""
        return stream_task(manifest.task).head_options(
            manifest, **{name: getattr(self, name) for name in HEAD_FIELDS})

    def engine_options(self) -> EngineOptions:
        """What the pipeline (the engines) needs of these options."""
        return EngineOptions(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(EngineOptions)})


def blas_threads(limit: int | None) -> contextlib.AbstractContextManager[object]:
    """Limit numpy's BLAS thread pool to ``limit`` threads (threadpoolctl, when installed; None
    leaves it): a stream's per-frame matrices are tiny, and on a small machine a pool's spinning
    threads slow every other stage (--crop auto's tracker ran 3x slower with OpenBLAS's 2)."""
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.debug("threadpoolctl is not installed; BLAS threads left as they are")
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")
