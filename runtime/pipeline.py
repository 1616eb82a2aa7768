"""A model package opened once: the engines, warmed, and the task's unit. Streams are sessions.

    with Pipeline("pkg", EngineOptions(engine="onnx")) as pipeline:
        for video in videos:                                   # engines opened once
            with pipeline.session(video, StreamOptions()) as session:
                for event in session.events():
                    ...

A :class:`Pipeline` holds everything that is expensive and shared (the manifest read and
checked, the engines opened and warmed, the task's :class:`~lipx.runtime.task.StreamTask`); a
:class:`~lipx.runtime.session.Session` holds one source's state (ROI, feature ring, head,
clocks, stats) and no engine. The step functions take a *list* of sessions' work, front-end
clips (:meth:`Pipeline.frontend`) and due windows (:meth:`Pipeline.backend`), and run each group
of equal shapes as one batched engine call, so one loaded model serves one stream, an evaluation
of hundreds, or many live cameras. A list of one runs exactly as a single stream always did
(batch 1). Torch-free.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipx.errors import InputError, ManifestError
from lipx.package import FACE_DETECTOR, FACE_MESH, Manifest, Package
from lipx.runtime.faces import FaceDetector, FaceMesh, package_face_runners
from lipx.runtime.options import EngineOptions, StreamOptions
from lipx.runtime.package_runners import (
    check_profiles,
    engine_feeds,
    open_runners,
    resolve_backend,
)
from lipx.runtime.runner import Runner
from lipx.runtime.sources import Source
from lipx.runtime.tasks import stream_task
from lipx.runtime.triton_runner import TritonRunner
from lipx.tasks import Schedule

if TYPE_CHECKING:
    from lipx.runtime.batcher import Steps
    from lipx.runtime.session import Session, WindowHook

log = logging.getLogger(__name__)


class Pipeline:
    """A package opened once for streaming (see the module docstring).

    Args:
        package: a model package (``lipx export``): a folder, or an opened :class:`Package`.
        options: how to open its engines.
    Raises:
        ManifestError: not a package, or it lacks the graphs or plans the engine needs.
        InputError: bad options for this package.
        BackendUnavailableError: the backend's library or device is missing.
    """

    def __init__(self, package: str | Path | Package,
                 options: EngineOptions | None = None) -> None:
        self.package = Package.open(package)
        self.options = o = options or EngineOptions()
        self.task = stream_task(self.manifest.task)
        self.task.check(self.manifest)
        self.info, self.device = resolve_backend(o.engine, o.device, o.precision)
        self.context = self.manifest.spec.context if o.cache else 0
        """Frames of context on each side of a front-end clip (0 without the cache)."""
        self.roles = ("frontend", "backend") if o.cache else ("model",)
        if self.info.plans:
            for role in self.roles:
                self.manifest.engine(role)  # ManifestError naming how to build them
        threads = o.threads or (1 if self.device == "cpu" else None)
        runners: dict[str, Runner]
        if o.triton is not None:  # the engine calls on a Triton server (its repository's graphs)
            precision = o.precision or self.info.default_precision
            runners = {role: TritonRunner(o.triton, self.manifest, role, precision)
                       for role in self.roles}
        else:
            runners = open_runners(self.package, self.roles, o.engine, self.device,
                                   o.precision, threads, o.cuda_graph)
        self._stack = contextlib.ExitStack()
        try:
            self.runners: dict[str, Runner] = {
                role: self._stack.enter_context(r) for role, r in runners.items()}
        except BaseException:
            self._stack.close()
            raise
        self.feature_dim = self._feature_dim() if o.cache else 0
        self._warm: set[tuple[str, tuple[int, ...]]] = set()
        self._locks = {role: contextlib.nullcontext() if r.concurrent else threading.Lock()
                       for role, r in self.runners.items()}
        """One engine call at a time per engine that cannot take concurrent calls (a pipelined
        session's worker runs the backend while its loop runs the front-end)."""
        self._count = threading.Lock()
        """Guards ``calls`` and ``_warm`` (sessions run on many threads)."""
        self.calls = {role: 0 for role in self.roles}
        """Engine calls made so far, by role (each batched call counts once)."""
        self._faces: tuple[FaceDetector, FaceMesh] | None = None
        self._faces_lock = threading.Lock()

    @property
    def manifest(self) -> Manifest:
        return self.package.manifest

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the engines (idempotent)."""
        self._stack.close()

    # -- sessions --------------------------------------------------------------------------------
    def session(self, source: str | Source, opts: StreamOptions | None = None,
                window_hook: WindowHook | None = None, record: bool = False,
                steps: Steps | None = None) -> Session:
        """A new stream of ``source`` (a spec or an opened Source, which the session closes);
        ``steps``: a :class:`~lipx.runtime.batcher.Batcher` of this pipeline to batch its engine
        work with other sessions' (default: this pipeline, unbatched).

        Raises:
            InputError: ``opts`` ask for other engines than this pipeline's, or a schedule the
                package cannot run.
        """
        from lipx.runtime.session import Session

        opts = opts or StreamOptions(**_engine_fields(self.options))
        if opts.engine_options() != self.options:
            raise InputError(f"a session asks for {opts.engine_options()} but the pipeline was "
                             f"opened with {self.options}; open another pipeline")
        if steps is not None and getattr(steps, "pipeline", self) is not self:
            raise InputError("a session's batcher must be one of its own pipeline")
        return Session(self, source, opts, window_hook, record, steps)

    def face_models(self) -> tuple[FaceDetector, FaceMesh]:
        """The face models ``--crop auto``'s trackers run, opened on first use and shared by
        every session (each session keeps its own tracking state).

        The package's own (``lipx export --faces``) on this pipeline's engine: onnxruntime on its
        device, or with ``--engine trt`` the package's face plans, so faces are tracked on the
        GPU. Without them (or with a Triton server, whose repository has no face models): the
        shipped ONNX assets on onnxruntime, on the CPU or, beside a GPU engine, CUDA.

        Raises:
            ManifestError: the package's face models fail their checks.
            BackendUnavailableError: their engine's library or device is missing.
        """
        with self._faces_lock:
            if self._faces is None:
                self._faces = self._open_faces()
            return self._faces

    def _open_faces(self) -> tuple[FaceDetector, FaceMesh]:
        o = self.options
        runners = None if o.triton is not None else package_face_runners(
            self.package, o.engine, self.device, o.cuda_graph)
        if runners is None:
            device = "cpu" if self.device == "cpu" else "cuda"
            log.info("--crop auto: the shipped face models on onnxruntime (%s)%s", device,
                     "; export the package with --faces to run them on its plans"
                     if self.info.plans else "")
            return FaceDetector(device=device), FaceMesh(device=device)
        opened = {role: self._stack.enter_context(r) for role, r in runners.items()}
        log.info("--crop auto: the package's face models (%s)",
                 ", ".join(r.name for r in opened.values()))
        return FaceDetector(opened[FACE_DETECTOR]), FaceMesh(opened[FACE_MESH])

    def schedule(self, opts: StreamOptions) -> Schedule:
        """The schedule ``opts`` give this package, checked against the engines, which are warmed
        for it (once per shape).

        Raises:
            InputError: a window or chunk outside what the package's plans were built for.
        """
        sched = check_stream(self.manifest, opts)
        self._warm_up(sched.window, opts.chunk)
        return sched

    # -- the steps: many sessions' work at once ----------------------------------------------------
    def frontend(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame features of each clip: (C + 2 context, H, W) frames -> (C, D).

        Clips of equal length run as one batch.
        """
        name = self.manifest.graph("frontend").inputs[0].name
        out: list[np.ndarray | None] = [None] * len(clips)
        for idx in _groups([c.shape for c in clips]):
            batch = np.stack([clips[i] for i in idx])[:, None]
            result = next(iter(self._infer("frontend", {name: batch}).values()))
            for row, i in enumerate(idx):
                out[i] = result[row]
        return [o for o in out if o is not None]

    def backend(self, windows: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The backend's (or, without the cache, the whole model's) outputs for each window:
        (W, D) features or (W, H, W) frames -> {output: (1, ...)} per window.

        Windows of equal length run as one batch.
        """
        role = self.roles[-1]
        graph = self.manifest.graph(role)
        out: list[dict[str, np.ndarray] | None] = [None] * len(windows)
        for idx in _groups([w.shape for w in windows]):
            data = np.stack([windows[i] for i in idx])
            if not self.options.cache:
                data = data[:, None]
            result = self._infer(role, engine_feeds(graph, data, len(windows[idx[0]])))
            for row, i in enumerate(idx):
                out[i] = {k: v[row:row + 1] for k, v in result.items()}
        return [o for o in out if o is not None]

    def _infer(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._count:
            self.calls[role] += 1
        with self._locks[role]:
            return self.runners[role].infer(feeds)

    def _warm_up(self, window: int, chunk: int) -> None:
        """One call of each engine at a stream's shapes (the first time they are seen), so that
        first-call costs (allocation, kernel choice) do not land on a stream's first frames
        (where a live source would drop frames for them)."""
        size = self.manifest.video.size
        if self.options.cache:
            shapes = {"frontend": (chunk + 2 * self.context, size, size),
                      "backend": (window, self.feature_dim)}
        else:
            shapes = {"model": (window, size, size)}
        for role, shape in shapes.items():
            with self._count:  # sessions may start on several threads at once
                if (role, shape) in self._warm:
                    continue
                self._warm.add((role, shape))
                self.calls[role] -= 1  # the warm-up call does not count
            data = np.zeros(shape, np.float32)
            (self.frontend if role == "frontend" else self.backend)([data])

    def _feature_dim(self) -> int:
        graph = self.manifest.graph("backend")  # its features input has the fixed size D
        dim = graph.inputs[0].shape[-1]
        if not isinstance(dim, int):
            raise ManifestError(f"{graph.file}: feature size is not fixed ({dim!r}); re-export")
        return dim


def check_stream(manifest: Manifest, opts: StreamOptions) -> Schedule:
    """The schedule ``opts`` give a package, with every check that needs no engine: the window
    and chunk against its TensorRT plans' profiles, the head's options and what the head needs
    (so that a stream fails on them before a source or an engine is opened).

    Raises:
        InputError, ManifestError: naming the option or what the package lacks.
    """
    sched = opts.schedule(manifest)
    info, _ = resolve_backend(opts.engine, opts.device, opts.precision)
    if info.plans and opts.cache:
        check_profiles(manifest, sched.window, opts.chunk)
    stream_task(manifest.task).make_head(manifest, opts.head_options(manifest), sched)
    return sched


def _groups(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Indices grouped by equal shape, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return list(groups.values())


def _engine_fields(options: EngineOptions) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(options)
