"""The browser play server: many players, one `WorldModelVectorEnv`, one batched step per tick.

Each connected player owns one slot (env index) of a single vector env with
`num_envs = max_players`. A fixed-rate tick at the world's fps takes every slot's held
action (free slots: noop), resets the slots whose player joined, left or asked, and steps
all of them in ONE call run in a worker thread, so the event loop keeps serving sockets.
Frames are JPEG-encoded while the next step runs (in one batched nvJPEG call where the env steps on a GPU,
else in a CPU thread pool: `jpeg.py`), and each player's sender task sends only the newest frame: a slow client
drops frames instead of growing a queue.

    odyssey-gym play --web [--host 127.0.0.1 --port 8000 --world doom-explore --max-players 8]
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from odyssey_gym.play.web.guard import ClientLimits, host_allowed, is_loopback, origin_allowed
from odyssey_gym.play.web.jpeg import ENCODERS, encodes_on_gpu, make_jpeg_encoder
from odyssey_gym.play.web.metrics import FullCollections, Timings
from odyssey_gym.play.web.protocol import CommandMessage, KeyMap, ProtocolError, pack_frame, parse_message
from odyssey_gym.play.web.recording import SessionRecorder, encode_mp4
from odyssey_gym.play.web.slots import SlotTable, TickInput
from odyssey_gym.worlds import get_world

__all__ = ["WebConfig", "GameServer", "create_app", "run_server", "start_in_thread", "serve_in_thread", "ServerThread"]

log = logging.getLogger("odyssey_gym.web")
STATIC_DIR = Path(__file__).parent / "static"
WS_MAX_BYTES = 64 * 1024  # transport ceiling; the app answers anything above 4 KiB with an error
MAX_BAD_MESSAGES = 200  # a client that keeps sending garbage is disconnected (others are unaffected)
FULL_CLOSE_CODE = 1013  # "try again later"
POLICY_CLOSE_CODE = 1008  # refused origin, too many connections from one address, too many bad messages
PACE_WINDOW_S = 2.0  # seconds of ticks with players before the pace is judged
SLOW_FRACTION = 0.9  # below this share of the world's fps the console is told the machine cannot keep up
IDLE_CLOSE_CODE = 1001  # "going away": a player who sent nothing for idle_timeout_s


@dataclass
class WebConfig:
    world: str = "doom-explore"
    host: str = "127.0.0.1"
    port: int = 8000
    max_players: int = 8
    device: str = "auto"
    weights: str | None = None  # None: the shipped weights
    sampling_steps: int | None = None
    fps: float | None = None  # None: the world's fps
    jpeg_quality: int = 85
    encode_workers: int = 0  # CPU encoder threads or processes; 0: min(8, CPUs)
    jpeg_encoder: str = "auto"  # "auto" (the GPU where the env steps on CUDA), "cpu", "process" or "cuda"
    record_seconds: float = 120.0  # how much of a session "record" can write; 0 disables it
    stats_interval_s: float = 0.5  # how often each player gets a stats message
    # what clients may do (docs/WEB.md): see odyssey_gym/play/web/guard.py
    allowed_origins: tuple[str, ...] = ()  # websocket origins besides the server's own page; "*": any
    allowed_hosts: tuple[str, ...] = ()  # Host names besides loopback ones (when bound to loopback); "*": any
    idle_timeout_s: float = 120.0  # a player who sends nothing this long gives the slot back; 0: never
    max_per_address: int = 4  # players from one remote address (loopback is not capped); 0: no cap
    messages_per_s: float = 120.0  # per player, bursts of twice that; over it, messages are dropped
    resets_per_s: float = 1.0  # per player (each reset re-runs its slot's context prefill), bursts of 3
    recordings_per_min: float = 6.0  # per player, bursts of 2
    header_timeout_s: float = 10.0  # a connection that has not sent its request headers by then is closed
    gc_freeze: bool = True  # once started, exempt every object alive then from the garbage collector's full passes

    def __post_init__(self):
        self.allowed_origins = tuple(self.allowed_origins)
        self.allowed_hosts = tuple(self.allowed_hosts)
        for name in ("idle_timeout_s", "max_per_address", "messages_per_s", "resets_per_s", "recordings_per_min",
                     "header_timeout_s", "record_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_players < 1:
            raise ValueError(f"max_players must be >= 1, got {self.max_players}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")
        if self.jpeg_encoder not in ENCODERS:
            raise ValueError(f"jpeg_encoder must be one of {', '.join(ENCODERS)}, got {self.jpeg_encoder!r}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


@dataclass(eq=False)
class Player:
    id: str
    slot: int
    recorder: SessionRecorder
    limits: ClientLimits = field(default_factory=lambda: ClientLimits.from_rates(0, 0, 0))  # 0: unlimited
    address: str = ""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    control: deque = field(default_factory=lambda: deque(maxlen=64))  # JSON text to send, oldest dropped
    latest: tuple[bytes, float] | None = None  # (frame message, tick start time): only the newest is kept
    closed: bool = False
    sent: int = 0
    dropped: int = 0
    bad_messages: int = 0
    encoding: bool = False

    def offer(self, data: bytes, t_tick: float) -> None:
        if self.latest is not None:
            self.dropped += 1
        self.latest = (data, t_tick)
        self.wake.set()

    def say(self, **msg) -> None:
        self.control.append(json.dumps(msg))
        self.wake.set()


class GameServer:
    """Owns the env, the slot table and the tick loop; the Starlette app is a thin shell around it.

    `env` may be given (tests); otherwise it is built in `start()` from the config.
    """

    def __init__(self, config: WebConfig, env=None):
        self.config = config
        self.world = get_world(config.world)
        self.fps = float(config.fps or self.world.fps)
        self.keymap = KeyMap(self.world)
        self.slots = SlotTable(config.max_players, self.keymap.noop)
        self.players: dict[str, Player] = {}
        self.recordings: dict[str, bytes] = {}
        self.timings = Timings()
        self.env = env
        self.tick = 0
        self.late_ticks = 0
        self.step_errors = 0
        self.encode_errors = 0
        self.slow_warning: str | None = None  # None: not judged yet; "": fast enough; else what was printed
        self._pace_start: tuple[float, int] | None = None  # (time, tick) the pace is measured from
        self._tick_times: deque[float] = deque(maxlen=max(8, int(2 * self.fps)))
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self.encoder = None  # made in start(), once the env says where its frames live
        self._full_collections: FullCollections | None = None
        self._froze = False
        self._step_pool = ThreadPoolExecutor(1, thread_name_prefix="odyssey-step")
        self._record_pool = ThreadPoolExecutor(1, thread_name_prefix="odyssey-mp4")

    # ------------------------------------------------------------------ lifecycle
    def _make_env(self):
        """On a GPU the step runs as a CUDA graph with the frame decoder compiled: a server runs for hours, so
        the seconds of compiling buy 1.2x faster batched steps (BENCHMARKS.md). Its frames stay on the GPU (the
        torch backend) when they are encoded there."""
        from odyssey_gym.envs.vector_env import WorldModelVectorEnv, resolve_device

        cuda = resolve_device(self.config.device).type == "cuda"
        gpu_jpeg = encodes_on_gpu(self.config.jpeg_encoder, cuda=cuda)
        return WorldModelVectorEnv(self.world, num_envs=self.config.max_players, device=self.config.device,
                                   weights=self.config.weights, sampling_steps=self.config.sampling_steps,
                                   compile="decoder" if cuda else None, backend="torch" if gpu_jpeg else "numpy")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.env is None:
            self.env = await loop.run_in_executor(self._step_pool, self._make_env)
        if self.env.num_envs != self.config.max_players:
            raise ValueError(f"env has {self.env.num_envs} envs but max_players is {self.config.max_players}")
        self.encoder = make_jpeg_encoder(self.config.jpeg_encoder, device=getattr(self.env, "device", "cpu"),
                                         backend=getattr(self.env, "backend", "numpy"),
                                         quality=self.config.jpeg_quality,
                                         workers=self.config.encode_workers or min(8, os.cpu_count() or 1))
        if hasattr(self.encoder, "warm_up"):  # worker processes start now, not on the first player's tick
            await loop.run_in_executor(None, self.encoder.warm_up)
        await loop.run_in_executor(self._step_pool, self.env.reset)
        self.slots.reset_pending[:] = False  # the full reset just gave every slot a fresh start
        self._full_collections = FullCollections(self.timings)
        if self.config.gc_freeze:  # the model, the env and the libraries live as long as the server: stop rescanning them
            gc.collect()
            gc.freeze()
            self._froze = True
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._tick_loop(), name="odyssey-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for pool in (self._record_pool, self._step_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        if self.encoder is not None:
            self.encoder.close()
        if self._full_collections is not None:
            self._full_collections.close()
        if self._froze:  # hand the objects back to the collector (the server may have run inside a longer process)
            gc.unfreeze()
            self._froze = False

    # ------------------------------------------------------------------ the tick
    def _step(self, inp: TickInput) -> np.ndarray:
        """Worker thread: reset the slots that need it, then ONE batched step for every slot."""
        t = time.perf_counter()
        if inp.reset_mask.any():
            self.env.reset(options={"reset_mask": inp.reset_mask})
        obs = self.env.step(inp.actions)[0]
        if not isinstance(obs, np.ndarray):  # a device tensor the next step overwrites while this one is encoded
            obs = obs.clone()
        self.timings.add("step", time.perf_counter() - t)
        return obs

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        deliver: asyncio.Task | None = None
        next_t = time.perf_counter()
        while True:
            if self.slots.count == 0:  # nobody to serve: sleep instead of stepping
                self._wake.clear()
                await self._wake.wait()
                next_t = time.perf_counter()
                self._tick_times.clear()
                self._pace_start = None  # the pace is judged over ticks that serve players only
            t0 = time.perf_counter()
            self._tick_times.append(t0)
            inp = self.slots.take(t0)
            self.timings.extend("queue", inp.queue_wait_s)
            try:
                frames = await loop.run_in_executor(self._step_pool, self._step, inp)
            except Exception:  # noqa: BLE001 (a failed step must not end everyone's game: start them over)
                self.step_errors += 1
                log.exception("env step failed; resetting every slot")
                await loop.run_in_executor(self._step_pool, self.env.reset)
                frames = None
            if deliver is not None:
                await deliver  # at most one encode in flight: it overlaps the next step, never piles up
            if frames is not None:
                deliver = asyncio.create_task(self._deliver(self.tick, inp, frames, t0))
            self.tick += 1
            self._check_pace()
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.late_ticks += 1
                if delay < -period:  # more than a tick behind: drop the debt rather than burst
                    next_t = time.perf_counter()
                await asyncio.sleep(0)

    def _check_pace(self) -> None:
        """Say once, on the console, when this machine cannot step every slot at the world's fps (a CPU with 8
        slots gave each player 0.9 fps, silently): the fix is fewer --max-players or a GPU."""
        if self.slow_warning is not None:
            return
        now = time.perf_counter()
        if self._pace_start is None:
            self._pace_start = (now, self.tick)
            return
        t0, tick0 = self._pace_start
        if now - t0 < PACE_WINDOW_S:
            return
        fps = (self.tick - tick0) / (now - t0)
        if fps < SLOW_FRACTION * self.fps:
            self.slow_warning = (f"this machine ({getattr(self.env, 'device', '?')}) steps {self.config.max_players} "
                                 f"slots at {fps:.1f} fps, below the world's {self.fps:g}: every slot is stepped each "
                                 f"tick, so use fewer --max-players or a GPU")
            log.warning(self.slow_warning)
            print(f"odyssey-gym play --web: {self.slow_warning}", file=sys.stderr, flush=True)
        else:
            self.slow_warning = ""

    async def _deliver(self, tick: int, inp: TickInput, frames: np.ndarray, t0: float) -> None:
        """Encode the frames of connected players (thread pool) and hand each its newest frame."""
        active = [i for i, p in enumerate(inp.owners) if p is not None and not p.closed]
        if not active:
            return
        t = time.perf_counter()
        try:
            jpegs = await self.encoder.encode(frames, active)
        except Exception:  # noqa: BLE001 (a failed encode costs this tick's frames, not the game loop)
            self.encode_errors += 1
            log.exception("JPEG encoding failed; this tick's frames are dropped")
            return
        self.timings.add("encode", time.perf_counter() - t)
        for i, jpeg in zip(active, jpegs):
            p = inp.owners[i]
            if p.closed:
                continue
            p.recorder.add(jpeg)
            p.offer(pack_frame(tick, int(inp.seq[i]), jpeg), t0)

    # ------------------------------------------------------------------ per player
    def _hello(self, p: Player) -> dict:
        w = self.world
        return {"type": "hello", "player": p.id, "slot": p.slot, "world": w.name, "fps": self.fps,
                "frame_size": list(w.frame_size), "buttons": list(w.buttons), "keys": dict(w.keys),
                "max_players": self.config.max_players, "record_seconds": self.config.record_seconds}

    def _stats_message(self, p: Player) -> dict:
        tim = self.timings.summary()
        return {"type": "stats", "players": self.slots.count, "max_players": self.config.max_players,
                "server_fps": round(self.server_fps(), 2), "dropped": p.dropped,
                "timings": {k: {"p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"]} for k, v in tim.items()}}

    async def _sender(self, ws, p: Player) -> None:
        """The only task that writes to this socket: control messages first, then the newest frame."""
        last_stats = 0.0
        while not p.closed:
            await p.wake.wait()
            p.wake.clear()
            while p.control:
                await ws.send_text(p.control.popleft())
            if p.latest is not None:
                (data, t0), p.latest = p.latest, None
                t = time.perf_counter()
                await ws.send_bytes(data)
                now = time.perf_counter()
                self.timings.add("send", now - t)
                self.timings.add("tick_to_sent", now - t0)
                p.sent += 1
                if now - last_stats >= self.config.stats_interval_s:
                    last_stats = now
                    await ws.send_text(json.dumps(self._stats_message(p)))

    async def handle(self, ws) -> None:
        """One websocket session: join a slot (or be told the server is full), then read key messages."""
        await ws.accept()
        cfg = self.config
        address = ws.client.host if ws.client else ""
        p = Player(id=secrets.token_urlsafe(12), slot=-1,
                   recorder=SessionRecorder(int(cfg.record_seconds * self.fps)),
                   limits=ClientLimits.from_rates(cfg.messages_per_s, cfg.resets_per_s, cfg.recordings_per_min),
                   address=address)
        same = sum(1 for q in self.players.values() if q.address == address)
        if cfg.max_per_address and not is_loopback(address) and same >= cfg.max_per_address:
            try:
                await ws.send_text(json.dumps({"type": "error", "message": f"at most {cfg.max_per_address} players "
                                               f"per address; {same} are playing from yours"}))
                await ws.close(code=POLICY_CLOSE_CODE)
            except Exception:  # noqa: BLE001 (it left already)
                pass
            return
        slot = self.slots.acquire(p)
        if slot is None:
            n = self.config.max_players
            try:
                await ws.send_text(json.dumps({"type": "full", "max_players": n,
                                               "message": f"server full: all {n} player slots are taken; try again later"}))
                await ws.close(code=FULL_CLOSE_CODE)
            except Exception:  # noqa: BLE001 (it left already)
                pass
            return
        p.slot = slot
        self.players[p.id] = p
        p.say(**self._hello(p))
        sender = asyncio.create_task(self._sender(ws, p))
        self._wake.set()
        try:
            idle = cfg.idle_timeout_s or None
            while not sender.done():
                try:
                    msg = await asyncio.wait_for(ws.receive(), idle)
                except asyncio.TimeoutError:
                    p.say(type="error", message=f"no message for {cfg.idle_timeout_s:g} s: closing to free the slot")
                    await asyncio.sleep(0.05)
                    await ws.close(code=IDLE_CLOSE_CODE)
                    break
                if msg["type"] == "websocket.disconnect":
                    break
                self._on_message(p, msg.get("text") if msg.get("text") is not None else msg.get("bytes"))
                if p.bad_messages > MAX_BAD_MESSAGES:
                    p.say(type="error", message=f"more than {MAX_BAD_MESSAGES} bad messages: closing")
                    await asyncio.sleep(0.05)
                    await ws.close(code=POLICY_CLOSE_CODE)
                    break
        except Exception as e:  # noqa: BLE001 (a broken socket ends this player only)
            log.debug("player %s: %s", p.id, e)
        finally:
            p.closed = True
            p.wake.set()
            self.slots.release(p.slot, p)
            self.players.pop(p.id, None)
            self.recordings.pop(p.id, None)
            sender.cancel()
            try:
                await sender
            except BaseException:  # noqa: BLE001 (cancelled, or the socket it wrote to is gone)
                pass

    def _on_message(self, p: Player, raw) -> None:
        if not p.limits.messages.allow():  # a flood is dropped here, before parsing; told once per 64
            p.limits.refused += 1
            if p.limits.refused % 64 == 1:
                p.say(type="error", message=f"more than {self.config.messages_per_s:g} messages per second: "
                                            f"dropping ({p.limits.refused} so far)")
            return
        try:
            m = parse_message(raw)
            if isinstance(m, CommandMessage):
                if m.type == "reset":
                    if not p.limits.resets.allow():
                        raise ProtocolError(f"too many resets: at most {self.config.resets_per_s:g} per second")
                    self.slots.request_reset(p.slot)
                else:
                    if not p.limits.recordings.allow():
                        raise ProtocolError(f"too many recordings: at most {self.config.recordings_per_min:g} "
                                            f"per minute")
                    self._start_recording(p)
                return
            self.slots.set_action(p.slot, self.keymap.action(m.keys), m.seq, time.perf_counter())
        except ProtocolError as e:
            p.bad_messages += 1
            p.say(type="error", message=str(e))

    def _start_recording(self, p: Player) -> None:
        if p.encoding:
            raise ProtocolError("a recording is already being encoded")
        if not self.config.record_seconds:
            raise ProtocolError("recording is disabled on this server (record_seconds=0)")
        jpegs = p.recorder.snapshot()
        if not jpegs:
            raise ProtocolError("nothing to record yet")
        p.encoding = True

        async def job():
            try:
                mp4 = await asyncio.get_running_loop().run_in_executor(self._record_pool, encode_mp4, jpegs, self.fps)
                if not p.closed:
                    self.recordings[p.id] = mp4
                    p.say(type="record_ready", url=f"/record/{p.id}.mp4", frames=len(jpegs), bytes=len(mp4))
            except Exception as e:  # noqa: BLE001 (tell the player; the game goes on)
                log.exception("recording failed")
                p.say(type="error", message=f"recording failed: {e}")
            finally:
                p.encoding = False

        asyncio.create_task(job())

    # ------------------------------------------------------------------ introspection
    def server_fps(self) -> float:
        t = self._tick_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def stats(self) -> dict:
        """What /stats serves: load, timings, and each occupied slot's held action (tests read it)."""
        slots = []
        for i, p in enumerate(self.slots.owners):
            if p is not None:
                slots.append({"slot": i, "action": np.asarray(self.slots.actions[i]).tolist(),
                              "seq": int(self.slots.seq[i]), "sent": p.sent, "dropped": p.dropped})
        return {"world": self.world.name, "fps": self.fps, "server_fps": round(self.server_fps(), 2),
                "tick": self.tick, "late_ticks": self.late_ticks, "step_errors": self.step_errors,
                "encode_errors": self.encode_errors,
                "slow_warning": self.slow_warning,
                "players": self.slots.count, "max_players": self.config.max_players,
                "device": str(getattr(self.env, "device", "")),
                "jpeg_encoder": getattr(self.encoder, "name", None), "timings": self.timings.summary(), "slots": slots}


