-- 0005: the user name a request presented with another user's token.
--
--   claimed_user  audit.Event.ClaimedUser: set only when the token was
--                 identified and the name presented is not its owner's
--                 (user holds the owner); '' otherwise
ALTER TABLE audit_events ADD COLUMN claimed_user TEXT NOT NULL DEFAULT '';
