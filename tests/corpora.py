"""Tiny synthetic corpora, synthesised and prepared once per test session (shared fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipx.data.prepare import PrepareOptions, prepare_corpus
from lipx.data.synth import SynthOptions, synthesize_corpus


def make_prepared(root: Path, layout: str, **synth) -> Path:
    """Synthesise a corpus under ``root/raw`` and prepare it into ``root/prepared``."""
    raw, prepared = root / "raw", root / "prepared"
    synthesize_corpus(SynthOptions(out=raw, layout=layout, **synth))
    prepare_corpus(PrepareOptions(layout=layout, src=raw, out=prepared))
    return prepared


@pytest.fixture(scope="session")
def lrw_corpus(tmp_path_factory) -> Path:
    """4 words, 3 speakers (1 held out), 4 training clips per word."""
    return make_prepared(tmp_path_factory.mktemp("lrw"), "lrw", speakers=3, held_out=1, words=4,
                         clips_per_word=4, val_per_word=2, test_per_word=2)


@pytest.fixture(scope="session")
def grid_corpus(tmp_path_factory) -> Path:
    """3 speakers x 4 sentences (the ``unseen`` split: 1 train, 1 val, 1 test speaker)."""
    return make_prepared(tmp_path_factory.mktemp("grid"), "grid", speakers=3, held_out=1,
                         utterances=4)
