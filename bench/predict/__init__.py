"""A cost model of model-parallel training, validated on real workers.

    python -m bench calibrate ...        # calibration.py: this device's per-unit and per-boundary costs (JSON)
    python -m bench predict ...          # model.py: predicted samples/s, busy and blocked shares, K = 1..16
    python -m bench predict-check        # check.py: against the speed benchmark's real runs (and the paper)

A calibration (calibration.py) and a link model (link.py; measured by probe.py or given) feed an event
simulation (simulate.py) of each backend's workers (programs.py), whose costs come from the method's
declarations (costs.py); search.py picks the cut of highest predicted throughput (the timed split's
`throughput` objective). This package imports nothing at its top, so that bench/train/build.py can use
its modules without a cycle.
"""
