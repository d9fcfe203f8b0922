-- 0004: summaries of refusals beyond the audit detail limit.
--
-- A summary is an audit_events row of a request type (auth_failed,
-- password_passed, denied, would_deny) whose count is the number of
-- refusals it stands for; its time is the end of their window. It carries
-- their most frequent client addresses and presented users:
--   top_clients  JSON array of audit.Tally, most frequent first
--                ([{"value":"203.0.113.7","count":4120}, …]), '' on other rows
--   top_users    the same for the users presented
ALTER TABLE audit_events ADD COLUMN top_clients TEXT NOT NULL DEFAULT ''
	CHECK (top_clients = '' OR json_type(top_clients) = 'array');
ALTER TABLE audit_events ADD COLUMN top_users   TEXT NOT NULL DEFAULT ''
	CHECK (top_users = '' OR json_type(top_users) = 'array');
