"""The command line's shape: one definition per option, one meaning per positional argument, no
hidden aliases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, get_type_hints

import pytest

from lipx import cli

PER_COMMAND = {
    "out": "--out/-o everywhere, but what it writes is each command's",
    "jsonl": "JSON lines of what each command makes: stream's results, crop's mouth boxes",
    "src": "the input each command converts or prepares",
    "checkpoint": "export's argument, eval's argument, bench's --checkpoint beside its target",
    "data": "train and eval: a corpus argument (one definition); bench: --data beside its target",
    "streams": "eval-stream: the STREAMS argument; data synth: --streams, how many to make",
    "part": "eval and bench: a part of a corpus (one definition); data synth: whose streams",
    "words": "demo: words said in its video; data synth: the vocabulary's size",
    "layout": "data synth: --layout; data prepare: the LAYOUT argument",
    "max_streams": "eval-stream: score at most N streams; serve: live streams at most",
    "workers": "data synth/prepare: parallel processes; serve: front-end calls at once",
    "max_batch": "export: the largest batch of TensorRT profiles; serve: streams per engine call",
    "model": "stream: a package, or with --server a served model's name; bench-serve: the name",
}
"""Parameter names that several commands use for different things, and why."""
TWO_KINDS = {
    "device": "PyTorch's device (train, eval, bench) or the engine's (stream, eval-stream, "
              "serve, crop)",
    "engine": "an engine (export, stream, eval-stream); bench: an engine or one of its rows, "
              "repeatable",
}
"""Options with two definitions, and why."""


def _commands() -> Iterator[tuple[str, Callable[..., Any]]]:
    for app, prefix in ((cli.app, ""), (cli.data_app, "data ")):
        for info in app.registered_commands:
            assert info.callback is not None
            yield prefix + (info.name or info.callback.__name__), info.callback


def test_an_option_of_several_commands_is_one_shared_definition():
    definitions: dict[str, dict[Any, list[str]]] = defaultdict(lambda: defaultdict(list))
    for command, callback in _commands():
        for name, hint in get_type_hints(callback, include_extras=True).items():
            if name != "return":
                definitions[name][hint].append(command)
    for name, hints in definitions.items():
        if name not in PER_COMMAND:
            count = 2 if name in TWO_KINDS else 1
            assert len(hints) == count, f"{name} is declared {len(hints)} times: {dict(hints)}"


def test_no_hidden_options_and_eval_stream_is_its_own_command(run_cli):
    for command, callback in _commands():
        for hint in get_type_hints(callback, include_extras=True).values():
            for info in getattr(hint, "__metadata__", ()):
                assert not getattr(info, "hidden", False), command
    code, _, err = run_cli("eval", "ckpt.lipx", "data", "--stream")
    assert code == 2 and "No such option" in err and "--stream" in err
    code, out, _ = run_cli("--help")
    assert code == 0 and "eval-stream" in out


@pytest.mark.parametrize("args", [
    ["stream", "clip.mp4", "--model", "pkg", "--backend", "onnx"],
    ["bench", "pkg", "--engines", "onnx"],
    ["export", "x.lipx", "--output", "pkg"],
])
def test_old_spellings_are_usage_errors(run_cli, args):
    code, _, err = run_cli(*args)
    assert code == 2 and "No such option" in err


def test_bench_takes_one_engine_per_use(run_cli, tmp_path):
    code, _, err = run_cli("bench", tmp_path, "--engine", "onnx,torch")
    assert code == 1 and "Traceback" not in err
    assert "--engine takes one name per use, got 'onnx,torch'; repeat it: --engine onnx " \
        "--engine torch" in err


def test_precision_is_one_choice_everywhere(run_cli, tmp_path):
    for args in (["stream", "clip.mp4", "--model", tmp_path], ["eval-stream", tmp_path, tmp_path],
                 ["export", "x.lipx", "-o", tmp_path / "pkg"]):
        code, _, err = run_cli(*args, "--precision", "fp8")
        assert code == 2 and "'fp8' is not one of" in " ".join(err.split()), args


def test_eval_stream_reads_a_package_and_a_set_of_streams(packages, tmp_path, run_cli):
    code, _, err = run_cli("eval-stream", packages["lipreading"], tmp_path)
    assert code == 1 and "has no streams.jsonl" in err and "Traceback" not in err
    code, _, err = run_cli("eval-stream", tmp_path, tmp_path)
    assert code == 1 and "not a lipx model package" in err
    code, _, err = run_cli("eval-stream", packages["lipreading"], tmp_path, "--sweep", "stride=1")
    assert code == 1 and "--sweep needs --out" in err


def test_every_command_has_a_one_line_summary_in_the_help_listing():
    from lipx import cli

    for group in (cli.app, cli.data_app):
        for info in group.registered_commands:
            assert info.short_help and "\n" not in info.short_help, info.name
            assert len(info.short_help) <= 120, info.short_help
