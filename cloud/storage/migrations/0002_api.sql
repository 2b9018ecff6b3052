-- zhizao API schema: bearer tokens (only their sha256 is stored) and the audit log of writes.
-- Written so that applying it twice is harmless (the runner also records it in schema_migrations).

CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    bigserial PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'engineer', 'admin')),
    sites       text[],            -- NULL: every site, present and future
    token_hash  bytea NOT NULL,    -- sha256 of the token; the plaintext is shown once and never stored
    prefix      text NOT NULL,     -- first characters of the token, so an operator can tell tokens apart
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    last_used   timestamptz,
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_hash ON api_tokens (token_hash);

CREATE TABLE IF NOT EXISTS audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    token_id  bigint REFERENCES api_tokens (token_id),
    actor     text NOT NULL,        -- token name, or 'cli' for local administration
    action    text NOT NULL,        -- e.g. token.create, token.revoke, command.send
    site_id   text,
    target    text,
    detail    jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_site ON audit_log (site_id, at);
