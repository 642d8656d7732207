"""Periodic schedules: crontab and interval schedules declared in code, each slot run once.

``model`` declares schedules, ``crontab`` parses expressions, ``state`` keeps claimed
slots in PostgreSQL, ``ticker`` decides and claims due slots (driven by a timer in every
worker, ``streams.agents.schedules``), ``listing`` renders ``streams schedules list``.
"""
