package policy

import "time"

// ReasonStoreStale: the gate's view of the token store is older than its
// bound allows (the store's poller cannot read the database), so a token
// revoked or restricted elsewhere might still be accepted here: every
// request that needs a token is refused until the view is current again.
const ReasonStoreStale Reason = "store_stale"

// CheckFreshness decides whether tokens may be judged on a view of the
// token store that is age old: ReasonStoreStale once age exceeds limit. A
// limit of zero or less sets no bound.
func CheckFreshness(age, limit time.Duration) Reason {
	if limit > 0 && age > limit {
		return ReasonStoreStale
	}
	return ReasonOK
}
