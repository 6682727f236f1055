"""What every distributed backend measures, and the point-to-point links of the stage backend.

- `Meter`: time a worker is blocked on communication and the bytes it moves (every backend).
- `Memory`: peak RSS of the worker process (CPU), NVML's per-process reading and torch.cuda's peaks (GPU).
- `Link`: point-to-point messages between neighbouring workers, timed and counted.
- `Stopwatch`: compute time of the regions a backend times (forward, backward), without a host sync per step.

One `Link` is one direction of traffic with one peer (activations i -> i+1, or feedback i+1 -> i),
on its own process group: messages on a link arrive in the order they were sent (gloo matches
by peer and tag in order; NCCL orders p2p per communicator), and the two directions of a pair
never share a group, so a receive posted ahead in one direction cannot block the other (with NCCL
a shared communicator would serialise them on one stream and deadlock the chain of workers).

Shapes and dtypes: an activation link knows its shape from the split and its dtype from the run's
precision (`Run.wire_dtype`: float32, or autocast's bf16 / fp16); the sender casts to it, so both ends
agree whatever dtype a group's last op computed in. A feedback link learns both from a small header
(ndim, a dtype code, then the sizes) that the sender puts before its first message only: an `lct` loss
vector is (B,) float32, a `dni`/`bp` gradient is shaped (and typed) like the activation, and the
receiver need not know which method it runs. Messages are sent contiguous (a channels_last activation
goes as a plain contiguous tensor of the same shape).

Where messages travel: on the worker's device (NCCL between GPUs, gloo on CPU), or staged through host
memory (`wire` cpu: workers sharing a GPU, whose process group is gloo; see settings.DistConfig.share_gpu).

Every blocking wait goes through `Meter.wait`, which times it (the worker's communication wait),
applies the timeout, and turns a lost peer into a one-line `PeerError`.
"""
from __future__ import annotations

import os
import re
import resource
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

_HEADER = 8  # int64 slots: ndim, dtype code, up to 6 sizes
WIRE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)  # a header's dtype code: the index


class PeerError(RuntimeError):
    """A peer died, hung past the timeout, or sent something unexpected; the message is one line."""


def one_line(e: BaseException) -> str:
    """An error on one line, without gloo's source location and advice."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../gloo/transport/tcp/pair.cc:553] "
    text = text.split(". This is typically")[0]
    return text if len(text) <= 300 else text[:297] + "..."


def peer_call(rank: int, what: str, fn, *args, **kwargs):
    """fn: posting a message or a collective. Gloo raises at once where an earlier message to a peer failed
    (a send that timed out in the background), or when a collective times out: one line naming this rank and
    what it was doing."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        raise PeerError(f"rank {rank}: {what}: {one_line(e)}") from None


@dataclass
class Meter:
    """What one worker spent on communication: blocked time and bytes, per direction."""

    timeout_s: float
    rank: int
    nccl: bool = False
    wait_s: float = 0.0
    bytes_sent: int = 0
    bytes_recv: int = 0
    _sends: deque = field(default_factory=deque)  # (work, tensor): keep tensors alive until sent

    def reset(self) -> None:
        self.wait_s, self.bytes_sent, self.bytes_recv = 0.0, 0, 0

    def wait(self, work: dist.Work, what: str) -> None:
        """Block until `work` is done; the time counts as communication wait."""
        t0 = time.perf_counter()
        try:
            if self.nccl:
                # NCCL's wait() only orders streams; poll so that the host really waits (and can time out)
                while not work.is_completed():
                    if time.perf_counter() - t0 > self.timeout_s:
                        raise PeerError(f"timed out after {self.timeout_s:.0f} s")
                    time.sleep(0)
                work.wait()
            elif not work.wait(timeout=timedelta(seconds=self.timeout_s)):
                raise PeerError(f"timed out after {self.timeout_s:.0f} s")
        except PeerError as e:
            raise PeerError(f"rank {self.rank}: {what}: {e}") from None
        except RuntimeError as e:
            raise PeerError(f"rank {self.rank}: {what}: {one_line(e)}") from None
        finally:
            self.wait_s += time.perf_counter() - t0

    def isend(self, t: torch.Tensor, peer: int, group, what: str) -> None:
        t = t.contiguous()
        self._sends.append((peer_call(self.rank, what, dist.isend, t, dst=peer, group=group), t, what))
        self.bytes_sent += t.numel() * t.element_size()
        self.reap()

    def reap(self) -> None:
        """Drop finished sends (without blocking)."""
        while self._sends and self._sends[0][0].is_completed():
            work, _, what = self._sends.popleft()
            self.wait(work, what)  # completed: returns at once, but raises if the send failed

    def flush(self) -> None:
        """Wait for every send still in flight (end of a phase)."""
        while self._sends:
            work, _, what = self._sends.popleft()
            self.wait(work, what)


