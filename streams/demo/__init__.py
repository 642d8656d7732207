"""Demo workloads and status fragments for ``streams up`` (and nothing else).

Product modules never import this package: only :mod:`streams.up` does, so the demo
code (and the demo webhook signing secrets in :mod:`streams.demo.webhooks`) stays out
of the import graph of the worker, the relay and the lag exporter. The layering test
(tests/test_layering.py) holds that line.
"""
