"""A discrete-event simulation of K workers' step timelines over a link model.

A worker is a generator that yields what it does next, the way the backends' workers do it:

    Compute(seconds)            busy for that long (the only thing that uses the worker)
    Send(key, channel, nbytes)  hand a message to a link and go on (isend); it arrives `latency + nbytes /
                                bandwidth` later, behind earlier messages on the same channel
    Wait(key)                   block until the message `key` has arrived (what the workers' meters count
                                as communication: transfer time and waiting for the peer alike)
    Poll(key)                   whether it has arrived by now, without blocking (Link.ready); the generator
                                receives True or False
    AllReduce(key, nbytes)      join a ring all-reduce of all K workers and go on; it starts when the last
                                worker has joined and earlier all-reduces are done, and its result `key`
                                arrives for everyone when it ends (Wait(key) blocks until then)

Events are processed in time order, so a Poll at time t sees every message sent before t. Each worker's
busy and blocked seconds are summed; a phase ends when the slowest worker is done (the engine's barrier).
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


class Simulation:
    def __init__(self, link: LinkModel, workers: int):
        self.link, self.k = link, workers

    def run(self, programs: list[Program]) -> Timeline:
        if len(programs) != self.k:
            raise ValueError(f"{len(programs)} programs for {self.k} workers")
        k = self.k
        self.s = _State([0.0] * k, [0.0] * k, [0.0] * k)
        self.programs, self.heap, self.seq, self.done = programs, [], 0, [False] * k
        for w in range(k):
            self._push(0.0, w, None)
        while self.heap:
            t, _, w, value = heapq.heappop(self.heap)
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
        while True:
            try:
                action = gen.send(value)
            except StopIteration:
                self.done[w], s.end[w] = True, t
                return
            value = None
            if isinstance(action, Compute):
                s.busy[w] += action.seconds
                self._push(t + action.seconds, w, None)
                return
            if isinstance(action, Send):
                self._arrive(action.key, self._transfer(action, t))
            elif isinstance(action, AllReduce):
                self._join(action, t)
            elif isinstance(action, Poll):
                value = s.arrivals.get(action.key, float("inf")) <= t
            elif isinstance(action, Wait):
                arrival = s.arrivals.get(action.key)
                if arrival is None:
                    s.waiting.setdefault(action.key, []).append((w, t))
                    return
                if arrival > t:
                    s.blocked[w] += arrival - t
                    self._push(arrival, w, None)
                    return
            else:
                raise TypeError(f"a simulated worker yielded {action!r}")

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
