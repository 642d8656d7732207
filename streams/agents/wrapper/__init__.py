"""The agent wrapper, one step per module (the model is getsentry/arroyo's strategies).

``message`` (what a handler sees), ``retry`` (the policy and its decisions),
``decode``, ``deadline``, ``trace``, ``measure`` (metrics), ``attempts`` (one message
under the policy), ``batch`` (the batch fast path), ``agent`` (the steps composed,
Faust-free) and ``attach`` (registration on a Faust app). ``streams.agents.base`` is
the stable import path of the public names.
"""
