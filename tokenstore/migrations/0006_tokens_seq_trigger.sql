-- 0006: a fresh seq for any change to a token row, however it is made.
--
-- 0001 asks whoever writes a row to bump seq to MAX(seq)+1; the store
-- does, in the writing transaction. These triggers do it for a write that
-- does not (an operator's UPDATE or INSERT by plain SQL), so that every
-- process sees the change at its next poll (tokenindex's property 3). The
-- store's own writes already carry a seq above every other row's, so the
-- WHEN clauses leave them as they are.
--
-- Only the token's own columns count: expiry_notified_at (the expiry
-- warning's claim) and token_usage are bookkeeping and bump nothing.
--
-- A DELETE leaves no row to find: the index drops a deleted token only
-- when it reloads whole (a restart, a resync). Revoke rather than delete.
CREATE TRIGGER tokens_seq_after_update
AFTER UPDATE OF id, user, user_key, name, description, secret_hash, hint,
	created_at, updated_at, expires_at, revoked_at, rotated_at,
	allowed_ips, scope, rate_limit ON tokens
WHEN NEW.seq = OLD.seq
	OR NEW.seq <= COALESCE((SELECT seq FROM tokens WHERE id != NEW.id ORDER BY seq DESC LIMIT 1), 0)
BEGIN
	UPDATE tokens SET seq = (SELECT MAX(seq) + 1 FROM tokens) WHERE id = NEW.id;
END;

CREATE TRIGGER tokens_seq_after_insert
AFTER INSERT ON tokens
WHEN NEW.seq <= COALESCE((SELECT seq FROM tokens WHERE id != NEW.id ORDER BY seq DESC LIMIT 1), 0)
BEGIN
	UPDATE tokens SET seq = (SELECT MAX(seq) + 1 FROM tokens) WHERE id = NEW.id;
END;
