"""A distributed worker whose phases run under the run's autocast, as bench/train/loop.py runs every
engine's phases (`python -m tests.amp_worker`, started by tests through LocalJob). Where the loop already
does it this changes nothing: autocast regions of the same dtype nest."""
from __future__ import annotations

import sys

from bench.exec import engine, worker

_phase = engine.WorkerEngine.phase


def phase(self, start, end, on_step):
    with self.run.autocast():
        return _phase(self, start, end, on_step)


engine.WorkerEngine.phase = phase

if __name__ == "__main__":
    sys.exit(worker.main())
