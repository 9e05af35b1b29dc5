"""The browser play server without a browser: protocol checks, slot bookkeeping, and the app over
starlette's TestClient and a real uvicorn socket (bad input, "full", slot freeing, sudden disconnects)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from tiny_weights import make_tiny_weights  # noqa: E402
from odyssey_gym.play.web.protocol import (  # noqa: E402
    MAX_MESSAGE_BYTES, CommandMessage, KeyMap, KeyMessage, ProtocolError, parse_message, unpack_frame_header)
from odyssey_gym.play.web.server import GameServer, WebConfig, create_app, serve_in_thread  # noqa: E402
from odyssey_gym.play.web.slots import SlotTable  # noqa: E402
from odyssey_gym.worlds import get_world  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(make_tiny_weights("doom-explore", tmp_path_factory.mktemp("tiny_web"), n_starts=4))


def make_game(weights, max_players=2, record_seconds=10.0, spy=None, backend="numpy", jpeg_encoder="auto"):
    from odyssey_gym.envs.vector_env import WorldModelVectorEnv

    env = WorldModelVectorEnv("doom-explore", num_envs=max_players, device="cpu", weights=weights, backend=backend)
    if spy is not None:  # record every reset's options (which slots were reset)
        orig = env.reset

        def reset(**kw):
            spy.append(kw.get("options"))
            return orig(**kw)

        env.reset = reset
    cfg = WebConfig(world="doom-explore", device="cpu", weights=weights, max_players=max_players,
                    record_seconds=record_seconds, stats_interval_s=0.1, encode_workers=2, jpeg_encoder=jpeg_encoder,
                    allowed_hosts=("testserver",))  # the host name starlette's TestClient sends
    return GameServer(cfg, env=env)


def next_frame(ws, limit=500):
    """-> (tick, ack, jpeg) of the next binary frame; text messages on the way are returned in a list too."""
    texts = []
    for _ in range(limit):
        msg = ws.receive()
        if msg.get("bytes") is not None:
            tick, ack = unpack_frame_header(msg["bytes"])
            return tick, ack, msg["bytes"][8:], texts
        if msg.get("text") is not None:
            texts.append(json.loads(msg["text"]))
    raise AssertionError(f"no frame in {limit} messages")


def next_text(ws, kind, limit=500):
    for _ in range(limit):
        msg = ws.receive()
        if msg.get("text") is not None:
            m = json.loads(msg["text"])
            if m["type"] == kind:
                return m
    raise AssertionError(f"no {kind!r} message in {limit} messages")


# ------------------------------------------------------------------------------------------ protocol


@pytest.mark.parametrize("raw, match", [
    ("{bad", "malformed JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"type": "jump"}), "unknown message type"),
    (json.dumps({"type": "keys", "seq": 1, "keys": [], "x": 1}), r"unknown field\(s\) \['x'\]"),
    (json.dumps({"type": "reset", "now": 1}), "unknown field"),
    (json.dumps({"type": "keys", "seq": -1, "keys": []}), "'seq' must be an integer"),
    (json.dumps({"type": "keys", "seq": True, "keys": []}), "'seq' must be an integer"),
    (json.dumps({"type": "keys", "seq": 2**40, "keys": []}), "'seq' must be an integer"),
    (json.dumps({"type": "keys", "seq": 1, "keys": "w"}), "'keys' must be a list"),
    (json.dumps({"type": "keys", "seq": 1, "keys": [1]}), "'keys' must be a list"),
    (json.dumps({"type": "keys", "seq": 1, "keys": ["w"] * 17}), "'keys' must be a list"),
    (json.dumps({"type": "keys", "seq": 1, "keys": ["w" * MAX_MESSAGE_BYTES]}), "too large"),
    ("[" * 100_000, "too large"),
    (b"\x00\x01", "binary messages"),
    (None, "empty"),
])
def test_parse_rejects_bad_messages(raw, match):
    with pytest.raises(ProtocolError, match=match):
        parse_message(raw)


def test_parse_and_keymap():
    assert parse_message('{"type": "keys", "seq": 3, "keys": ["w", "left"]}') == KeyMessage(3, ("w", "left"))
    assert parse_message('{"type": "record"}') == CommandMessage("record")
    km = KeyMap(get_world("doom-explore"))
    assert km.action(("w", "left")).tolist() == [1, 0, 1, 0, 0, 0]
    assert km.action(("up", "w")).tolist() == [1, 0, 0, 0, 0, 0]
    assert km.action(()).tolist() == [0] * 6
    with pytest.raises(ProtocolError, match=r"unknown key\(s\) \['space'\]"):
        km.action(("w", "space"))
    tc = KeyMap(get_world("doom-takecover"))  # discrete: combos that are no action of the world mean noop
    assert int(tc.action(("left",))) == 0 and int(tc.action(("d",))) == 1
    assert int(tc.action(("left", "right"))) == 2 == int(tc.action(()))


def test_slot_table():
    t = SlotTable(2, np.zeros(3, np.int8))
    a, b, c = object(), object(), object()
    assert t.acquire(a) == 0 and t.acquire(b) == 1 and t.acquire(c) is None
    t.set_action(1, np.array([1, 0, 1]), seq=7, now=10.0)
    inp = t.take(now=10.5)
    assert inp.reset_mask.tolist() == [True, True] and inp.actions.tolist() == [[0, 0, 0], [1, 0, 1]]
    assert inp.seq.tolist() == [0, 7] and inp.queue_wait_s.tolist() == [0.5] and inp.owners == (a, b)
    assert t.take(now=11).reset_mask.tolist() == [False, False]  # consumed
    t.release(1, c)  # not the owner: nothing happens
    assert t.count == 2
    t.release(1, b)
    assert t.count == 1 and t.actions[1].tolist() == [0, 0, 0]
    assert t.take(now=12).reset_mask.tolist() == [False, True]
    assert t.acquire(c) == 1


# ------------------------------------------------------------------------------------------ the app


def test_on_ready_runs_once_when_players_can_join(weights):
    resets, calls = [], []
    game = make_game(weights, spy=resets)
    app = create_app(game, on_ready=lambda: calls.append(len(resets)))
    assert calls == []  # not before the server starts
    with TestClient(app) as client:
        assert calls == [1]  # once, after the env's full reset gave every slot its start
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
    assert len(calls) == 1


def test_frames_actions_and_latency_echo(weights):
    game = make_game(weights)
    with TestClient(create_app(game)) as client:
        assert "<canvas" in client.get("/").text
        assert "WebSocket" in client.get("/static/app.js").text
        with client.websocket_connect("/ws") as ws:
            hello = ws.receive_json()
            assert hello["type"] == "hello" and hello["slot"] == 0 and hello["fps"] == 35.0
            assert hello["keys"]["w"] == 0 and hello["frame_size"] == [120, 160]
            tick, ack, jpeg, _ = next_frame(ws)
            assert jpeg[:2] == b"\xff\xd8" and ack == 0  # a JPEG; no key message applied yet
            ws.send_text(json.dumps({"type": "keys", "seq": 41, "keys": ["w", "right"]}))
            for _ in range(100):
                t2, ack, jpeg, _ = next_frame(ws)
                if ack == 41:
                    break
            assert ack == 41 and t2 > tick
            from io import BytesIO

            from PIL import Image

            assert Image.open(BytesIO(jpeg)).size == (160, 120)
            st = client.get("/stats").json()
            assert st["players"] == 1 and st["slots"] == [
                {"slot": 0, "action": [1, 0, 0, 1, 0, 0], "seq": 41, "sent": st["slots"][0]["sent"],
                 "dropped": st["slots"][0]["dropped"]}]
            assert {"queue", "step", "encode", "send"} <= set(st["timings"])
            stats = next_text(ws, "stats")
            assert stats["players"] == 1 and stats["max_players"] == 2 and "step" in stats["timings"]
        assert client.get("/stats").json()["players"] == 0


@pytest.mark.parametrize("backend, encoder, expect", [("torch", "auto", "cpu"), ("numpy", "process", "process")])
def test_each_encoder_path_serves_frames(weights, backend, encoder, expect):
    """The GPU path's shape on a CPU: the env returns tensors (the torch backend), the server copies each tick's
    frames before the next step reuses the buffer, and the CPU encoder takes tensors ("auto" takes the CPU here,
    with no CUDA). And the worker-process encoder over shared memory, from the numpy backend's frames."""
    from io import BytesIO

    from PIL import Image

    game = make_game(weights, backend=backend, jpeg_encoder=encoder)
    with TestClient(create_app(game)) as client:
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
            for _ in range(3):
                _, _, jpeg, _ = next_frame(ws)
            assert Image.open(BytesIO(jpeg)).size == (160, 120)
            assert client.get("/stats").json()["jpeg_encoder"] == expect


