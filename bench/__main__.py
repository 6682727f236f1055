"""Command line: `python -m bench {run,list,download} ...`.

Every user error is a BenchError, printed on one line with exit status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import sys

from .config import PROFILES, RunConfig
from .errors import BenchError


def _run(args) -> None:
    from .runner import run

    cfg = RunConfig(method=args.method, groups=args.groups, model=args.model, data=args.data,
                    profile=args.profile, seed=args.seed, split_rule=args.split, data_root=args.data_root,
                    out=args.out, resume=args.resume, device=args.device, threads=args.threads,
                    steps=args.steps, batch_size=args.batch_size, width=args.width)
    path = run(cfg, progress=not args.no_progress)
    print(path)


def _list(args) -> None:
    from methods import create_method, list_methods

    for name in list_methods():
        print(f"{name:10s} {create_method(name).description}")


def _download(args) -> None:
    from . import data

    data.download(args.dataset, data.resolve_data_root(args.data_root))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train one method, write one run record")
    r.add_argument("--method", required=True, help="registered method (see `python -m bench list`)")
    r.add_argument("--groups", "-k", type=int, default=1, help="number of layer groups K (K-1 critics)")
    r.add_argument("--model", default="resnet50", help="resnet50 | resnet101 | resnet182 | mlp")
    r.add_argument("--data", default="digits", help="digits | mnist | fashion_mnist | cifar10 | cifar100")
    r.add_argument("--profile", default="smoke", choices=PROFILES)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--split", default="paper", help="paper | balanced")
    r.add_argument("--data-root", default=None, help="data folder (default: $LCTBENCH_DATA or ./data)")
    r.add_argument("--out", default="runs", help="folder for records and checkpoints")
    r.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    r.add_argument("--steps", type=int, default=None, help="override the profile's iterations")
    r.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    r.add_argument("--width", type=float, default=None, help="override the profile's width multiplier")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_run)

    ls = sub.add_parser("list", help="list the registered methods")
    ls.set_defaults(func=_list)

    d = sub.add_parser("download", help="download a data set through torchvision (needs internet)")
    d.add_argument("dataset")
    d.add_argument("--data-root", default=None)
    d.set_defaults(func=_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
