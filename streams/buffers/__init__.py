"""Buffered increments: coalesced counters flushed to PostgreSQL exactly once.

``models`` is the allow-list (which tables and columns take increments), ``sql`` builds
statements from it, ``window`` sums increments per row per flush window, ``store``
applies a window in one PostgreSQL transaction together with its flush marks, and
``buffer`` ties them together for the agent in ``streams.agents.buffers``.
"""
