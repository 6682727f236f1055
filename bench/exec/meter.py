"""What every distributed backend measures, and the point-to-point links of the stage backend.

- `Meter`: time a worker is blocked on communication and the bytes it moves (every backend).
- `Memory`: peak RSS of the worker process (CPU), NVML's per-process reading and torch.cuda's peaks (GPU).
- `Link`: point-to-point messages between neighbouring workers, timed and counted.

One `Link` is one direction of traffic with one peer (activations i -> i+1, or feedback i+1 -> i),
on its own process group: messages on a link arrive in the order they were sent (gloo matches
by peer and tag in order; NCCL orders p2p per communicator), and the two directions of a pair
never share a group, so a receive posted ahead in one direction cannot block the other (with NCCL
a shared communicator would serialise them on one stream and deadlock the chain of workers).

Shapes: an activation link knows its shape from the split. A feedback link learns it from a small
header (ndim, then the sizes) that the sender puts before its first message only: an `lct` loss
vector is (B,), a `dni`/`bp` gradient is shaped like the activation, and the receiver need not know
which method it runs. The dtype is the activation's (float32).

Every blocking wait goes through `Meter.wait`, which times it (the worker's communication wait),
applies the timeout, and turns a lost peer into a one-line `PeerError`.
"""
from __future__ import annotations

import os
import re
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

_HEADER = 8  # int64 slots: ndim + up to 7 sizes


class PeerError(RuntimeError):
    """A peer died, hung past the timeout, or sent something unexpected; the message is one line."""


def one_line(e: BaseException) -> str:
    """An error on one line, without gloo's source location and advice."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../gloo/transport/tcp/pair.cc:553] "
    text = text.split(". This is typically")[0]
    return text if len(text) <= 300 else text[:297] + "..."


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
        self._sends.append((dist.isend(t, dst=peer, group=group), t, what))
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
    """One direction of traffic with one peer: receives are posted ahead and consumed in step order."""

    def __init__(self, meter: Meter, peer: int, group, name: str, device: torch.device,
                 shape: tuple[int, ...] | None = None, dtype: torch.dtype = torch.float32):
        self.meter, self.peer, self.group, self.name = meter, peer, group, name
        self.device, self.shape, self.dtype = device, shape, dtype
        self.posted: deque[_Posted] = deque()
        self.last_posted = -1  # receives are posted once per step, in step order
        self.header_sent = False

    # --- sending side ----------------------------------------------------------------------------
    def send(self, t: torch.Tensor, step: int) -> None:
        if self.shape is None and not self.header_sent:  # first message on a learned-shape link
            header = torch.zeros(_HEADER, dtype=torch.int64, device=t.device)
            header[0] = t.dim()
            header[1:1 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
            self.meter.isend(header, self.peer, self.group, f"sending {self.name} header to rank {self.peer}")
            self.header_sent = True
        self.meter.isend(t.detach(), self.peer, self.group, f"sending {self.name} of step {step} to rank {self.peer}")

    # --- receiving side --------------------------------------------------------------------------
    def _learn_shape(self) -> None:
        header = torch.zeros(_HEADER, dtype=torch.int64, device=self.device)
        work = dist.irecv(header, src=self.peer, group=self.group)
        self.meter.wait(work, f"waiting for the {self.name} header from rank {self.peer}")
        self.meter.bytes_recv += header.numel() * header.element_size()
        ndim = int(header[0])
        self.shape = tuple(int(s) for s in header[1:1 + ndim])

    def post(self, step: int) -> None:
        """Post the receive for `step` now, so the data can arrive while this worker computes."""
        if self.shape is None or step <= self.last_posted:
            return  # the first receive learns the shape first (`get` posts it); never post twice
        self.last_posted = step
        buf = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        self.posted.append(_Posted(step, buf, dist.irecv(buf, src=self.peer, group=self.group)))

    def ready(self) -> bool:
        return bool(self.posted) and self.posted[0].work.is_completed()

    def get(self, step: int) -> torch.Tensor:
        """The message of `step` (blocking); receives are consumed in the order they were posted."""
        if not self.posted:
            if self.shape is None:
                self._learn_shape()
            self.post(step)
        p = self.posted.popleft()
        if p.step != step:
            raise PeerError(f"rank {self.meter.rank}: {self.name}: expected step {p.step}, asked for {step}")
        self.meter.wait(p.work, f"waiting for {self.name} of step {step} from rank {self.peer}")
        self.meter.bytes_recv += p.buf.numel() * p.buf.element_size()
        return p.buf


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
