"""Jobs declared in code: Avro-checked arguments, a silo, a retry policy, a deadline.

    from streams.jobs.declare import job

    @job("relocation.poll", args={"relocation_id": "long"}, deadline=30)
    async def poll(ctx, relocation_id):
        if still_running(relocation_id):
            ctx.schedule(poll, {"relocation_id": relocation_id}, countdown=60)

    poll.delay(relocation_id=7)
    poll.apply_async({"relocation_id": 7}, countdown=60, conn=conn)

Runs travel on the ``jobs`` topic; one instrumented agent (``streams.agents.jobs``)
runs them. Retries and follow-ons go through ``scheduled_messages`` (``streams relay``
publishes them when due).
"""
