-- Deliveries a receiver acknowledged (2xx), by delivery id (= the Request-ID header)
-- (issue 14). A delivery replayed after a crash (its offsets not committed yet, or its
-- resource change processed again) is skipped instead of POSTed again. Kept one day.
CREATE TABLE IF NOT EXISTS webhook_delivered (
    delivery_id text PRIMARY KEY,
    delivered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_delivered_at_idx ON webhook_delivered (delivered_at);
