package policy

import (
	"runtime"
	"testing"
	"time"
)

func TestThrottleMemTmp(t *testing.T) {
	heap := func() uint64 { runtime.GC(); var m runtime.MemStats; runtime.ReadMemStats(&m); return m.HeapAlloc }
	h0 := heap()
	th := NewThrottle(ThrottleConfig{})
	now := throttleT0
	for round := 1; round <= 24; round++ {
		for i := range 1_000_000 {
			now = now.Add(time.Microsecond)
			th.Fail(floodAddr(round*1_000_000+i), now)
		}
		t.Logf("after %dM: Len %d heap %.1f MB (%.0f B/entry)", round, th.Len(), float64(heap()-h0)/1e6, float64(heap()-h0)/float64(th.Len()))
	}
	runtime.KeepAlive(th)
}
