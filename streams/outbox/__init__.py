"""The transactional outbox: the write side (``enqueue_outbox``) and its declarations.

    from streams.outbox import enqueue_outbox
    with conn.transaction():
        conn.execute("UPDATE organization SET name = %s WHERE id = %s", (name, org_id))
        enqueue_outbox(conn, scope="organization_scope", shard_identifier=org_id,
                       category="organization_update", object_identifier=org_id)

``streams relay`` publishes committed rows (see ``streams.relay``).
"""

from streams.outbox.write import enqueue_outbox, enqueue_outbox_async

__all__ = ["enqueue_outbox", "enqueue_outbox_async"]
