-- Activity on issues (notes, assignments, resolutions) and who participates in an issue.
CREATE TABLE IF NOT EXISTS issue_activity (
    id bigserial PRIMARY KEY,
    group_id bigint NOT NULL REFERENCES issue_group (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES project (id) ON DELETE CASCADE,
    type text NOT NULL
        CHECK (type IN ('note', 'assigned', 'unassigned', 'set_resolved', 'set_unresolved')),
    user_id bigint REFERENCES auth_user (id) ON DELETE SET NULL,  -- the actor; NULL = system
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    date_added timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS issue_activity_group_idx ON issue_activity (group_id);
CREATE INDEX IF NOT EXISTS issue_activity_project_date_idx
    ON issue_activity (project_id, date_added);

-- Participants of an issue: they get its activity notifications.
CREATE TABLE IF NOT EXISTS group_subscription (
    group_id bigint NOT NULL REFERENCES issue_group (id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES auth_user (id) ON DELETE CASCADE,
    is_active boolean NOT NULL DEFAULT true,
    reason text NOT NULL DEFAULT 'unknown',
    date_added timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);

-- Weekly reports find active organizations by recent issues and read a week of events.
CREATE INDEX IF NOT EXISTS issue_group_last_seen_idx ON issue_group (last_seen);
CREATE INDEX IF NOT EXISTS error_event_project_date_idx ON error_event (project_id, date_added);
