-- 0003: the audit trail, per-token usage, and the expiry warning mark.
--
-- Times are unix milliseconds, as in tokens. Text columns hold '' rather
-- than NULL when a field does not apply.

-- One row per audit.Event. id is the rowid, never reused (AUTOINCREMENT:
-- pruning may delete the newest rows too when their time is old), so it
-- orders the events as they were stored and is the query cursor. Events
-- outlive tokens and group memberships: no foreign keys.
CREATE TABLE audit_events (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	time      INTEGER NOT NULL,
	type      TEXT    NOT NULL,
	outcome   TEXT    NOT NULL DEFAULT '',
	reason    TEXT    NOT NULL DEFAULT '',
	user      TEXT    NOT NULL DEFAULT '',
	user_key  TEXT    NOT NULL DEFAULT '',  -- strings.ToLower(user), for filtering
	token_id  TEXT    NOT NULL DEFAULT '',
	scheme    TEXT    NOT NULL DEFAULT '',
	client_ip TEXT    NOT NULL DEFAULT '',
	method    TEXT    NOT NULL DEFAULT '',
	host      TEXT    NOT NULL DEFAULT '',
	path      TEXT    NOT NULL DEFAULT '',  -- without the query string
	status    INTEGER NOT NULL DEFAULT 0,
	actor     TEXT    NOT NULL DEFAULT '',
	changed   TEXT    NOT NULL DEFAULT '' CHECK (changed = '' OR json_type(changed) = 'array'),
	count     INTEGER NOT NULL DEFAULT 0,
	grp       TEXT    NOT NULL DEFAULT '',
	rule      TEXT    NOT NULL DEFAULT ''
) STRICT;

-- time serves pruning; the others serve the query filters newest first
-- (the id is the rowid, so each index is walked in id order).
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_token_id ON audit_events (token_id, id);
CREATE INDEX audit_events_user_key ON audit_events (user_key, id);
CREATE INDEX audit_events_type ON audit_events (type, id);
CREATE INDEX audit_events_client_ip ON audit_events (client_ip, id);

-- What is known of each token's use, flushed from memory now and then.
-- Writing it does not bump tokens.seq: usage is not part of the index.
--   recent_ips  JSON array of {"ip":"192.0.2.1","last_seen":<unix ms>},
--               most recent first, distinct ips, at most audit.MaxRecentIPs
CREATE TABLE token_usage (
	token_id     TEXT    NOT NULL PRIMARY KEY REFERENCES tokens (id) ON DELETE CASCADE,
	last_used_at INTEGER,
	last_ip      TEXT    NOT NULL DEFAULT '',
	use_count    INTEGER NOT NULL DEFAULT 0,
	recent_ips   TEXT    NOT NULL DEFAULT '[]' CHECK (json_type(recent_ips) = 'array')
) STRICT;

-- When the "expiring soon" warning went out for the token's current expiry;
-- NULL: not yet. Changing the expiry or rotating the token clears it.
ALTER TABLE tokens ADD COLUMN expiry_notified_at INTEGER;

CREATE INDEX tokens_expiring ON tokens (expires_at)
	WHERE revoked_at IS NULL AND expiry_notified_at IS NULL AND expires_at IS NOT NULL;
