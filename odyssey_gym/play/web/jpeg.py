"""JPEG encoding of one tick's frames for the browser players.

Three encoders with one interface, `await encoder.encode(frames, slots) -> [bytes per slot]`:

- `CpuJpegEncoder`: PIL in a thread pool, the frames on the host (numpy, or a CPU tensor).
- `ProcessJpegEncoder`: PIL in worker processes reading the frames from shared memory. A thread pool shares one
  interpreter, so its time grew faster than the frames (8 threads: 3.05 ms for 16 frames, 30.8 ms for 128 on an
  H100 box's CPUs, against ~0.08 ms a frame on one core); processes do not share a lock.
- `CudaJpegEncoder`: every slot's frame in ONE `torchvision.io.encode_jpeg` call (nvJPEG) where the frames already
  live on the GPU (the env's torch backend), then one device-to-host copy of all the JPEG bytes: the frames never
  cross to the host as pixels. Its cost also grows with the player count (7.3 ms at 16 players, 21.5 ms at 64 on an
  H100, BENCHMARKS.md); `benchmarks/bench_jpeg.py` times the three encoders on the same frames in one run.

`make_jpeg_encoder("auto" | "cpu" | "process" | "cuda", ...)` picks one: "auto" takes the GPU where the env steps
on CUDA with the torch backend and torchvision can encode there, else the CPU threads.
"""

from __future__ import annotations

import asyncio
import functools
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory

import numpy as np

ENCODERS = ("auto", "cpu", "process", "cuda")
MIN_FRAMES_PER_ENCODE_TASK = 32
MIN_FRAMES_PER_PROCESS_TASK = 8  # a task costs a pickle round trip (~0.1 ms), about one frame's encode


