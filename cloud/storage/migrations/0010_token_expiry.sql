-- Token lifetimes and rotation. Tokens made before this migration keep expires_at NULL: they never expire, so
-- every client that reads with one today goes on reading. A rotation issues a new token with the same role
-- and sites and lets the old one expire after a grace period (expires_at), pointing to its successor.

ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;   -- NULL: never expires
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS replaced_by bigint REFERENCES api_tokens (token_id);
