package tokenstore

import "github.com/apitoken/caddy-apitoken/storage"

// The store reads and writes package storage's records, which every
// backend shares; these aliases keep their names short here.
type (
	State     = storage.State
	Token     = storage.Token
	NewToken  = storage.NewToken
	Patch     = storage.Patch
	Filter    = storage.Filter
	Entry     = storage.Entry
	Member    = storage.Member
	GroupInfo = storage.GroupInfo
)

// States of a token (see storage.State).
const (
	StateActive  = storage.StateActive
	StateExpired = storage.StateExpired
	StateRevoked = storage.StateRevoked
)
