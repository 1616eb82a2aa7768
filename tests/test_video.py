"""lipx.video and lipx.landmarks: decoding, resampling, mouth crops, alignment."""

from __future__ import annotations

import av
import numpy as np
import pytest

from lipx import landmarks as L
from lipx import video as V
from lipx.errors import InputError
from lipx.video import VideoSpec

SPEC = VideoSpec()


def smooth_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A random uint8 image with structure at several scales (blurred noise)."""
    cv2 = pytest.importorskip("cv2")
    noise = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    if len(shape) == 4:  # a clip: blur frame by frame
        return np.stack([cv2.GaussianBlur(frame, (0, 0), 1.0) for frame in noise])
    return cv2.GaussianBlur(noise, (0, 0), 1.0)


def write_video(path, frames: np.ndarray, fps: int | float) -> None:
    """Encode RGB frames with libx264 (nearly lossless) at ``fps``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def numbered_frames(count: int, size: int = 64) -> np.ndarray:
    """Frames whose grey level encodes their index (index * 8)."""
    levels = (np.arange(count) * 8).astype(np.uint8)
    return np.repeat(levels[:, None, None, None], size * size * 3).reshape(count, size, size, 3)


def test_to_luma_matches_pil():
    pil = pytest.importorskip("PIL.Image")
    rgb = smooth_image((40, 50, 3))
    np.testing.assert_array_equal(V.to_luma(rgb), np.asarray(pil.fromarray(rgb).convert("L")))


@pytest.mark.parametrize("n_in", [136, 146, 50])
def test_resize_matches_pil_bilinear(n_in):
    """Shrinking (antialiased) and enlarging agree with PIL to within its uint8 rounding."""
    pil = pytest.importorskip("PIL.Image")
    grey = smooth_image((n_in, n_in), seed=n_in)
    ref = np.asarray(pil.fromarray(grey).resize((112, 112), pil.BILINEAR), np.float32)
    ours = V.resize_bilinear(grey, 112)
    assert ours.shape == (112, 112) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1.0


def test_mouth_crop_matches_original_pipeline():
    """crop -> resize -> luma (PIL, uint8 after each) vs lipx within 1.5 grey levels."""
    pil = pytest.importorskip("PIL.Image")
    face = smooth_image((256, 256, 3), seed=1)
    ours = V.mouth_crop(face, SPEC)
    img = pil.fromarray(face).crop(SPEC.box).resize((112, 112), pil.BILINEAR).convert("L")
    ref = (np.asarray(img, np.float32) / 255 - SPEC.mean) / SPEC.std
    assert ours.shape == (112, 112) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() * SPEC.std * 255 <= 1.5


def test_clip_frame_and_region_paths_agree():
    faces = smooth_image((3, 256, 256, 3), seed=2)
    clip = V.mouth_crop(faces, SPEC)
    assert clip.shape == (3, 112, 112)
    np.testing.assert_array_equal(V.mouth_crop_frame(faces[1], SPEC), clip[1])
    region = V.mouth_region(faces, SPEC, margin=8)
    assert region.shape == (3, 152, 152) and region.dtype == np.uint8
    origin = V.region_origin(SPEC, 8)
    np.testing.assert_array_equal(V.mouth_crop(region, SPEC, origin=origin), clip)
    shifted = V.mouth_crop(faces, SPEC, shift=(3, -5))
    np.testing.assert_array_equal(V.mouth_crop(region, SPEC, origin=origin, shift=(3, -5)), shifted)
    with pytest.raises(InputError, match="does not fit"):
        V.mouth_crop(region, SPEC, origin=origin, shift=(9, 0))


def test_normalise_denormalise_round_trip():
    pixels = np.arange(256, dtype=np.uint8)
    x = V.normalise(pixels, SPEC)
    assert x[0] == pytest.approx(-0.4136 / 0.17, rel=1e-5)
    np.testing.assert_array_equal(V.denormalise(x, SPEC), pixels)


def test_resample_indices_rules():
    assert V.resample_indices(np.arange(10) / 25, 25).tolist() == list(range(10))
    fifty = V.resample_indices(np.arange(20) / 50, 25)
    assert fifty.tolist() == list(range(0, 20, 2))
    thirty = V.resample_indices(np.arange(30) / 30, 25)
    assert len(thirty) == 25 and thirty[0] == 0 and np.all(np.diff(thirty) >= 1)
    twelve = V.resample_indices(np.arange(6) / 12.5, 25)
    assert twelve.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


