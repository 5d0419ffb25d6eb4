"""The benchmark: the whole system on this machine under load, against a no-op Celery baseline.

`python -m tooling.bench` (or `make bench`) starts the system as processes on embedded servers of its own
(`bench.system`), seeds existing tickets (`bench.seed`), measures a chain of no-op tasks over the
pipeline's queues (`bench.baseline`), offers tickets over HTTP closed-loop and open-loop
(`bench.load`), samples every process (`bench.sampler`), counts database round trips inside the
workers and the API (`bench.probe`), and writes JSON, Markdown and a PNG (`bench.report`).
See docs/performance.md.
"""
