"""Delayed and after-commit messages: one PostgreSQL table and a pump in ``streams relay``.

A message scheduled with ``countdown``/``eta`` (or inside a caller's transaction with
``conn=``) is checked and encoded at once, stored as bytes in ``scheduled_messages``,
and published by the pump when due, then deleted after the broker's acknowledgement.
"""