# ---------------------------------------------------------------------------------------- the app


def create_app(game: GameServer, on_ready=None):
    """The Starlette app: / (page), /static, /ws (play), /stats (JSON), /record/<player>.mp4.
    `on_ready()` runs once the model is loaded and every slot reset, i.e. when players can join."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    async def index(request):
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def stats(request):
        return JSONResponse(game.stats())

    async def record(request):
        mp4 = game.recordings.get(request.path_params["player"])
        if mp4 is None:
            return Response("no recording for this player (ask for one over the websocket first)", status_code=404)
        return Response(mp4, media_type="video/mp4",
                        headers={"Content-Disposition": 'attachment; filename="odyssey-session.mp4"'})

    @asynccontextmanager
    async def lifespan(app):
        await game.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await game.stop()

    routes = [Route("/", index), Route("/stats", stats), Route("/record/{player}.mp4", record),
              WebSocketRoute("/ws", game.handle), Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    return _Guarded(Starlette(routes=routes, lifespan=lifespan), game.config)


class _Guarded:
    """ASGI middleware: every request must name an allowed Host, and a websocket handshake must come from an
    allowed Origin (guard.py says which); refused ones get HTTP 400 / a 403 handshake denial."""

    def __init__(self, app, config: WebConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        cfg = self.config
        problem = None
        if not host_allowed(host, cfg.host, cfg.allowed_hosts):
            problem = f"host {host!r} is not served here (allowed_hosts)"
        elif scope["type"] == "websocket" and not origin_allowed(headers.get("origin"), host, cfg.allowed_origins):
            problem = f"origin {headers.get('origin')!r} may not open a game here (allowed_origins)"
        if problem is None:
            return await self.app(scope, receive, send)
        log.warning("refused %s %s: %s", scope["type"], scope.get("path"), problem)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            return await send({"type": "websocket.close", "code": POLICY_CLOSE_CODE})
        body = problem.encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol, closing a connection that has not sent complete request headers in `seconds`
    (uvicorn's own keep-alive timeout starts only after a first response, so a slow-headers client would hold a
    socket open for as long as it likes)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            if seconds > 0:
                self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _headers_too_slow(self):
            # no request began (cycle None) and the transport still speaks HTTP (not upgraded to a websocket)
            if self.cycle is None and not self.transport.is_closing() and self.transport.get_protocol() is self:
                self.transport.close()

        def connection_lost(self, exc):
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11


def _uvicorn_server(game: GameServer, host: str, port: int, on_ready=None):
    import uvicorn

    cfg = uvicorn.Config(create_app(game, on_ready), host=host, port=port, log_level="warning", lifespan="on",
                         ws_max_size=WS_MAX_BYTES, ws_per_message_deflate=False,
                         http=_header_timeout_protocol(game.config.header_timeout_s))
    return uvicorn.Server(cfg)


def run_server(config: WebConfig) -> None:
    """Serve until interrupted (the `odyssey-gym play --web` command)."""
    game = GameServer(config)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{shown}:{config.port}/"

    def ready() -> None:
        print(f"odyssey-gym play --web: ready: players can join at {url}", flush=True)

    server = _uvicorn_server(game, config.host, config.port, on_ready=ready)
    print(f"odyssey-gym play --web: {game.world.name} for up to {config.max_players} players at {url} "
          f"(loading the model first...)", flush=True)
    server.run()


class ServerThread:
    """A server on a background thread (tests, the benchmark): `.url`, `.game`, `.stop()`."""

    def __init__(self, game: GameServer, host: str, sock: socket.socket):
        self.game = game
        self.host = host
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._sock = sock
        self._server = _uvicorn_server(game, host, self.port)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="odyssey-web", daemon=True)

    def start(self, timeout: float = 120.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the web server did not start (see the log above)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def start_in_thread(config: WebConfig, env=None) -> ServerThread:
    """Start a server for `config` (port 0: a free port) in a daemon thread; returns once it serves."""
    return serve_in_thread(GameServer(config, env=env), config.host, config.port)


def serve_in_thread(game: GameServer, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets, and without it Nagle's
    # algorithm holds each frame back until the client's next packet (measured: +15-25 ms per frame)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return ServerThread(game, host, sock).start()
