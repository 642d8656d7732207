-- Organization members and per-user mail opt-outs (issue 12: weekly reports and
-- activity notifications mail members / participants who have not opted out).
CREATE TABLE IF NOT EXISTS organization_member (
    organization_id bigint NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES auth_user (id) ON DELETE CASCADE,
    role text NOT NULL DEFAULT 'member',
    date_added timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX IF NOT EXISTS organization_member_user_idx ON organization_member (user_id);

-- A row = this user receives no mail of this kind.
CREATE TABLE IF NOT EXISTS user_mail_opt_out (
    user_id bigint NOT NULL REFERENCES auth_user (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('weekly_report', 'activity')),
    date_added timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, kind)
);