def encode_chunks(active: list[int], workers: int, min_per_task: int = MIN_FRAMES_PER_ENCODE_TASK) -> list[list[int]]:
    """Split the slots to encode over at most `workers` tasks of at least `min_per_task` frames each.

    A 120x160 JPEG takes ~0.07 ms, less than handing a task to a thread: one frame per thread made 32 frames
    cost 3.5 ms against 2.5 ms in one task (2-core CPU, p50 of 30), so threads only pay off past ~32.
    """
    n = max(1, min(workers, -(-len(active) // max(1, min_per_task))))
    return [active[k::n] for k in range(n)]


def in_order(chunks: list[list[int]], parts: list[list[bytes]], order) -> list[bytes]:
    """The JPEGs of `encode_chunks`' interleaved tasks, put back in `order`."""
    by_index = {i: j for c, jpegs in zip(chunks, parts) for i, j in zip(c, jpegs)}
    return [by_index[i] for i in order]


def pil_jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _encode_chunk(frames: np.ndarray, idx: list[int], quality: int) -> list[bytes]:
    return [pil_jpeg(frames[i], quality) for i in idx]


def _host_frames(frames) -> np.ndarray:
    """(N, H, W, 3) uint8 on the host: numpy as is, a tensor copied once (a CPU tensor without a copy)."""
    if isinstance(frames, np.ndarray):
        return frames
    return frames.detach().cpu().numpy()


class CpuJpegEncoder:
    """PIL over a thread pool, frames split into tasks of at least `MIN_FRAMES_PER_ENCODE_TASK`."""

    name = "cpu"

    def __init__(self, quality: int, workers: int):
        self.quality = int(quality)
        self.workers = max(1, int(workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="odyssey-jpeg")

    async def encode(self, frames, slots: list[int]) -> list[bytes]:
        if not slots:
            return []
        loop = asyncio.get_running_loop()
        host = _host_frames(frames)
        chunks = encode_chunks(slots, self.workers)
        parts = await asyncio.gather(*(loop.run_in_executor(self._pool, _encode_chunk, host, c, self.quality)
                                       for c in chunks))
        return in_order(chunks, parts, slots)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_attached: shared_memory.SharedMemory | None = None  # a worker process's view of the encoder's frame buffer


def _encode_shared(name: str, shape: tuple, idx: list[int], quality: int) -> list[bytes]:
    """In a worker process: encode rows `idx` of the (N, H, W, 3) uint8 frames in shared memory `name`."""
    global _attached
    if _attached is None or _attached.name != name:  # first call, or the encoder grew its buffer (a new segment)
        if _attached is not None:
            _attached.close()  # the parent has unlinked the old one
        _attached = shared_memory.SharedMemory(name=name)
    frames = np.ndarray(shape, dtype=np.uint8, buffer=_attached.buf)
    return [pil_jpeg(frames[i], quality) for i in idx]


def _worker_ready() -> bool:
    return True


class ProcessJpegEncoder:
    """PIL over a pool of worker processes. Each tick, the slots' frames are copied once into a shared-memory buffer
    (straight from the device where the env steps on CUDA), and each worker encodes a share of its rows.

    One encode is in flight at a time (a lock), since the next one overwrites the buffer; the server awaits each
    tick's encode before it starts the next. Workers are spawned, not forked: the parent may hold a CUDA context.
    """

    name = "process"

    def __init__(self, quality: int, workers: int):
        self.quality = int(quality)
        self.workers = max(1, int(workers))
        self._pool = self._new_pool()
        self._shm: shared_memory.SharedMemory | None = None
        self._lock = asyncio.Lock()
        self.restarts = 0  # pools replaced after a worker died

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def warm_up(self) -> None:
        """Start every worker now (each imports numpy and PIL), so the first tick does not pay for it."""
        for f in [self._pool.submit(_worker_ready) for _ in range(self.workers)]:
            f.result()

    def _buffer(self, shape: tuple) -> np.ndarray:
        """The shared (N, H, W, 3) buffer, grown (a new segment) when a tick brings more or larger frames."""
        nbytes = int(np.prod(shape))
        if self._shm is None or self._shm.size < nbytes:
            self._release()
            self._shm = shared_memory.SharedMemory(create=True, size=max(1, nbytes))
        return np.ndarray(shape, dtype=np.uint8, buffer=self._shm.buf)

    def _stage(self, frames, slots: list[int]) -> np.ndarray:
        """Copy the slots' frames into the shared buffer: a numpy gather, or one device gather and one copy out."""
        shape = (len(slots), *tuple(frames.shape[1:]))
        buf = self._buffer(shape)
        if isinstance(frames, np.ndarray):
            np.take(frames, slots, axis=0, out=buf)
        else:
            import torch

            torch.from_numpy(buf).copy_(frames[torch.as_tensor(slots, device=frames.device)])
        return buf

    async def encode(self, frames, slots: list[int]) -> list[bytes]:
        if not slots:
            return []
        if frames.ndim != 4 or frames.shape[-1] != 3 or str(frames.dtype) not in ("uint8", "torch.uint8"):
            raise ValueError(f"ProcessJpegEncoder: frames must be (N, H, W, 3) uint8, got {tuple(frames.shape)} "
                             f"{frames.dtype}")
        async with self._lock:
            buf = self._stage(frames, slots)
            chunks = encode_chunks(list(range(len(slots))), self.workers, MIN_FRAMES_PER_PROCESS_TASK)
            try:
                parts = await self._run(buf.shape, chunks)
            except BrokenProcessPool:  # a worker died (killed, out of memory): start a new pool, try once more
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                self.restarts += 1
                parts = await self._run(buf.shape, chunks)
        return in_order(chunks, parts, range(len(slots)))

    async def _run(self, shape: tuple, chunks: list[list[int]]) -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(self._pool, _encode_shared, self._shm.name, shape, c,
                                                           self.quality) for c in chunks))

    def _release(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._release()


def _cuda_encode(frames, slots: list[int], quality: int) -> list[bytes]:
    """One batched nvJPEG call over the slots' frames (device tensors, HWC), then one copy of all the bytes."""
    import torch
    from torchvision.io import encode_jpeg

    out = encode_jpeg([frames[i].permute(2, 0, 1).contiguous() for i in slots], quality=quality)
    sizes = [int(t.numel()) for t in out]  # shape metadata: no sync
    blob = torch.cat([t.reshape(-1) for t in out]).cpu().numpy().tobytes()  # the one device-to-host copy
    offsets = np.cumsum([0, *sizes])
    return [blob[offsets[k]:offsets[k + 1]] for k in range(len(slots))]


class CudaJpegEncoder:
    """torchvision's nvJPEG encoder, one call per tick, in its own thread so the next step overlaps it."""

    name = "cuda"

    def __init__(self, quality: int):
        self.quality = int(quality)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="odyssey-nvjpeg")

    async def encode(self, frames, slots: list[int]) -> list[bytes]:
        if not slots:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _cuda_encode, frames, slots, self.quality)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@functools.cache
def cuda_jpeg_problem() -> str | None:
    """Why JPEGs cannot be encoded on the GPU here (None: they can): tried once on a tiny frame."""
    try:
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available"
        from torchvision.io import encode_jpeg

        encode_jpeg([torch.zeros(3, 8, 8, dtype=torch.uint8, device="cuda")], quality=80)
    except Exception as e:  # noqa: BLE001 (no torchvision, a build without nvJPEG, ...: say which)
        return f"{type(e).__name__}: {e}"
    return None


def encodes_on_gpu(kind: str, *, cuda: bool) -> bool:
    """Whether encoder `kind` encodes on the GPU for an env stepping on one (`cuda`): the env then keeps its frames
    there (torch backend). The one place "auto" is decided, for the env's backend and for the encoder alike."""
    return cuda and (kind == "cuda" or (kind == "auto" and cuda_jpeg_problem() is None))


def make_jpeg_encoder(kind: str, *, device, backend: str, quality: int, workers: int):
    """The encoder for an env stepping on `device` with `backend` ("numpy" | "torch"). "cuda" needs both the
    frames on a CUDA device (torch backend) and a torchvision that encodes there; the error says what is missing."""
    if kind not in ENCODERS:
        raise ValueError(f"jpeg encoder must be one of {', '.join(ENCODERS)}, got {kind!r}")
    on_gpu = getattr(device, "type", str(device)) == "cuda" and backend == "torch"
    if kind == "cuda":
        if not on_gpu:
            raise ValueError(f"jpeg encoder 'cuda' needs the env's frames on a CUDA device with the torch backend "
                             f"(this env: device {device}, backend {backend})")
        problem = cuda_jpeg_problem()
        if problem is not None:
            raise ValueError(f"jpeg encoder 'cuda' is not available here: {problem}")
        return CudaJpegEncoder(quality)
    if kind == "process":
        return ProcessJpegEncoder(quality, workers)
    if on_gpu and encodes_on_gpu(kind, cuda=True):
        return CudaJpegEncoder(quality)
    return CpuJpegEncoder(quality, workers)
