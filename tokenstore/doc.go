// Package tokenstore keeps personal API tokens in SQLite and answers the
// gateway's question "which token is this?" from memory.
//
// # Tokens
//
// A token's format (its parts, checksum and hash) is package token's:
// Create and Rotate issue tokens with token.Generate, and the store keeps
// only token.Hash of each; the secret is shown once.
//
// # Storage
//
// Tokens live in one STRICT SQLite table in WAL mode, written through a
// single connection in BEGIN IMMEDIATE transactions and read through a
// separate query-only pool. The schema is created and upgraded by the
// embedded migrations in migrations/, tracked in PRAGMA user_version; a
// database written by a newer build is refused.
//
// # Rules and groups
//
// A token may carry rules (storage.Token.AllowedIPs, Scope, RateLimit), checked with
// the policy package's parsers when written and stored in canonical form.
// Groups and their members live in the same file (AddMember, RemoveMember):
// the gateway's holders list names users and "group:<name>" entries, and
// asks GroupsOf on every request.
//
// # Audit trail, usage and expiry warnings
//
// The same file keeps the audit trail (audit_events), what is known of each
// token's use (token_usage) and whether a token's coming expiry has been
// warned about. The write methods take an *event.Event and store it in the
// transaction of the change it records, so the trail can't miss a change
// or record one that did not happen; a call that changes nothing (revoking
// a revoked token, adding an existing member) stores no event. Request
// events and usage arrive in batches from the audit package (AppendAudit,
// FlushUsage); QueryAudit pages through the trail newest first, and
// PruneAudit deletes old events in short transactions. No secret, and no
// hash of one, is ever written to the trail. ClaimExpiring lets a warning
// go out once per token and expiry, however many processes share the
// database.
//
// # The hot path
//
// Open loads every token, revoked ones included, into an in-memory index
// (package tokenindex, which every backend shares),
// with its rules parsed once (prefixes, compiled scope, rate) and shared by
// every token with the same rules, and every group membership into a second
// one. Lookup and GroupsOf answer from those indexes only: no database
// access, no allocation, and for Lookup a constant-time hash comparison
// whose cost does not depend on whether the id exists. Writes made through
// a Store update its indexes as soon as they commit; writes made by other
// processes sharing the file are picked up by a tokenindex.Follower over
// the store's feed, which watches PRAGMA data_version and reads the rows
// whose seq is above the last it saw (Options.PollInterval).
package tokenstore
