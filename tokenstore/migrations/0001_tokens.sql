-- 0001: the tokens table.
--
-- Times are unix milliseconds; NULL means "none" (never expires, not
-- revoked, never rotated). seq is bumped on every write to a row, to
-- MAX(seq)+1 inside the writing transaction, so a reader can pick up changes
-- made by other processes with "WHERE seq > last seen".
CREATE TABLE tokens (
	id          TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 12),
	user        TEXT    NOT NULL,
	user_key    TEXT    NOT NULL,  -- strings.ToLower(user), for case-insensitive matching
	name        TEXT    NOT NULL,
	description TEXT    NOT NULL DEFAULT '',
	secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),  -- SHA-256 of the whole token
	hint        TEXT    NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	expires_at  INTEGER,
	revoked_at  INTEGER,
	rotated_at  INTEGER,
	seq         INTEGER NOT NULL
) STRICT;

-- A user can't have two unrevoked tokens with the same name.
CREATE UNIQUE INDEX tokens_user_key_name_unrevoked ON tokens (user_key, name) WHERE revoked_at IS NULL;
CREATE INDEX tokens_user_key ON tokens (user_key);
CREATE INDEX tokens_seq ON tokens (seq);
