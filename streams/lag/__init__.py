"""Consumer-lag exporter (``streams lag-exporter``).

Layout, following the data: ``source`` reads groups and offsets from the cluster,
``timelag`` keeps the per-partition (end offset, time) tables that turn an offset lag
into seconds, ``poller`` turns one reading into an immutable ``Snapshot``,
``collector`` renders the latest snapshot as Prometheus families, and ``exporter``
runs the poll loop and the HTTP endpoint.
"""
