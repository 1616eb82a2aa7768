"""Bad clients beside good ones: do the good streams keep their latency?

    python faults.py ws://127.0.0.1:PORT VIDEO SECONDS OUT.json

For SECONDS, in one asyncio loop, four kinds of bad client connect over and over, one of each
at a time: malformed hellos, oversized frames, clients that send half a second of frames and
vanish, and clients that say hello and then stall. Run it beside ``lipx bench-serve`` of the
same server. Writes how many of each were answered, and how (error codes, close codes).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

import aiohttp

from lipx.runtime.sources import open_source
from lipx.serve.protocol import encode_jpeg, frame_message

HELLO = json.dumps({"type": "hello", "protocol": 1, "format": "jpeg", "crop": "lrw"})


async def bad(http: aiohttp.ClientSession, url: str, kind: str, frames: list[bytes]) -> str:
    async with http.ws_connect(url) as ws:
        if kind == "malformed":
            await ws.send_str("{not json")
        elif kind == "oversized":
            await ws.send_str(HELLO)
            await ws.receive()
            await ws.send_bytes(frame_message(0.0, bytes(5 << 20)))
        elif kind == "vanish":
            await ws.send_str(HELLO)
            await ws.receive()
            for k, f in enumerate(frames[:12]):
                await ws.send_bytes(frame_message(k / 25, f))
            return "vanished"
        elif kind == "stall":
            await ws.send_str(HELLO)
            await ws.receive()
            await asyncio.sleep(1.0)
            return "stalled 1 s"
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                return json.loads(msg.data)["code"]
        return f"closed {ws.close_code}"


async def main(url: str, video: str, seconds: float) -> dict[str, dict[str, int]]:
    with open_source(video) as source:
        frames = [encode_jpeg(f.image) for _, f in zip(range(12), source)]
    answers: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    deadline = time.monotonic() + seconds

    async def loop(kind: str) -> None:
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    answers[kind][await bad(http, url, kind, frames)] += 1
                except (aiohttp.ClientError, ConnectionError) as e:
                    answers[kind][type(e).__name__] += 1

    await asyncio.gather(*(loop(k) for k in ("malformed", "oversized", "vanish", "stall")))
    return {k: dict(v) for k, v in answers.items()}


if __name__ == "__main__":
    url, video, seconds, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    result = asyncio.run(main(url, video, seconds))
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "answers": result}, f, indent=1)
    print(json.dumps(result))
