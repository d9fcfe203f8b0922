// Package limit holds the gate's stateful limits: the Throttle, which
// blocks clients that keep failing authentication, and the RateLimiter,
// which holds each token to its policy.Rate. Both keep their state in
// memory, per instance, bounded and sharded; neither keeps a clock nor
// starts a goroutine: every method takes now. The decisions without state
// stay in package policy.
package limit

import "math"

// addSat returns a+b (b >= 0), saturating at the largest int64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// maxShards bounds the number of shards of a Throttle or RateLimiter:
// enough that requests on different cores rarely meet on one lock.
// minShardEntries keeps small bounds in few shards, so that the clock
// hand has a choice of victims.
const (
	maxShards       = 64
	minShardEntries = 64
)

// shardLimits splits a bound of total entries over a power-of-two number
// of shards, at most maxShards and each of at least minShardEntries
// unless total is smaller; the limits add up to exactly total.
func shardLimits(total int) []int {
	n := maxShards
	for n > 1 && total/n < minShardEntries {
		n /= 2
	}
	limits := make([]int, n)
	for i := range limits {
		limits[i] = total / n
		if i < total%n {
			limits[i]++
		}
	}
	return limits
}
