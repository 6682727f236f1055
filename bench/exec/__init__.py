"""Executors: in process (inprocess.py) and on real workers, one backend per execution shape (stages,
pipelining, ddp, rounds), sharing launch (launch.py), the worker entry point (worker.py), one engine
base (engine.py) and one meter (meter.py)."""