@dataclass
class _Posted:
    step: int
    buf: torch.Tensor
    work: dist.Work


class Link:
    """One direction of traffic with one peer: receives are posted ahead and consumed in step order.

    `shape` and `dtype` None: learned from the header before the first message (a feedback link). `wire`:
    where the buffers live while in transit (None: on `device`; cpu: staged through host memory)."""

    def __init__(self, meter: Meter, peer: int, group, name: str, device: torch.device,
                 shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
                 wire: torch.device | None = None):
        if (shape is None) != (dtype is None):
            raise ValueError(f"the {name} link must know both its shape and dtype, or learn both")
        self.meter, self.peer, self.group, self.name = meter, peer, group, name
        self.device, self.shape, self.dtype = device, shape, dtype
        self.wire = device if wire is None else wire
        self.posted: deque[_Posted] = deque()
        self.last_posted = -1  # receives are posted once per step, in step order

    # --- sending side ----------------------------------------------------------------------------
    def send(self, t: torch.Tensor, step: int) -> None:
        t = t.detach()
        if self.shape is None:  # first message on a learned link: its shape and dtype are the link's
            self._send_header(t)
        if tuple(t.shape) != self.shape:
            raise PeerError(f"rank {self.meter.rank}: {self.name} of step {step} has shape {tuple(t.shape)}, "
                            f"the link to rank {self.peer} carries {self.shape}")
        t = t.to(self.dtype).contiguous()  # no-ops where it already is (a channels_last one is copied)
        if t.device != self.wire:
            t = t.to(self.wire)  # blocking: the host copy is complete before gloo reads it
        self.meter.isend(t, self.peer, self.group, f"sending {self.name} of step {step} to rank {self.peer}")

    def _send_header(self, t: torch.Tensor) -> None:
        if t.dtype not in WIRE_DTYPES or t.dim() > _HEADER - 2:
            raise PeerError(f"rank {self.meter.rank}: {self.name} is {t.dtype} with {t.dim()} dimensions; a link "
                            f"carries {', '.join(map(str, WIRE_DTYPES))} with up to {_HEADER - 2}")
        self.shape, self.dtype = tuple(t.shape), t.dtype
        header = torch.zeros(_HEADER, dtype=torch.int64)
        header[0], header[1] = t.dim(), WIRE_DTYPES.index(t.dtype)
        header[2:2 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
        self.meter.isend(header.to(self.wire), self.peer, self.group,
                         f"sending {self.name} header to rank {self.peer}")

    # --- receiving side --------------------------------------------------------------------------
    def _learn_shape(self) -> None:
        header = torch.zeros(_HEADER, dtype=torch.int64, device=self.wire)
        work = peer_call(self.meter.rank, f"waiting for the {self.name} header from rank {self.peer}", dist.irecv,
                         header, src=self.peer, group=self.group)
        self.meter.wait(work, f"waiting for the {self.name} header from rank {self.peer}")
        self.meter.bytes_recv += header.numel() * header.element_size()
        header = header.tolist()
        ndim, code = header[0], header[1]
        if not (0 <= ndim <= _HEADER - 2 and 0 <= code < len(WIRE_DTYPES)):
            raise PeerError(f"rank {self.meter.rank}: {self.name} header from rank {self.peer} is not one: {header}")
        self.shape, self.dtype = tuple(header[2:2 + ndim]), WIRE_DTYPES[code]

    def post(self, step: int) -> None:
        """Post the receive for `step` now, so the data can arrive while this worker computes."""
        if self.shape is None or step <= self.last_posted:
            return  # the first receive learns the shape first (`get` posts it); never post twice
        self.last_posted = step
        staged = self.wire != self.device and self.device.type == "cuda"  # pinned: the copy up can be async
        buf = torch.empty(self.shape, dtype=self.dtype, device=self.wire, pin_memory=staged)
        work = peer_call(self.meter.rank, f"receiving {self.name} of step {step} from rank {self.peer}", dist.irecv,
                         buf, src=self.peer, group=self.group)
        self.posted.append(_Posted(step, buf, work))

    def ready(self) -> bool:
        return bool(self.posted) and self.posted[0].work.is_completed()

    def get(self, step: int) -> torch.Tensor:
        """The message of `step` (blocking), on this worker's device; receives are consumed in the order they
        were posted."""
        if not self.posted:
            if self.shape is None:
                self._learn_shape()
            self.post(step)
        p = self.posted.popleft()
        if p.step != step:
            raise PeerError(f"rank {self.meter.rank}: {self.name}: expected step {p.step}, asked for {step}")
        self.meter.wait(p.work, f"waiting for {self.name} of step {step} from rank {self.peer}")
        self.meter.bytes_recv += p.buf.numel() * p.buf.element_size()
        if p.buf.device != self.device:  # staged through host memory
            return p.buf.to(self.device, non_blocking=True)
        return p.buf


class Stopwatch:
    """Compute seconds of timed regions, by kind ("forward", "backward").

    On CPU, time.perf_counter around each region. On a GPU, a pair of CUDA events recorded on the current
    stream around each region: no host sync inside a step. Their times are read (`settle`) once the events
    have happened: opportunistically after each region (non-blocking queries) and completely at the end of
    a phase, after the phase's device synchronise. The host still syncs there (once per phase), in
    Meter.wait (NCCL waits are polled: that blocked time is the measured communication wait) and where a
    rule itself reads a value. A GPU region's time is its span on the stream: the kernels it queued, and
    any gap in which the stream waited for the host."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = {"forward": 0.0, "backward": 0.0}
        self._events: deque = deque()  # (kind, start event, end event) not read yet, oldest first

    @contextmanager
    def region(self, kind: str):
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((kind, start, end))
            self.settle(block=False)
        else:
            t0 = time.perf_counter()
            yield
            self.seconds[kind] += time.perf_counter() - t0

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] += seconds

    def settle(self, block: bool = True) -> None:
        """Fold the recorded GPU regions into `seconds`; `block` False: only those already done (called after a
        device synchronise, blocking waits for nothing)."""
        while self._events and (block or self._events[0][2].query()):
            kind, start, end = self._events.popleft()
            end.synchronize()  # already done after a device synchronise; elapsed_time needs it
            self.seconds[kind] += start.elapsed_time(end) / 1000  # ms

    def reset(self) -> None:
        self._events.clear()
        self.seconds = dict.fromkeys(self.seconds, 0.0)


# --- memory ----------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident memory now (Linux /proc; elsewhere the process's peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset_peak_rss (Linux VmHWM), else over the process's life."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> None:
    """Restart the peak-RSS counter (Linux >= 4.0), so the peak covers training, not the set-up before it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def nvml_process_mb(device: torch.device) -> float | None:
    """NVML's reading of this process's memory on `device` (the device's used memory where NVML cannot
    tell processes apart); None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:  # CUDA_VISIBLE_DEVICES renumbers devices: find this one by its UUID
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(device).uuid}")
        except Exception:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index)
        used = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                if p.pid == os.getpid() and p.usedGpuMemory]
        return (used[0] if used else pynvml.nvmlDeviceGetMemoryInfo(handle).used) / 2**20
    except Exception:  # NVML missing or not permitted: torch's numbers remain
        return None


class Memory:
    """Peak memory of the training phases, sampled after each: the peak RSS of this process since training
    started (every worker also holds the data and a copy of every group, built before training: that is
    the start RSS, so peak - start is what training itself added); on GPUs, NVML's reading for this
    process at the end of the phase (the caching allocator keeps what the phase reserved) and torch's
    allocator peaks beside it (reset after each evaluation)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start_mb = rss_mb()
        reset_peak_rss()
        self.peak_mb = self.nvml_mb = self.cuda_peak_mb = self.cuda_reserved_mb = 0.0

    def sample(self) -> None:
        self.peak_mb = peak_rss_mb()
        if self.device.type != "cuda":
            return
        self.cuda_peak_mb = max(self.cuda_peak_mb, torch.cuda.max_memory_allocated(self.device) / 2**20)
        self.cuda_reserved_mb = max(self.cuda_reserved_mb, torch.cuda.max_memory_reserved(self.device) / 2**20)
        self.nvml_mb = max(self.nvml_mb, nvml_process_mb(self.device) or 0.0)

    def stats(self) -> dict:
        return {"peak_rss_mb": self.peak_mb, "rss_start_mb": self.start_mb,
                "gpu_mem_nvml_mb": self.nvml_mb or None, "torch_cuda_peak_mb": self.cuda_peak_mb or None,
                "torch_cuda_reserved_mb": self.cuda_reserved_mb or None}
