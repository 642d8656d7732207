"""The outbox relay (``streams relay``): committed outbox rows to Kafka, in order, never lost.

``claim`` holds the SQL, ``messages`` the pure row-to-message logic (coalescing,
routing), ``drain`` one claim-publish-delete transaction, ``relay`` the process.
"""