@pytest.mark.parametrize("fps,expected", [(25, 10), (50, 10), (30, 10)])
def test_read_video_resamples_to_25fps(tmp_path, fps, expected):
    count = int(round(0.4 * fps))
    path = tmp_path / f"v{fps}.mp4"
    write_video(path, numbered_frames(count), fps)
    frames = V.read_video(path)
    assert frames.shape == (expected, 64, 64, 3) and frames.dtype == np.uint8
    source = np.rint(frames[:, 32, 32, 0] / 8).astype(int)  # which source frame each output is
    ticks = np.arange(expected) / 25
    assert np.all(np.abs(source / fps - ticks) <= 0.5 / fps + 1e-6)


def test_read_video_errors(tmp_path):
    with pytest.raises(InputError, match="cannot decode"):
        V.read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError):
        V.read_video(junk)


# --- landmarks ------------------------------------------------------------------------------


def test_reference_face_is_frame_6_of_the_packaged_file(tmp_path):
    ref = L.reference_face()
    assert ref.shape == (98, 2) and not ref.flags.writeable
    from pathlib import Path

    test_copy = Path(__file__).parent / "data" / "reference" / "lrw_reference_face_98.txt"
    np.testing.assert_array_equal(L.read_landmarks(test_copy)[6], ref)
    # the mouth points (76-95 in WFLW) lie inside the mouth box
    x1, y1, x2, y2 = SPEC.box
    mouth = ref[76:96]
    assert np.all((mouth[:, 0] > x1) & (mouth[:, 0] < x2) & (mouth[:, 1] > y1) & (mouth[:, 1] < y2))


def test_landmark_format_round_trip_and_missing_frames(tmp_path):
    frames = np.random.default_rng(0).uniform(0, 300, (4, 98, 2)).astype(np.float32)
    frames[2] = np.nan
    text = L.format_landmarks("s1/video/bbaf2n.mpg", frames)
    assert text.startswith("s1/video/bbaf2n.mpg:") and text.count("|") == 3 and "||" in text
    path, parsed = L.parse_landmarks(text)
    assert path == "s1/video/bbaf2n.mpg" and parsed.shape == (4, 98, 2)
    np.testing.assert_allclose(parsed[[0, 1, 3]], frames[[0, 1, 3]], atol=0.006)
    assert np.isnan(parsed[2]).all()
    L.write_landmarks(tmp_path / "a" / "x.txt", "x.mpg", frames[:1].round())
    assert (tmp_path / "a" / "x.txt").read_text().split(":")[1].split(",")[0].count(".") == 0
    with pytest.raises(InputError, match="point counts"):
        L.parse_landmarks("p:1 2,3 4|5 6")
    with pytest.raises(InputError, match="two numbers"):
        L.parse_landmarks("p:1 2 3,4 5")


def test_similarity_transform_recovers_a_known_transform():
    ref = L.reference_face().astype(np.float64)
    angle, scale, shift = np.deg2rad(12.0), 1.37, np.array([40.0, -7.5])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (scale * ref @ rot.T + shift) + np.random.default_rng(0).normal(0, 0.2, ref.shape)
    m = L.similarity_transform(src, ref)  # back to the reference
    mapped = src @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - ref).max() < 1.0
    assert np.hypot(*m[:, 0]) == pytest.approx(1 / scale, rel=2e-3)
    with pytest.raises(InputError, match="degenerate"):
        L.similarity_transform(np.ones((98, 2)), ref)


def test_align_face_puts_a_landmarked_feature_in_place():
    cv2 = pytest.importorskip("cv2")
    ref = L.reference_face().astype(np.float64)
    angle, scale, shift = np.deg2rad(-9.0), 1.25, np.array([60.0, 20.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = scale * ref @ rot.T + shift
    mouth = ref[76:96].mean(0)
    image = np.full((288, 360), 40, np.uint8)
    centre = scale * mouth @ rot.T + shift
    cv2.circle(image, tuple(int(round(v)) for v in centre), int(15 * scale), 220, -1)
    aligned = L.align_face(image, points)
    assert aligned.shape == (256, 256)
    ys, xs = np.nonzero(aligned > 130)
    assert abs(xs.mean() - mouth[0]) < 1.0 and abs(ys.mean() - mouth[1]) < 1.0
    region = L.align_face(image, points, origin=(51, 87), out_size=152)
    diff = np.abs(region.astype(int) - aligned[87:239, 51:203])  # OpenCV's fixed point differs
    assert diff.max() <= 4 and (diff > 0).mean() < 1e-3  # by a level or two at a few edge pixels
