package limit

import (
	"strconv"
	"testing"
)

func TestShardLimits(t *testing.T) {
	for _, total := range []int{1, 2, 3, 63, 64, 65, 100, 10_000, 100_000, 1_000_000} {
		t.Run(strconv.Itoa(total), func(t *testing.T) {
			limits := shardLimits(total)
			n := len(limits)
			if n&(n-1) != 0 || n > maxShards {
				t.Errorf("%d shards, want a power of two <= %d", n, maxShards)
			}
			if total >= maxShards*minShardEntries && n != maxShards {
				t.Errorf("%d shards, want %d", n, maxShards)
			}
			sum := 0
			for _, l := range limits {
				if l < 1 || l < minShardEntries && n > 1 {
					t.Errorf("shard limit %d with %d shards", l, n)
				}
				sum += l
			}
			if sum != total {
				t.Errorf("limits add up to %d, want %d", sum, total)
			}
		})
	}
}
