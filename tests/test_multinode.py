"""Several machines: two torchrun "nodes" on this machine (static rendezvous at 127.0.0.1, one worker each)
run one distributed job, as README's multi-node command does across machines."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.exec.launch import _free_port
from bench.train.records import read_record

ROOT = Path(__file__).resolve().parent.parent


def test_two_torchrun_nodes_run_one_distributed_job(tmp_path):
    out, port = tmp_path / "runs", _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    run = ["-m", "bench.exec.worker", "--method", "lct", "--groups", "2", "--profile", "smoke", "--steps", "2",
           "--width", "0.0625", "--batch-size", "32", "--eval-limit", "32", "--final-eval-limit", "32",
           "--comm-timeout", "60", "--out", str(out), "--no-progress"]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(n),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port), *run],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # its own process group: torchrun's agent and its worker
             for n in (0, 1)]
    try:
        logs = [p.communicate(timeout=120)[0] for p in nodes]
    finally:
        for p in nodes:  # a hung or failed node: end its agent and worker
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in nodes] == [0, 0], logs
    (path,) = out.glob("*.json")  # rank 0 (node 0) writes the record
    record = read_record(path)
    assert record["status"] == "completed" and record["config"]["distributed"]["world_size"] == 2
    workers = record["workers"]
    assert [(w["rank"], w["node_rank"], w["local_rank"]) for w in workers] == [(0, 0, 0), (1, 1, 0)]
    assert all(w["steps"] == 2 and w["bytes_sent"] > 0 for w in workers)
