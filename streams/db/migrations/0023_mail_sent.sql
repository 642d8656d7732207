-- One row per email that streams decided to send (kind, key, recipient): the ledger that
-- sends each of them once even when the job that sends it runs twice.
-- status 'sending' holds a lease while the SMTP transaction runs; 'sent' after the server
-- accepted it; 'refused' when the server refused it for good (5xx).
CREATE TABLE IF NOT EXISTS mail_sent (
    kind text NOT NULL,
    key text NOT NULL,
    user_id bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('sending', 'sent', 'refused')),
    token uuid NOT NULL,
    lease_until timestamptz NOT NULL,
    message_id text NOT NULL,
    attempts integer NOT NULL DEFAULT 1,
    sent_at timestamptz,
    error text,
    PRIMARY KEY (kind, key, user_id)
);
CREATE INDEX IF NOT EXISTS mail_sent_sending_idx ON mail_sent (lease_until) WHERE status = 'sending';
