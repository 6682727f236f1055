"""The link model: how long a message takes between two workers, and a ring all-reduce among K.

A message of n bytes takes `latency + n / bandwidth` (one direction; messages on one channel queue
behind each other); a ring all-reduce of n bytes among K workers takes
`2 (K - 1) / K * n / bandwidth + 2 (K - 1) * latency` (each worker sends and receives 2 (K - 1) / K of the
buffer in 2 (K - 1) rounds).

Where the numbers come from: measured on this machine by the suite's own transfer probe (probe.py:
torch.distributed sends timed like the engine's paper-style estimate, bench/exec/engine.py, fitted to
latency + n / bandwidth), given (`--bandwidth GB/s --latency us`), or a preset. The presets are nominal
figures of the hardware, not measurements, and predictions made with them say so:
- nvlink:     NVLink 3 (A100 SXM, 12 links): 300 GB/s per direction; 10 us per message (NCCL p2p order)
- pcie:       PCIe 3.0 x16 (the paper's GTX 1080 Ti machines): 15.75 GB/s per direction; 10 us
- ib:         InfiniBand HDR, 200 Gb/s: 25 GB/s; 5 us (the wire; NCCL adds its own)
- gloo-local: gloo over loopback TCP between two processes of the 2-core VM that produced
              results/speed-cpu.csv (load ~1.8): 8.9 GB/s and 420 us per message, fitted to the medians
              of the transfer probe's estimates in those records (paper_comm_estimate_s per step: 0.91 ms
              for one 0.52 MB activation and a 512 B loss vector, lct; 0.97 ms for two 0.52 MB tensors,
              dni and gpipe); another machine's loopback differs: measure it (`--link measured`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import BenchError

GB = 1e9


@dataclass(frozen=True)
class LinkModel:
    name: str
    bandwidth: float          # bytes per second, one direction
    latency: float            # seconds per message
    source: str = "preset"    # preset | given | measured
    points: tuple = ()        # measured: the (bytes, seconds) the fit went through
    # measured: the all-reduce's own (bandwidth, latency per round) from timed all-reduces (torch's collective
    # is not a chain of the p2p messages: gloo reduces on the CPU); else the ring of p2p messages above
    ring: tuple | None = None
    # measured on a CPU host: the CPU seconds torch.distributed.pipelining's runtime spends per micro-batch action
    # on a worker besides the stage's compute (probe.pipeline_actions_s), GPipe's loop's ...
    action_s: float = 0.0
    # ... and each schedule's own, (name, seconds) pairs: the multi-stage ones run an interpreter of their action
    # lists (_PipelineScheduleRuntime) that costs about twice GPipe's loop per action; presets and GPUs: none
    actions: tuple = ()
    # measured on a CPU host: how much later a receive posted after its send completes when the sender's core
    # is computing than when it is idle (its communication thread waits for the scheduler's slice; simulate.py);
    # presets and GPUs: 0
    rendezvous_s: float = 0.0

    def action_for(self, schedule: str) -> float:
        """The runtime's seconds per micro-batch action of `schedule`: its own where measured, else GPipe's."""
        return dict(self.actions).get(schedule, self.action_s)

    def transfer_s(self, nbytes: int) -> float:
        return self.latency + nbytes / self.bandwidth if self.bandwidth != float("inf") else self.latency

    def allreduce_s(self, nbytes: int, k: int) -> float:
        if k <= 1:
            return 0.0
        bandwidth, latency = self.ring or (self.bandwidth, self.latency)
        volume = 0.0 if bandwidth == float("inf") else 2 * (k - 1) / k * nbytes / bandwidth
        return volume + 2 * (k - 1) * latency

    def text(self) -> str:
        bw = "inf" if self.bandwidth == float("inf") else f"{self.bandwidth / GB:.3g} GB/s"
        ring = "" if not self.ring else f"; all-reduce {self.ring[0] / GB:.3g} GB/s, {self.ring[1] * 1e6:.3g} us per round"
        every, action = sorted({self.action_s, *dict(self.actions).values()} - {0.0}), ""  # empty: not measured
        if every:
            spread = f"{every[0] * 1e6:.3g}" + (f"-{every[-1] * 1e6:.3g}" if len(every) > 1 else "")
            action = f"; pipelining {spread} us per micro-batch action" + (" by schedule" if len(every) > 1 else "")
        late = "" if not self.rendezvous_s else \
            f"; a computing sender serves a late receive {self.rendezvous_s * 1e3:.3g} ms later"
        return f"{self.name} ({self.source}: {bw}, {self.latency * 1e6:.3g} us{ring}{action}{late})"

    def to_dict(self) -> dict:
        return {**asdict(self), "points": [list(p) for p in self.points], "ring": list(self.ring) if self.ring else None,
                "actions": [list(a) for a in self.actions]}

    @classmethod
    def from_dict(cls, d: dict) -> "LinkModel":
        return cls(d["name"], float(d["bandwidth"]), float(d["latency"]), d.get("source", "given"),
                   tuple(tuple(p) for p in d.get("points", ())), tuple(d["ring"]) if d.get("ring") else None,
                   float(d.get("action_s", 0.0)), tuple((str(n), float(v)) for n, v in d.get("actions", ())),
                   float(d.get("rendezvous_s", 0.0)))


PRESETS = {
    "nvlink": LinkModel("nvlink", 300 * GB, 10e-6),
    "pcie": LinkModel("pcie", 15.75 * GB, 10e-6),
    "ib": LinkModel("ib", 25 * GB, 5e-6),
    "gloo-local": LinkModel("gloo-local", 8.9 * GB, 420e-6),
}
FREE = LinkModel("free", float("inf"), 0.0, "given")  # no communication cost: the closed forms' link


def preset_for(device: str) -> LinkModel:
    """The link a run on `device` most likely has between its workers (the cost-model split's default)."""
    return PRESETS["pcie" if device.startswith("cuda") else "gloo-local"]


def parse_link(name: str | None, bandwidth_gbps: float | None = None, latency_us: float | None = None,
               measured: LinkModel | None = None) -> LinkModel:
    """`--link NAME` (a preset, or `measured` with the probe's result), with `--bandwidth` / `--latency`
    replacing its numbers; bandwidth and latency alone make a link of their own. Bad input is one line."""
    if name == "measured":
        if measured is None:
            raise BenchError("--link measured: no measured link (the transfer probe did not run)")
        base = measured
    elif name is None:
        if bandwidth_gbps is None or latency_us is None:
            raise BenchError("give --link (nvlink, pcie, ib, gloo-local, measured) or both --bandwidth and --latency")
        base = LinkModel("given", 1.0, 0.0, "given")
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise BenchError(f"unknown link {name!r}; valid: {', '.join(PRESETS)}, measured")
    if bandwidth_gbps is not None and not bandwidth_gbps > 0:
        raise BenchError(f"--bandwidth must be > 0 GB/s, got {bandwidth_gbps}")
    if latency_us is not None and latency_us < 0:
        raise BenchError(f"--latency must be >= 0 us, got {latency_us}")
    if bandwidth_gbps is None and latency_us is None:
        return base
    return LinkModel(base.name, base.bandwidth if bandwidth_gbps is None else bandwidth_gbps * GB,
                     base.latency if latency_us is None else latency_us * 1e-6, "given")


def fit(sizes: list[int], seconds: list[float], name: str = "measured") -> LinkModel:
    """Least-squares latency + n / bandwidth through (bytes, seconds) points; one-line error if they do not
    give a positive bandwidth (transfers that did not grow with their size)."""
    n = len(sizes)
    if n < 2 or len(seconds) != n:
        raise BenchError("a link fit needs two or more (bytes, seconds) points")
    mx, my = sum(sizes) / n, sum(seconds) / n
    sxx = sum((x - mx) ** 2 for x in sizes)
    slope = sum((x - mx) * (y - my) for x, y in zip(sizes, seconds)) / sxx if sxx else 0.0
    if not slope > 0:
        raise BenchError(f"the transfer probe's times do not grow with the message size ({seconds}); "
                         f"measure again on a quieter machine or give --bandwidth and --latency")
    return LinkModel(name, 1.0 / slope, max(0.0, my - slope * mx), "measured", tuple(zip(sizes, seconds)))
