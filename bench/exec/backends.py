"""Which backend runs a method on real workers: the one its class declares (methods.base.Backend)."""
from __future__ import annotations

from methods import Backend

from ..errors import BenchError
from .ddp import DataParallelWorkers
from .engine import WorkerEngine
from .exchange import ExchangeWorkers
from .pipelining import PipelineWorkers
from .rounds import RoundsWorkers
from .stages import StageWorkers

BACKENDS: dict[Backend, type[WorkerEngine]] = {
    Backend.STAGES: StageWorkers,
    Backend.PIPELINING: PipelineWorkers,
    Backend.DATA_PARALLEL: DataParallelWorkers,
    Backend.ROUNDS: RoundsWorkers,
    Backend.EXCHANGE: ExchangeWorkers,
}


def backend_for(method, groups: int) -> type[WorkerEngine]:
    """The backend of `method` with K = `groups` workers (a one-group pipeline is one stage worker)."""
    if method.backend is Backend.NONE:
        raise BenchError(f"{method.name} has no distributed form (it declares backend none); "
                         f"run it with --executor inprocess")
    if method.backend is Backend.PIPELINING and groups == 1:
        return StageWorkers
    return BACKENDS[method.backend]