def test_the_server_freezes_what_lives_as_long_as_it_and_times_full_collections(weights):
    """Once started, the objects alive then (model, env, libraries) leave the collector's full passes, and each full
    collection is timed into /stats as "gc_full"; stopping gives the objects back and removes the callback."""
    import gc

    before = len(gc.callbacks)
    game = make_game(weights)
    with TestClient(create_app(game)) as client:
        assert gc.get_freeze_count() > 0 and len(gc.callbacks) == before + 1
        game.timings.clear()  # what bench_web.py does after its warm-up: the callback still reaches the samples
        gc.collect()
        assert client.get("/stats").json()["timings"]["gc_full"]["n"] >= 1
    assert gc.get_freeze_count() == 0 and len(gc.callbacks) == before
    off = make_game(weights)
    off.config.gc_freeze = False
    with TestClient(create_app(off)):
        assert gc.get_freeze_count() == 0


def test_bad_input_is_answered_and_isolated(weights):
    game = make_game(weights)
    with TestClient(create_app(game)) as client:
        with client.websocket_connect("/ws") as good, client.websocket_connect("/ws") as bad:
            good.receive_json(), bad.receive_json()
            good.send_text(json.dumps({"type": "keys", "seq": 5, "keys": ["a"]}))
            bad.send_text(json.dumps({"type": "keys", "seq": 1, "keys": ["s"]}))
            for raw, match in [("{not json", "malformed JSON"), ("x" * (MAX_MESSAGE_BYTES + 1), "too large"),
                               (json.dumps({"type": "keys", "seq": 2, "keys": ["s"], "extra": 1}), "unknown field"),
                               (json.dumps({"type": "keys", "seq": 3, "keys": ["fire"]}), "unknown key"),
                               (json.dumps({"type": "nope"}), "unknown message type")]:
                bad.send_text(raw)
                assert match in next_text(bad, "error")["message"]
            bad.send_bytes(b"\x00" * 16)
            assert "binary" in next_text(bad, "error")["message"]
            # both still play; the bad messages changed nothing: bad keeps its last good action, good its own
            _, ack, _, _ = next_frame(bad)
            for _ in range(50):
                _, gack, _, _ = next_frame(good)
                if gack == 5:
                    break
            assert gack == 5
            slots = {s["slot"]: s for s in client.get("/stats").json()["slots"]}
            assert slots[0]["action"] == [0, 0, 0, 0, 1, 0] and slots[0]["seq"] == 5
            assert slots[1]["action"] == [0, 1, 0, 0, 0, 0] and slots[1]["seq"] == 1
        assert game.step_errors == 0


