"""The streaming split run as one engine: front-end chunk by chunk, then the window backend.

:class:`SplitPipeline` takes the whole model's inputs, so the parity check compares it with the
whole model like any other runner. It does what the streaming runtime does with its feature
cache: the clip gets ``context`` zero frames on each side (exactly the 3D convolution's zero
padding, since frames are normalised), the front-end runs on chunks of ``chunk`` frames plus
their context, and the concatenated features go through the backend. Torch-free.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from lipx.package import TensorInfo
from lipx.runtime.runner import Runner
from lipx.tasks import CONTEXT


class SplitPipeline(Runner):
    """frontend + backend runners behaving as the whole model.

    Args:
        frontend: runner of ``frontend.onnx`` (``video`` (B, 1, C+4, H, W) -> ``features``).
        backend: runner of ``backend.onnx`` (``features`` [+ ``noise``] -> outputs).
        chunk: front-end frames per call (the stride in streaming).
        context: frames of context each side (2 for a temporal kernel of 5).
    """

    def __init__(self, frontend: Runner, backend: Runner, chunk: int, context: int = CONTEXT,
                 name: str = "split pipeline") -> None:
        super().__init__(name)
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.frontend, self.backend = frontend, backend
        self.chunk, self.context = chunk, context
        self._owned: list[Runner] = []

    def _activate(self) -> None:
        for r in (self.frontend, self.backend):
            if not r.is_active:
                r.activate()
                self._owned.append(r)

    def _deactivate(self) -> None:
        while self._owned:
            self._owned.pop().deactivate()

    def _input_metadata(self) -> dict[str, TensorInfo]:
        video = next(iter(self.frontend.input_metadata().values()))
        shape = tuple("frames" if i == 2 else d for i, d in enumerate(video.shape))
        meta = {video.name: TensorInfo(video.name, video.dtype, shape)}
        features = next(iter(self.backend.input_metadata()))
        meta.update({n: t for n, t in self.backend.input_metadata().items() if n != features})
        return meta

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return self.backend.output_metadata()

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        video_name = next(iter(self.frontend.input_metadata()))
        features_name = next(iter(self.backend.input_metadata()))
        start = time.perf_counter()
        features = self.features(feeds[video_name])
        rest = {n: a for n, a in feeds.items() if n != video_name}
        out = self.backend.infer({features_name: features, **rest})
        self.last_latency_s = time.perf_counter() - start
        return out

    def features(self, video: np.ndarray) -> np.ndarray:
        """Per-frame features of a whole clip, computed chunk by chunk.

        Args:
            video: (B, 1, T, H, W) float32, normalised.
        Returns:
            (B, T, D) float32.
        """
        c = self.context
        pad = np.zeros((*video.shape[:2], c, *video.shape[3:]), dtype=video.dtype)
        padded = np.concatenate([pad, video, pad], axis=2)
        name = next(iter(self.frontend.input_metadata()))
        parts = []
        for first in range(0, video.shape[2], self.chunk):
            n = min(self.chunk, video.shape[2] - first)
            piece = np.ascontiguousarray(padded[:, :, first : first + n + 2 * c])
            parts.append(next(iter(self.frontend.infer({name: piece}).values())))
        return np.concatenate(parts, axis=1)
