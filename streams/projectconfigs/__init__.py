"""Project configs: who asks for a recompute (scopes), when it runs (debounce), what it is.

Faust-free on purpose: the client imports ``scopes``; the worker's agent
(``streams.agents.invalidation``) drives ``debounce`` and ``recompute`` from Faust
tables and a timer; unit tests run all of it against fakes.
"""
