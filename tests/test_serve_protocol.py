"""The wire protocol's parser is total: any input parses or is refused with a ProtocolError,
never anything else (fuzzed with hypothesis), and what clients encode, the server decodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipx.serve.protocol import (
    Hello,
    ProtocolError,
    audio_message,
    decode_image,
    encode_jpeg,
    frame_message,
    parse_audio,
    parse_control,
    parse_frame,
    parse_hello,
)

MODELS = ["lipreading-small", "lip2speech-small"]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
hello_fields = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["hello", "end", "x"]) | json_values,
    "protocol": st.sampled_from([1, 2, "1", 1.0, True]) | json_values,
    "model": st.sampled_from([*MODELS, "x"]) | json_values,
    "format": st.sampled_from(["jpeg", "gray", "rgb", "png"]) | json_values,
    "width": st.integers(-5, 5000) | json_values, "height": st.integers(-5, 5000) | json_values,
    "fps": st.floats() | json_values, "crop": st.sampled_from(["lrw", "auto"]) | json_values,
    "live": json_values, "boxes": json_values,
    "options": st.dictionaries(st.sampled_from(["window", "stride", "threshold", "zz"]),
                               json_values, max_size=3) | json_values,
})


def _refused_or(parse, *args):
    try:
        return parse(*args)
    except ProtocolError as e:
        assert e.code and e.reason and "\n" not in e.reason and e.close_code >= 1000
        return None


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_is_a_hello_or_a_refusal(text):
    _refused_or(parse_hello, text, MODELS)
    _refused_or(parse_control, text)


@FUZZ
@given(hello_fields)
def test_any_json_object_is_a_hello_or_a_refusal(fields):
    hello = _refused_or(parse_hello, json.dumps(fields), MODELS)
    if hello is not None:
        assert isinstance(hello, Hello) and hello.model in MODELS
        assert fields.get("protocol") == 1 and fields.get("type") == "hello"


@FUZZ
@given(st.binary(max_size=64), st.sampled_from(["jpeg", "gray", "rgb"]))
def test_any_frame_bytes_are_an_image_or_a_refusal(data, fmt):
    hello = Hello(model=MODELS[0], format=fmt, width=None if fmt == "jpeg" else 16,
                  height=None if fmt == "jpeg" else 2)
    parsed = _refused_or(parse_frame, data)
    _refused_or(decode_image, data, hello)
    _refused_or(decode_image, b"\xff\xd8" + data, hello)
    if parsed is not None:
        assert data.startswith(b"LXF1")


def test_what_a_client_encodes_the_server_decodes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    t, payload = parse_frame(frame_message(1.25, image.tobytes()))
    raw = decode_image(payload, Hello(model="m", format="rgb", width=32, height=24))
    assert t == 1.25 and np.array_equal(raw, image)
    y, x = np.mgrid[0:24, 0:32]
    smooth = np.stack([x * 8, y * 10, x + y], axis=2).astype(np.uint8)  # as a face is, not noise
    _, payload = parse_frame(frame_message(0.0, encode_jpeg(smooth, quality=95)))
    jpeg = decode_image(payload, Hello(model="m", format="jpeg"))
    assert jpeg.shape == smooth.shape and np.abs(jpeg.astype(int) - smooth).mean() < 3
    samples = rng.standard_normal(160).astype(np.float32)
    start, emitted, rate, back = parse_audio(audio_message(0.5, 1.25, 16000, samples))
    assert (start, emitted, rate) == (0.5, 1.25, 16000) and np.array_equal(back, samples)


@pytest.mark.parametrize("fields, code", [
    ({"protocol": 1, "model": "x", "format": "jpeg"}, "unknown_model"),
    ({"protocol": 1, "format": "jpeg"}, "unknown_model"),  # two are served
    ({"protocol": 3, "model": MODELS[0], "format": "jpeg"}, "unsupported_protocol"),
    ({"protocol": 1, "model": MODELS[0], "format": "rgb"}, "bad_message"),  # no size
    ({"protocol": 1, "model": MODELS[0], "format": "jpeg", "options": {"stride": 1.5}},
     "bad_options"),
])
def test_a_bad_hello_names_what_is_wrong(fields, code):
    with pytest.raises(ProtocolError) as e:
        parse_hello(json.dumps({"type": "hello", **fields}), MODELS)
    assert e.value.code == code
