"""The dead-letter topic: its header contract (``headers``), the sink every writer
sends through (``sink``) and ``streams dlq list|replay`` (``replay``).

Nothing is re-exported here: import names from the module that defines them.
"""