def test_full_message_and_slot_freeing(weights):
    resets = []
    game = make_game(weights, max_players=2, spy=resets)
    with TestClient(create_app(game)) as client:
        with client.websocket_connect("/ws") as a:
            assert a.receive_json()["slot"] == 0
            with client.websocket_connect("/ws") as b:
                assert b.receive_json()["slot"] == 1
                next_frame(b)
                with client.websocket_connect("/ws") as c:
                    full = c.receive_json()
                    assert full["type"] == "full" and "all 2 player slots are taken" in full["message"]
                    msg = c.receive()
                    assert msg["type"] == "websocket.close" and msg["code"] == 1013
                assert client.get("/stats").json()["players"] == 2
            # b left: its slot is free again and is reset (only it) before anyone else plays it
            for _ in range(200):
                next_frame(a)
                if client.get("/stats").json()["players"] == 1:
                    break
            assert client.get("/stats").json()["players"] == 1
            n_before = len(resets)
            with client.websocket_connect("/ws") as d:
                assert d.receive_json()["slot"] == 1
                next_frame(d)
            masks = [r["reset_mask"].tolist() for r in resets[n_before:] if r and "reset_mask" in r]
            assert [False, True] in masks and all(m == [False, True] for m in masks)
    assert resets[0] is None  # startup: one full reset


def test_record_session_to_mp4(weights):
    game = make_game(weights, max_players=1, record_seconds=1.0)
    with TestClient(create_app(game)) as client:
        assert client.get("/record/nobody.mp4").status_code == 404
        with client.websocket_connect("/ws") as ws:
            pid = ws.receive_json()["player"]
            for _ in range(45):  # more than record_seconds * fps: only the last 35 are kept
                next_frame(ws)
            ws.send_text(json.dumps({"type": "record"}))
            ready = next_text(ws, "record_ready", limit=2000)
            assert ready["url"] == f"/record/{pid}.mp4" and ready["frames"] == 35
            r = client.get(ready["url"])
            assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
            assert r.content[4:8] == b"ftyp" and len(r.content) == ready["bytes"]
        assert client.get(ready["url"]).status_code == 404  # gone with the player


