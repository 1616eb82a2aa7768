"""Write lipx/assets/synthetic_face_98.txt: the synthetic renderer's average face.

It is the reference face of the ``synthetic`` framing (``lipx.landmarks.named_framing``), the
framing of models trained on ``lipx data synth --layout lrw`` corpora. It depends only on the
renderer, so rerun this after changing the renderer's face shapes (``tests/test_framing.py``
checks that the shipped file equals what this writes)::

    python scripts/synthetic_face.py
"""

from __future__ import annotations

from pathlib import Path

from lipx.data.render import average_face
from lipx.landmarks import format_landmarks

OUT = Path(__file__).resolve().parents[1] / "lipx" / "assets" / "synthetic_face_98.txt"


def main() -> None:
    OUT.write_text(format_landmarks("synthetic/average_face", average_face()[None]) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
