"""``insession bench``: latency and throughput of the worker, each beside its baseline.

``stats`` (intended send times, HDR latency, warm-up, histogram differences; pure),
``traffic`` (open-loop demo-like events), ``kafka_run`` (paced sender, output receiver, phases),
``relay`` / ``faust_forward`` (the broker and Faust floors, run as processes), ``systems``
(subprocesses and the worker's published metrics), ``engine_alone`` and ``memory`` (in-process),
``runner`` (one run of everything) and ``report`` (the table). Results: BENCHMARKS.md.
"""