def _raw_ws_handshake(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in s.recv(4096).split(b"\r\n", 1)[0]
    return s


def test_real_socket_abrupt_disconnects_and_huge_frames(weights):
    """A peer that vanishes mid-frame, or sends a frame over the transport cap, ends only itself."""
    import websockets

    game = make_game(weights, max_players=3)
    srv = serve_in_thread(game)
    try:
        async def scenario():
            uri = f"ws://127.0.0.1:{srv.port}/ws"
            async with websockets.connect(uri, max_size=None) as keeper:
                assert json.loads(await keeper.recv())["slot"] == 0
                await keeper.send(json.dumps({"type": "keys", "seq": 9, "keys": ["d"]}))
                # 1: handshake, then half a frame header, then the TCP connection is dropped
                raw = await asyncio.to_thread(_raw_ws_handshake, srv.port)
                raw.sendall(b"\x81")
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                raw.close()  # RST
                # 2: a message over the transport cap (64 KiB): that client is closed with 1009
                async with websockets.connect(uri, max_size=None) as big:
                    await big.recv()
                    await big.send("x" * (70 * 1024))
                    with pytest.raises(websockets.ConnectionClosed) as exc:
                        for _ in range(1000):
                            await asyncio.wait_for(big.recv(), 5)
                    assert exc.value.rcvd is None or exc.value.rcvd.code == 1009
                # the keeper never noticed: frames keep coming with its action applied
                acks = []
                for _ in range(200):
                    m = await asyncio.wait_for(keeper.recv(), 5)
                    if isinstance(m, bytes):
                        acks.append(unpack_frame_header(m)[1])
                        if len(acks) >= 10:
                            break
                assert acks[-1] == 9
            for _ in range(100):
                if game.stats()["players"] == 0:
                    break
                await asyncio.sleep(0.05)

        asyncio.run(scenario())
        st = json.loads(urllib.request.urlopen(srv.url + "/stats", timeout=5).read())
        assert st["players"] == 0 and st["step_errors"] == 0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(srv.url + "/record/x.mp4", timeout=5)
    finally:
        srv.stop()


def test_cli_web_builds_config(monkeypatch, capsys):
    import odyssey_gym.play.web.server as server
    from odyssey_gym.cli import main

    seen = {}
    monkeypatch.setattr(server, "run_server", lambda cfg: seen.setdefault("cfg", cfg))
    assert main(["play", "--web", "--port", "8123", "--max-players", "3", "--world", "doom-takecover",
                 "--device", "cpu"]) == 0
    cfg = seen["cfg"]
    assert (cfg.host, cfg.port, cfg.max_players, cfg.world, cfg.device) == ("127.0.0.1", 8123, 3, "doom-takecover", "cpu")
    assert cfg.allowed_origins == () and cfg.idle_timeout_s == 120 and cfg.max_per_address == 4
    seen.clear()
    assert main(["play", "--web", "--device", "cpu"]) == 0
    assert seen["cfg"].max_players == 1  # on a CPU each slot costs a model step per tick: one by default
    seen.clear()
    assert main(["play", "--web", "--allow-origin", "https://a.example", "--allow-origin", "https://b.example",
                 "--allow-host", "game.example", "--idle-timeout", "30", "--max-per-address", "2"]) == 0
    cfg = seen["cfg"]
    assert cfg.allowed_origins == ("https://a.example", "https://b.example") and cfg.allowed_hosts == ("game.example",)
    assert (cfg.idle_timeout_s, cfg.max_per_address) == (30, 2)
    assert main(["play", "--web", "--idle-timeout", "-1"]) == 2
    assert "idle_timeout_s must be >= 0" in capsys.readouterr().err
    assert main(["play", "--web", "--max-players", "0"]) == 2
    assert "max_players must be >= 1" in capsys.readouterr().err


def test_slow_client_keeps_only_the_newest_frame():
    from odyssey_gym.play.web.recording import SessionRecorder
    from odyssey_gym.play.web.server import Player

    p = Player(id="x", slot=0, recorder=SessionRecorder(0))
    for i in range(5):  # five ticks while the sender was busy: four are dropped, nothing queues
        p.offer(b"frame%d" % i, float(i))
    assert p.latest == (b"frame4", 4.0) and p.dropped == 4 and p.wake.is_set()


def test_jpeg_encoder_choice_and_errors():
    import torch

    from odyssey_gym.play.web import jpeg

    auto = jpeg.make_jpeg_encoder("auto", device=torch.device("cpu"), backend="torch", quality=80, workers=2)
    assert auto.name == "cpu"
    auto.close()
    proc = jpeg.make_jpeg_encoder("process", device="cpu", backend="numpy", quality=80, workers=2)
    assert proc.name == "process" and proc.workers == 2
    proc.close()
    with pytest.raises(ValueError, match="needs the env's frames on a CUDA device"):
        jpeg.make_jpeg_encoder("cuda", device=torch.device("cpu"), backend="torch", quality=80, workers=2)
    with pytest.raises(ValueError, match="jpeg encoder must be one of"):
        jpeg.make_jpeg_encoder("nvenc", device="cpu", backend="numpy", quality=80, workers=2)


def test_encodes_on_gpu_decides_auto_for_env_and_encoder(monkeypatch):
    """The server's env backend and the encoder come from one rule: a GPU env keeps frames there only for an
    encoder that encodes there; "auto" does so only where nvJPEG works."""
    from odyssey_gym.play.web import jpeg

    for kind in jpeg.ENCODERS:
        assert not jpeg.encodes_on_gpu(kind, cuda=False)
    assert jpeg.encodes_on_gpu("cuda", cuda=True)
    assert not jpeg.encodes_on_gpu("cpu", cuda=True) and not jpeg.encodes_on_gpu("process", cuda=True)
    monkeypatch.setattr(jpeg, "cuda_jpeg_problem", lambda: None)
    assert jpeg.encodes_on_gpu("auto", cuda=True)
    monkeypatch.setattr(jpeg, "cuda_jpeg_problem", lambda: "no nvJPEG in this torchvision")
    assert not jpeg.encodes_on_gpu("auto", cuda=True)
    with pytest.raises(ValueError, match="jpeg_encoder must be one of"):
        WebConfig(jpeg_encoder="gpu")


def test_cpu_jpeg_encoder_keeps_slot_order_over_its_tasks():
    """Frames split over several tasks come back in the order of the slots asked for, from numpy or a tensor."""
    from io import BytesIO

    import torch
    from PIL import Image

    from odyssey_gym.play.web.jpeg import CpuJpegEncoder

    frames = np.zeros((70, 12, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(70, dtype=np.uint8)[:, None, None] * 3  # each frame its own red level
    enc = CpuJpegEncoder(quality=95, workers=3)
    slots = [69, 3, 40, 0, *range(5, 40)]
    try:
        for source in (frames, torch.from_numpy(frames)):
            out = asyncio.run(enc.encode(source, slots))
            reds = np.array([np.asarray(Image.open(BytesIO(b)))[..., 0].mean() for b in out])
            assert np.abs(reds - 3 * np.array(slots)).max() < 2.5  # lossy, but each frame is its slot's (3 apart)
        assert asyncio.run(enc.encode(frames, [])) == []
    finally:
        enc.close()


def test_process_jpeg_encoder_keeps_slot_order_and_grows_its_buffer():
    """Worker processes read the frames from shared memory: each JPEG is its slot's frame, in the order asked, from
    numpy or a tensor; a tick with more or larger frames gets a larger buffer; close() frees the segment."""
    from io import BytesIO
    from multiprocessing import shared_memory

    import torch
    from PIL import Image

    from odyssey_gym.play.web.jpeg import ProcessJpegEncoder

    frames = np.zeros((70, 12, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(70, dtype=np.uint8)[:, None, None] * 3
    enc = ProcessJpegEncoder(quality=95, workers=2)
    try:
        enc.warm_up()
        every = [69, 3, 40, 0, *range(4, 40), *range(41, 69), 1, 2]  # every frame, not in order
        for slots in ([69, 3, 40, 0, *range(5, 20)], every):
            for source in (frames, torch.from_numpy(frames)):
                out = asyncio.run(enc.encode(source, slots))
                reds = np.array([np.asarray(Image.open(BytesIO(b)))[..., 0].mean() for b in out])
                assert np.abs(reds - 3 * np.array(slots)).max() < 2.5
        first = enc._shm.name
        big = np.full((8, 96, 128, 3), 200, np.uint8)  # two frames larger than the buffer holds
        out = asyncio.run(enc.encode(big, [7, 1]))
        assert enc._shm.name != first and [Image.open(BytesIO(b)).size for b in out] == [(128, 96)] * 2
        assert np.abs(np.asarray(Image.open(BytesIO(out[0]))).astype(float) - 200).max() < 3
        assert asyncio.run(enc.encode(frames, [])) == []
        with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
            asyncio.run(enc.encode(frames.astype(np.float32), [0]))
        last = enc._shm.name
    finally:
        enc.close()
    with pytest.raises(FileNotFoundError):  # the segment is unlinked, not left in /dev/shm
        shared_memory.SharedMemory(name=last)


def test_process_jpeg_encoder_replaces_a_dead_worker():
    import os
    import signal

    from odyssey_gym.play.web.jpeg import ProcessJpegEncoder

    frames = np.full((4, 12, 16, 3), 90, np.uint8)
    enc = ProcessJpegEncoder(quality=90, workers=2)
    try:
        enc.warm_up()
        for pid in list(enc._pool._processes):  # what an out-of-memory kill does to a worker
            os.kill(pid, signal.SIGKILL)
        out = asyncio.run(enc.encode(frames, [0, 1, 2, 3]))
        assert len(out) == 4 and all(j[:2] == b"\xff\xd8" for j in out) and enc.restarts == 1
    finally:
        enc.close()


def test_a_failed_encode_drops_the_tick_and_the_game_goes_on(weights):
    game = make_game(weights)
    with TestClient(create_app(game)) as client:
        real, calls = game.encoder.encode, []

        async def flaky(frames, slots):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("encoder fell over")
            return await real(frames, slots)

        game.encoder.encode = flaky
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
            for _ in range(3):
                _, _, jpeg, _ = next_frame(ws)
            assert jpeg[:2] == b"\xff\xd8"
            assert client.get("/stats").json()["encode_errors"] == 1


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_jpeg_encoder_matches_the_frames():
    from io import BytesIO

    import torch
    from PIL import Image

    from odyssey_gym.play.web.jpeg import CudaJpegEncoder, cuda_jpeg_problem

    if cuda_jpeg_problem() is not None:
        pytest.skip(cuda_jpeg_problem())
    frames = torch.zeros(4, 12, 16, 3, dtype=torch.uint8, device="cuda")
    frames[..., 1] = torch.arange(4, device="cuda", dtype=torch.uint8)[:, None, None] * 50
    enc = CudaJpegEncoder(quality=95)
    out = asyncio.run(enc.encode(frames, [2, 0, 3]))
    enc.close()
    greens = np.array([np.asarray(Image.open(BytesIO(b)))[..., 1].mean() for b in out])
    assert np.abs(greens - [100, 0, 150]).max() < 5


def test_encode_chunks_keep_small_batches_in_one_task():
    from odyssey_gym.play.web.jpeg import encode_chunks

    assert encode_chunks(list(range(8)), workers=8) == [list(range(8))]
    assert encode_chunks([], workers=8) == [[]]
    big = encode_chunks(list(range(100)), workers=8)
    assert len(big) == 4 and sorted(i for c in big for i in c) == list(range(100))
    assert len(encode_chunks(list(range(1000)), workers=8)) == 8


def test_server_says_when_the_machine_cannot_hold_the_fps(weights, capsys):
    """8 slots on a CPU gave each player 0.9 fps without a word; now the console is told, once."""
    import time

    game = make_game(weights, max_players=2)
    game.fps = 5000.0  # no machine steps a model this fast
    with TestClient(create_app(game)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            deadline = time.monotonic() + 30
            while game.slow_warning is None and time.monotonic() < deadline:
                next_frame(ws)
            assert game.slow_warning and "below the world's 5000" in game.slow_warning
            assert client.get("/stats").json()["slow_warning"] == game.slow_warning
    assert capsys.readouterr().err.count("use fewer --max-players or a GPU") == 1


def test_server_at_its_fps_says_nothing(weights):
    game = make_game(weights, max_players=1)
    game.fps = 5.0
    with TestClient(create_app(game)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            for _ in range(14):  # about 2.8 s of ticks at 5 fps
                next_frame(ws)
    assert game.slow_warning == ""
