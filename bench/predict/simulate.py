"""A discrete-event simulation of K workers' step timelines over a link model.

A worker is a generator that yields what it does next, the way the backends' workers do it:

    Compute(seconds)            busy for that long (the only thing that uses the worker)
    Send(key, channel, nbytes)  hand a message to a link and go on (isend); it moves once its receive is
                                posted too (gloo and NCCL meet sender and receiver), and arrives `latency +
                                nbytes / bandwidth` after that, behind earlier messages on the same channel
    Post(key)                   post the receive of `key` now (irecv), ahead of its Wait; a Wait or Poll
                                posts it where no Post did
    Wait(key)                   block until the message `key` has arrived (what the workers' meters count
                                as communication: transfer time and waiting for the peer alike)
    Poll(key)                   whether it has arrived by now, without blocking (Link.ready); the generator
                                receives True or False
    AllReduce(key, nbytes)      join a ring all-reduce of all K workers and go on; it starts when the last
                                worker has joined and earlier all-reduces are done, and its result `key`
                                arrives for everyone when it ends (Wait(key) blocks until then)

Events are processed in time order, so a Poll at time t sees every message sent before t. Each worker's
busy and blocked seconds are summed; a phase ends when the slowest worker is done (the engine's barrier).

A receive posted after its send is served by the sender's communication thread. On a CPU host whose cores
all compute, that thread gets a core only when the sender's compute thread blocks, or when the scheduler's
slice runs out: the link's `rendezvous_s` (measured by the probe, probe.rendezvous_s: on the project's 2-core VM a
late receive took 0.2-0.3 ms from an idle sender and, from a computing one, either as much or 2.9 ms, by where
the scheduler woke the thread; their mean, 1.2-1.7 ms more). So such a message leaves at once if its sender is
blocked or done, else when the sender next blocks or `rendezvous_s` later, whichever comes first (0: at once,
as on GPUs, whose hosts do not compute).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Generator, Hashable

from .link import LinkModel


@dataclass(frozen=True)
class Compute:
    seconds: float


@dataclass(frozen=True)
class Send:
    key: Hashable
    channel: Hashable
    nbytes: int


@dataclass(frozen=True)
class Post:
    key: Hashable


@dataclass(frozen=True)
class Wait:
    key: Hashable


@dataclass(frozen=True)
class Poll(Wait):
    """A Wait that does not block: whether the message has arrived by now."""


@dataclass(frozen=True)
class AllReduce:
    key: Hashable
    nbytes: int


Program = Generator[object, bool | None, None]
_SLICE_OVER = -1  # a heap entry that is no worker's: a waiting receive's scheduler slice is over


@dataclass
class Timeline:
    """What each worker did in one phase."""

    busy_s: list[float]
    blocked_s: list[float]
    end_s: list[float]

    @property
    def phase_s(self) -> float:
        return max(self.end_s)


@dataclass
class _State:
    busy: list[float]
    blocked: list[float]
    end: list[float]
    arrivals: dict = field(default_factory=dict)     # key -> arrival time
    waiting: dict = field(default_factory=dict)      # key -> [(worker, since)]
    channel_free: dict = field(default_factory=dict)  # channel -> time its last message has left
    joined: dict = field(default_factory=dict)       # all-reduce key -> [join times]
    ring_free: float = 0.0
    posted: set = field(default_factory=set)         # keys whose receive is posted
    unmatched: dict = field(default_factory=dict)    # key -> (sender, Send): sent, its receive not yet posted
    serving: dict = field(default_factory=dict)      # worker -> keys whose receive waits for its comm thread
    free: list = field(default_factory=list)         # per worker: blocked or done (its core is free)


class Simulation:
    def __init__(self, link: LinkModel, workers: int):
        self.link, self.k = link, workers

    def run(self, programs: list[Program]) -> Timeline:
        if len(programs) != self.k:
            raise ValueError(f"{len(programs)} programs for {self.k} workers")
        k = self.k
        self.s = _State([0.0] * k, [0.0] * k, [0.0] * k, free=[False] * k)
        self.programs, self.heap, self.seq, self.done = programs, [], 0, [False] * k
        for w in range(k):
            self._push(0.0, w, None)
        while self.heap:
            t, _, w, value = heapq.heappop(self.heap)
            if w == _SLICE_OVER:
                self._depart(value, t)
            else:
                self._advance(w, t, value)
        if not all(self.done):
            stuck = [w for w in range(k) if not self.done[w]]
            raise RuntimeError(f"simulated workers {stuck} wait for messages nobody sends (a program's bug)")
        return Timeline(self.s.busy, self.s.blocked, self.s.end)

    def _push(self, t: float, w: int, value) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, w, value))

    def _advance(self, w: int, t: float, value) -> None:
        """Run worker w from time t until it computes, blocks or ends."""
        s, gen = self.s, self.programs[w]
        s.free[w] = False
        while True:
            try:
                action = gen.send(value)
            except StopIteration:
                self.done[w], s.end[w] = True, t
                self._block(w, t)
                return
            value = None
            if isinstance(action, Compute):
                s.busy[w] += action.seconds
                self._push(t + action.seconds, w, None)
                return
            if isinstance(action, Send):
                if action.key in s.posted:
                    self._arrive(action.key, self._transfer(action, t))
                else:
                    s.unmatched[action.key] = (w, action)
            elif isinstance(action, AllReduce):
                self._join(action, t)
            elif isinstance(action, Wait | Post):
                self._post(action.key, t)
                if isinstance(action, Poll):
                    value = s.arrivals.get(action.key, float("inf")) <= t
                elif isinstance(action, Wait):
                    arrival = s.arrivals.get(action.key)
                    if arrival is None:
                        s.waiting.setdefault(action.key, []).append((w, t))
                        self._block(w, t)
                        return
                    if arrival > t:
                        s.blocked[w] += arrival - t
                        self._block(w, t)
                        self._push(arrival, w, None)
                        return
            else:
                raise TypeError(f"a simulated worker yielded {action!r}")

    def _post(self, key, t: float) -> None:
        """The receive of `key` is posted at t: a message already sent leaves now if its sender's core is free,
        else when the sender blocks or its slice runs out."""
        s = self.s
        if key in s.posted:
            return
        s.posted.add(key)
        if key not in s.unmatched:
            return
        sender = s.unmatched[key][0]
        if s.free[sender] or self.link.rendezvous_s <= 0:
            self._depart(key, t)
        else:
            s.serving.setdefault(sender, []).append(key)
            self._push(t + self.link.rendezvous_s, _SLICE_OVER, key)

    def _depart(self, key, t: float) -> None:
        entry = self.s.unmatched.pop(key, None)
        if entry is not None:  # else it has left already
            self._arrive(key, self._transfer(entry[1], t))

    def _block(self, w: int, t: float) -> None:
        """Worker w blocks (or ends): its core is free, so its communication thread serves the receives waiting."""
        self.s.free[w] = True
        for key in self.s.serving.pop(w, []):
            self._depart(key, t)

    def _transfer(self, send: Send, t: float) -> float:
        start = max(t, self.s.channel_free.get(send.channel, 0.0))
        wire = self.link.transfer_s(send.nbytes) - self.link.latency
        self.s.channel_free[send.channel] = start + wire
        return start + wire + self.link.latency

    def _join(self, op: AllReduce, t: float) -> None:
        times = self.s.joined.setdefault(op.key, [])
        times.append(t)
        if len(times) == self.k:
            start = max(max(times), self.s.ring_free)
            self.s.ring_free = start + self.link.allreduce_s(op.nbytes, self.k)
            self._arrive(op.key, self.s.ring_free)

    def _arrive(self, key, arrival: float) -> None:
        s = self.s
        s.arrivals[key] = arrival
        for w, since in s.waiting.pop(key, []):
            resume = max(arrival, since)
            s.blocked[w] += resume - since
            self._push(resume, w, None)
