-- Issue 8: webhook targets (sentry apps, their installations, service hooks), the
-- per-minute service-hook fired counter and the recent-requests log per target.
-- The resources themselves (issue_group, error_event) come from 0002.
-- status columns: 0 = active/installed, anything else = inactive (not notified).

CREATE TABLE IF NOT EXISTS sentry_app (
    id bigserial PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    name text NOT NULL DEFAULT '',
    webhook_url text NOT NULL,
    -- Subscribed events: '<resource>.<action>' (e.g. 'issue.created') or a bare
    -- resource ('issue') meaning every action of it.
    events text[] NOT NULL DEFAULT '{}',
    client_secret text NOT NULL,
    status smallint NOT NULL DEFAULT 0,
    date_added timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sentry_app_installation (
    id bigserial PRIMARY KEY,
    sentry_app_id bigint NOT NULL REFERENCES sentry_app (id) ON DELETE CASCADE,
    organization_id bigint NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    -- 0 = installed; 1 = pending (not notified).
    status smallint NOT NULL DEFAULT 0,
    date_added timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sentry_app_id, organization_id)
);
CREATE INDEX IF NOT EXISTS sentry_app_installation_org_idx
    ON sentry_app_installation (organization_id);

CREATE TABLE IF NOT EXISTS service_hook (
    id bigserial PRIMARY KEY,
    guid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    project_id bigint NOT NULL REFERENCES project (id) ON DELETE CASCADE,
    url text NOT NULL,
    -- Subscribed events, e.g. 'event.created', 'event.alert'.
    events text[] NOT NULL DEFAULT '{}',
    secret text NOT NULL,
    -- Payload version; only 0 is implemented, others are refused with an error.
    version integer NOT NULL DEFAULT 0,
    status smallint NOT NULL DEFAULT 0,
    date_added timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS service_hook_project_idx ON service_hook (project_id);

-- How often each service hook fired, per minute (the old TSDB servicehook_fired).
CREATE TABLE IF NOT EXISTS service_hook_fired (
    service_hook_id bigint NOT NULL REFERENCES service_hook (id) ON DELETE CASCADE,
    minute timestamptz NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (service_hook_id, minute)
);

-- The last requests per target (kept to a bounded number per target by the worker).
CREATE TABLE IF NOT EXISTS webhook_delivery_log (
    id bigserial PRIMARY KEY,
    target_kind text NOT NULL,
    target_id bigint NOT NULL,
    delivery_id text NOT NULL,
    attempt integer NOT NULL,
    event_type text NOT NULL,
    sent_at timestamptz NOT NULL,
    -- NULL when no HTTP response came back (timeout, refused, connection error).
    status_code integer,
    duration_ms double precision NOT NULL,
    error text
);
CREATE INDEX IF NOT EXISTS webhook_delivery_log_target_idx
    ON webhook_delivery_log (target_kind, target_id, id DESC);
