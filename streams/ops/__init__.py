"""Operations: generated Kubernetes manifests, alert rules and dashboards.

Everything under ``k8s/`` that repeats a fact of the code (topic names and sizes,
metric names, thresholds) is written by ``python -m streams.ops.k8s`` from the topic
catalogue and the definitions in this package; tests fail when the files drift.
"""
