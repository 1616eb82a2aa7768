"""GRID `.align` and LRW `.txt` files: what synth writes prepare reads back; real files parse."""

from __future__ import annotations

import numpy as np
import pytest

from lipx.data import formats
from lipx.data.synth import landmark_text
from lipx.landmarks import read_landmarks

# GRID s1/bbaf2n.align as the corpus ships it ("bin blue at f two now")
GRID_ALIGN = """0 23750 sil
23750 29500 bin
29500 34000 blue
34000 35500 at
35500 41000 f
41000 47250 two
47250 53000 now
53000 74500 sil
"""

# an LRW-style metadata file: two spaces after the keys, a blank line, CRLF line ends
LRW_TXT = "Text:  ABOUT\r\nConf:  4\r\n\r\nDuration: 0.39 seconds\r\n"


def test_align_round_trip_to_10_ms(tmp_path):
    words = (("bin", 0.412, 0.703), ("blue", 0.8, 1.0), ("at", 1.0, 1.13))
    path = tmp_path / "s1" / "align" / "bbaf2n.align"
    formats.write_align(path, words, n_frames=75)
    lines = path.read_text().splitlines()
    assert lines[0] == "0 10250 sil" and lines[2] == "17500 20000 sp"  # pause before "blue"
    assert lines[-1] == "28250 75000 sil"  # to the end of the 75 frames
    back = formats.read_align(path)
    assert [w.word for w in back] == ["bin", "blue", "at"]
    np.testing.assert_allclose([(w.start, w.end) for w in back], [w[1:] for w in words],
                               atol=0.005)
    assert list(tmp_path.rglob("*.part")) == []


def test_a_real_grid_align_file_parses():
    words = formats.parse_align(GRID_ALIGN)
    assert " ".join(w.word for w in words) == "bin blue at f two now"
    assert words[0] == formats.TimedWord("bin", 0.95, 1.18)
    assert words[-1].end == 53000 / 25000


def test_align_ignores_lines_that_are_not_timed_segments():
    text = "#!MLF!#\n0 100 sil\n100 x bin\n100 200\n200 900 blue\n900 1000 sp\n"
    assert formats.parse_align(text) == [formats.TimedWord("blue", 200 / 25000, 900 / 25000)]
    assert formats.parse_align("") == []


def test_lrw_info_round_trip(tmp_path):
    path = tmp_path / "ABOUT" / "train" / "ABOUT_00001.txt"
    formats.write_lrw_info(path, "ABOUT", 0.4249)
    assert path.read_text() == "Text: ABOUT\nConf: 1\nDuration: 0.42 seconds\n"
    assert formats.read_lrw_info(path) == formats.LrwInfo("ABOUT", 1.0, 0.42)


def test_a_real_lrw_info_file_parses(tmp_path):
    path = tmp_path / "ABOUT_00001.txt"
    path.write_bytes(LRW_TXT.encode())
    assert formats.read_lrw_info(path) == formats.LrwInfo("ABOUT", 4.0, 0.39)


@pytest.mark.parametrize("text", ["", "Text:\nConf: high\nDuration: 1.2.3 seconds\n",
                                  "some other file\n"])
def test_lrw_info_fields_missing_or_garbled_are_none(text):
    assert formats.parse_lrw_info(text) == formats.LrwInfo(None, None, None)


def test_grid_paths_are_the_corpus_layout(tmp_path):
    paths = formats.grid_paths(tmp_path, "s3", "bbaf2n")
    rel = {k: p.relative_to(tmp_path).as_posix() for k, p in paths.items()}
    assert rel == {"audio": "s3/audio/bbaf2n.wav", "align": "s3/align/bbaf2n.align",
                   "landmark": "s3/landmark/bbaf2n.txt", "video": "s3/video/bbaf2n.mpg"}


def test_synth_landmarks_are_whole_pixels_in_the_landmark_format(tmp_path):
    points = np.array([[[-0.4, 10.5], [11.5, 287.6]], [[3.2, 4.8], [0.0, 359.49]]])
    line = landmark_text("s1/video/x.mpg", points)
    assert line == "s1/video/x.mpg:0 10,12 288|3 5,0 359"  # numpy rounds halves to even
    (tmp_path / "x.txt").write_text(line)
    np.testing.assert_array_equal(read_landmarks(tmp_path / "x.txt"), np.round(points))
