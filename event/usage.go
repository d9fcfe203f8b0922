package event

import "time"

// IPSeen is a client IP and when a token was last used from it.
type IPSeen struct {
	IP       string    `json:"ip"`
	LastSeen time.Time `json:"last_seen"`
}

// MaxRecentIPs is how many distinct client IPs usage keeps per token.
const MaxRecentIPs = 5

// Usage is what is known of a token's use: stored totals, or a delta not
// yet flushed.
type Usage struct {
	TokenID    string
	LastUsedAt time.Time
	LastIP     string
	// Count is the number of uses (a delta, in a flush).
	Count int64
	// RecentIPs are the last distinct client IPs, most recent first, at
	// most MaxRecentIPs.
	RecentIPs []IPSeen
}
