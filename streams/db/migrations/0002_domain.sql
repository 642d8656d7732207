-- Domain tables that upstream services write and several agents read.
-- status columns: 0 = active, anything else = inactive (pending deletion, disabled, ...).
CREATE TABLE IF NOT EXISTS organization (
    id bigserial PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    name text NOT NULL DEFAULT '',
    status smallint NOT NULL DEFAULT 0,
    date_added timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS organization_option (
    organization_id bigint NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (organization_id, key)
);

CREATE TABLE IF NOT EXISTS project (
    id bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    slug text NOT NULL,
    name text NOT NULL DEFAULT '',
    platform text,
    status smallint NOT NULL DEFAULT 0,
    date_added timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, slug)
);
CREATE INDEX IF NOT EXISTS project_organization_idx ON project (organization_id);

CREATE TABLE IF NOT EXISTS project_option (
    project_id bigint NOT NULL REFERENCES project (id) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (project_id, key)
);

CREATE TABLE IF NOT EXISTS project_key (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES project (id) ON DELETE CASCADE,
    public_key text NOT NULL UNIQUE,
    label text NOT NULL DEFAULT '',
    status smallint NOT NULL DEFAULT 0,
    rate_limit_count integer,
    rate_limit_window integer,
    date_added timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS project_key_project_idx ON project_key (project_id);

-- The control silo's user table.
CREATE TABLE IF NOT EXISTS auth_user (
    id bigserial PRIMARY KEY,
    username text NOT NULL UNIQUE,
    email text NOT NULL DEFAULT '',
    is_active boolean NOT NULL DEFAULT true,
    date_joined timestamptz NOT NULL DEFAULT now()
);

-- An issue ("Group" in the old code): an aggregate of error events.
CREATE TABLE IF NOT EXISTS issue_group (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES project (id) ON DELETE CASCADE,
    title text NOT NULL DEFAULT '',
    culprit text NOT NULL DEFAULT '',
    level text NOT NULL DEFAULT 'error',
    status smallint NOT NULL DEFAULT 0,
    times_seen bigint NOT NULL DEFAULT 0,
    num_comments integer NOT NULL DEFAULT 0,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS issue_group_project_idx ON issue_group (project_id);

-- One error event (minimal).
CREATE TABLE IF NOT EXISTS error_event (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    project_id bigint NOT NULL REFERENCES project (id) ON DELETE CASCADE,
    group_id bigint REFERENCES issue_group (id) ON DELETE SET NULL,
    message text NOT NULL DEFAULT '',
    platform text,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    date_added timestamptz NOT NULL DEFAULT now()
);
