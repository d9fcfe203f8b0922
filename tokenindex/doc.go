// Package tokenindex is the in-memory index of tokens and group
// memberships that the gate reads on every request, and the change feed
// that keeps it in step with a token store, whichever database the store
// keeps its tokens in.
//
// A backend implements Feed; a Follower reads it and applies what it says
// to an Index and its Members. The backend's own write methods may also
// apply their changes at once (Index.Apply), so that a caller sees its
// write in the next look-up.
//
// # The contract
//
// A Follower over a Feed that keeps the backend's guarantees below keeps
// these four properties, which the suite in package feedtest checks
// against any backend:
//
//  1. Every committed change is delivered exactly in commit order, or the
//     index resynchronises: a Follower applies the changes of each Changes
//     call in version order, and when the feed answers ErrResync it
//     replaces the whole index with a Snapshot.
//  2. Applying a change twice is harmless: a change whose version is not
//     newer than what the index holds for that token is ignored.
//  3. A change made straight in the database (an operator's SQL, another
//     process) reaches the index: the backend versions such a change as it
//     versions its own writes (a trigger, or the same column its writes
//     set), so Changes returns it.
//  4. A restart of the feed loses nothing: a Follower started at a version
//     it saved (NewFollower's since) receives every change committed after
//     it, or resynchronises.
//
// # What a backend must guarantee
//
//   - Versions strictly increase in commit order: a change committed after
//     another has a greater Version. SQLite's single writer gets this from
//     seq = MAX(seq)+1 under the write lock; a server with concurrent
//     writers gets it from a commit-ordered counter bumped by a trigger (a
//     sequence read at commit under a lock, or a transaction's commit
//     position), never from a value taken before the commit.
//   - A change visible at version v stays visible to Changes(since) for
//     every since < v, until a newer change to the same token replaces it
//     (changes to one token may be coalesced into the newest).
//   - Changes returns ErrResync when it cannot serve since (the history was
//     truncated, the database was replaced by an older copy, since is above
//     every committed version); it never silently skips.
//   - Group memberships carry no version: a Batch whose Members is not nil
//     holds every membership, and replaces them all.
//
// A backend may also implement Waker to say "something changed" between
// the Follower's polls (SQLite polls PRAGMA data_version; PostgreSQL would
// LISTEN for a NOTIFY).
package tokenindex
