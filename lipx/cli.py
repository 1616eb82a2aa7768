"""The ``lipx`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function (imported inside the command so that
``lipx --help`` stays fast and torch-free), and prints the result. ``LipxError`` becomes one red
line and exit code 1; a traceback only with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lipx import __version__
from lipx.errors import LipxError

app = typer.Typer(
    name="lipx",
    help="Visual-speech models (lipreading, lip-to-speech) from PyTorch training to real-time "
    "ONNX/TensorRT streaming.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Make or prepare audio-visual corpora (synthetic, GRID, LRW).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"lipx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """lipx: lipreading and lip-to-speech, from training to real-time streaming."""
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def done(message: str, started: float) -> None:
    """The one summary line every command ends with."""
    console.print(f"[green]PASSED[/green] | {message} | {time.perf_counter() - started:.1f} s")


# --- checkpoints: convert, info -------------------------------------------------------------


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="The original checkpoint (.pth/.ckpt/.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the lipx checkpoint.")],
    from_: Annotated[
        Optional[str],
        typer.Option("--from", help="Original layout: lipreading-original or vca-gan-original "
                     "(detected from the checkpoint's groups when omitted)."),
    ] = None,
    vocab: Annotated[
        Optional[Path],
        typer.Option(help="Text file with one class label per line, in output order "
                     "(lipreading; LRW: the 500 words sorted)."),
    ] = None,
) -> None:
    """Convert a released original checkpoint into a lipx checkpoint."""
    from lipx.models.checkpoint import save_checkpoint
    from lipx.models.convert import convert_original

    started = time.perf_counter()
    words = _read_vocab(vocab) if vocab else None
    ckpt = convert_original(src, from_, vocabulary=words)
    save_checkpoint(ckpt, out)
    done(f"{ckpt.task} ({ckpt.preset or 'custom'}, {ckpt.num_parameters():,} parameters) -> {out}",
         started)


def _read_vocab(path: Path) -> list[str]:
    from lipx.errors import InputError

    if not path.is_file():
        raise InputError(f"vocabulary file {path} does not exist")
    words = [w.strip() for w in path.read_text().splitlines() if w.strip()]
    if not words:
        raise InputError(f"vocabulary file {path} is empty")
    return words


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A lipx checkpoint.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what a checkpoint holds: task, preset, parameters per module, preprocessing."""
    import json

    from rich.table import Table

    from lipx.models.checkpoint import load_checkpoint
    from lipx.models.summary import summarize

    summary = summarize(load_checkpoint(path))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=str(path), show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "\n".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}"
                              for k, v in value.items()) or "none"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key, str(value))
    Console().print(table)


# --- data: synth ----------------------------------------------------------------------------


# --- data: prepare --------------------------------------------------------------------------


# --- export ---------------------------------------------------------------------------------


def main() -> None:
    """Console entry point: run the app, turning LipxError into one line and exit code 1.

    typer's standalone mode already handles usage errors (exit 2) and Ctrl-C at prompts.
    """
    try:
        app()
    except LipxError as e:
        if _state["debug"]:
            console.print_exception()
        console.print(f"[red]error:[/red] {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
