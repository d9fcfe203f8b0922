-- 0002: per-token rules and group membership.
--
-- The rules are stored in their canonical forms, as the store validated
-- them; existing tokens get the defaults, which restrict nothing.
--   allowed_ips  JSON array of masked prefixes ("10.0.0.0/8", "10.1.2.3/32")
--   scope        JSON object of policy.Scope ({"read_only":true,"methods":["GET"]})
--   rate_limit   policy.Rate.String() ("600/1m"), '' for none
ALTER TABLE tokens ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]' CHECK (json_type(allowed_ips) = 'array');
ALTER TABLE tokens ADD COLUMN scope       TEXT NOT NULL DEFAULT '{}' CHECK (json_type(scope) = 'object');
ALTER TABLE tokens ADD COLUMN rate_limit  TEXT NOT NULL DEFAULT '';

-- Who is in which group, for the "group:<name>" entries of the holders
-- list. Rows carry no seq: the table is small, and readers in other
-- processes reload it whole when PRAGMA data_version changes (deletions
-- leave no row to find).
CREATE TABLE group_members (
	group_name TEXT    NOT NULL,
	user_key   TEXT    NOT NULL,  -- strings.ToLower(user), as tokens.user_key
	user       TEXT    NOT NULL,  -- the spelling first given
	added_at   INTEGER NOT NULL,  -- unix milliseconds
	PRIMARY KEY (group_name, user_key)
) STRICT;

CREATE INDEX group_members_user_key ON group_members (user_key);
