"""Synthetic players for the web server's benchmark: websocket clients that hold keys like people do.

Each client sends its set of held keys every 1/fps seconds (sticky random holds), and times
each key message until the first frame whose echoed seq covers it: action-to-frame latency on
the client's own clock, the same way the page measures it. Clients run in separate processes
(`client_process`) so their Python work does not share the server's GIL.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque

import numpy as np

from odyssey_gym.play.web.protocol import unpack_frame_header

__all__ = ["run_clients", "client_process"]


async def _one_client(uri: str, keys: list[str], fps: float, warmup_s: float, seconds: float, seed: int) -> dict:
    import websockets

    rng = random.Random(seed)
    out = {"latencies_ms": [], "frames": 0, "full": False, "error": None}
    try:
        async with websockets.connect(uri, max_size=2**22, compression=None, open_timeout=30) as ws:
            hello = json.loads(await ws.recv())
            if hello.get("type") != "hello":
                out["full"] = hello.get("type") == "full"
                out["error"] = hello.get("message", str(hello))
                return out
            t_measure = time.perf_counter() + warmup_s
            t_end = t_measure + seconds
            pending: deque[tuple[int, float]] = deque()

            async def send_keys():
                held: set[str] = set()
                seq, period = 0, 1.0 / fps
                next_t = time.perf_counter()
                while time.perf_counter() < t_end:
                    if rng.random() < 0.08:  # sticky holds: a key changes every ~12 frames
                        k = rng.choice(keys)
                        held.symmetric_difference_update({k})
                    seq += 1
                    pending.append((seq, time.perf_counter()))
                    await ws.send(json.dumps({"type": "keys", "seq": seq, "keys": sorted(held)}))
                    next_t += period
                    await asyncio.sleep(max(0.0, next_t - time.perf_counter()))

            sender = asyncio.create_task(send_keys())
            try:
                while (now := time.perf_counter()) < t_end:
                    msg = await asyncio.wait_for(ws.recv(), timeout=t_end - now + 5)
                    if not isinstance(msg, bytes):
                        continue
                    now = time.perf_counter()
                    ack = unpack_frame_header(msg)[1]
                    while pending and pending[0][0] <= ack:
                        _, t_sent = pending.popleft()
                        if t_sent >= t_measure:
                            out["latencies_ms"].append(1e3 * (now - t_sent))
                    if now >= t_measure:
                        out["frames"] += 1
            finally:
                sender.cancel()
    except Exception as e:  # noqa: BLE001 (a failed client is a result to report, not a crash)
        out["error"] = f"{type(e).__name__}: {e}"
    return out


async def run_clients(uri: str, n: int, keys: list[str], fps: float, warmup_s: float, seconds: float,
                      seed: int = 0) -> list[dict]:
    """`n` concurrent clients (connections spread over the first half of the warmup)."""
    async def staggered(i):
        await asyncio.sleep(warmup_s * 0.5 * i / max(1, n))
        return await _one_client(uri, keys, fps, warmup_s * (1 - 0.5 * i / max(1, n)), seconds, seed + i)

    return list(await asyncio.gather(*(staggered(i) for i in range(n))))


def client_process(uri: str, n: int, keys: list[str], fps: float, warmup_s: float, seconds: float, seed: int,
                   queue) -> None:
    """Process entry point: run `n` clients, put compact results on `queue`."""
    res = asyncio.run(run_clients(uri, n, keys, fps, warmup_s, seconds, seed))
    for r in res:
        r["latencies_ms"] = np.asarray(r["latencies_ms"], np.float32)
    queue.put(res)
