package limit

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/policy"
)

var rateT0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// rateStep is a burst of calls in a rate limiter scenario: at rateT0+at,
// allowed calls for key that must succeed, then, if refused, one that must
// be refused with retry.
type rateStep struct {
	at      time.Duration
	key     uint64
	r       policy.Rate
	allowed int
	refused bool
	retry   time.Duration
}

func TestRateLimiter(t *testing.T) {
	perMin600 := policy.Rate{Events: 600, Per: time.Minute}
	perSec10 := policy.Rate{Events: 10, Per: time.Second}
	ms := time.Millisecond
	tests := []struct {
		name  string
		steps []rateStep
	}{
		{"burst of Events, then refusal", []rateStep{
			{at: 0, key: 1, r: perMin600, allowed: 600, refused: true, retry: 100 * ms},
		}},
		{"Retry-After is exact", []rateStep{
			{at: 0, key: 1, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: 40 * ms, key: 1, r: perSec10, refused: true, retry: 60 * ms},
			{at: 100*ms - 1, key: 1, r: perSec10, refused: true, retry: 1},
			{at: 100 * ms, key: 1, r: perSec10, allowed: 1, refused: true, retry: 100 * ms},
		}},
		{"partial refill", []rateStep{
			{at: 0, key: 1, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: 350 * ms, key: 1, r: perSec10, allowed: 3, refused: true, retry: 50 * ms},
		}},
		{"an idle period refills the whole burst, no more", []rateStep{
			{at: 0, key: 1, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: time.Hour, key: 1, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
		}},
		{"refusals consume nothing", []rateStep{
			{at: 0, key: 1, r: policy.Rate{Events: 1, Per: time.Second}, allowed: 1, refused: true, retry: time.Second},
			{at: 500 * ms, key: 1, r: policy.Rate{Events: 1, Per: time.Second}, refused: true, retry: 500 * ms},
			{at: 999 * ms, key: 1, r: policy.Rate{Events: 1, Per: time.Second}, refused: true, retry: ms},
			{at: time.Second, key: 1, r: policy.Rate{Events: 1, Per: time.Second}, allowed: 1, refused: true, retry: time.Second},
		}},
		{"distinct keys are independent", []rateStep{
			{at: 0, key: 1, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: 0, key: 2, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: 0, key: 1, r: perSec10, refused: true, retry: 100 * ms},
		}},
		{"a stricter rate applies at once", []rateStep{
			{at: 0, key: 1, r: policy.Rate{Events: 100, Per: time.Second}, allowed: 5},
			{at: 0, key: 1, r: policy.Rate{Events: 1, Per: time.Second}, refused: true, retry: 50 * ms},
			{at: 50 * ms, key: 1, r: policy.Rate{Events: 1, Per: time.Second}, allowed: 1, refused: true, retry: time.Second},
		}},
		{"uneven interval truncates to the nanosecond", []rateStep{
			{at: 0, key: 1, r: policy.Rate{Events: 3, Per: time.Second}, allowed: 3, refused: true, retry: 4*333_333_333 - time.Second},
		}},
		{"unlimited allows everything", []rateStep{
			{at: 0, key: 1, r: policy.Rate{}, allowed: 10_000},
			{at: 0, key: 1, r: policy.Rate{Events: -5, Per: time.Second}, allowed: 10_000},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewRateLimiter(0)
			for i, st := range tt.steps {
				now := rateT0.Add(st.at)
				for j := range st.allowed {
					if d, ok := l.Allow(st.key, st.r, now); !ok {
						t.Fatalf("step %d: call %d of %d for key %d refused (retry %v)", i, j+1, st.allowed, st.key, d)
					}
				}
				if !st.refused {
					continue
				}
				if d, ok := l.Allow(st.key, st.r, now); ok || d != st.retry {
					t.Errorf("step %d: Allow(%d, %v, +%v) = %v, %v; want %v, false",
						i, st.key, st.r, st.at, d, ok, st.retry)
				}
			}
		})
	}
}

func TestRateLimiterSteady(t *testing.T) {
	tests := []struct {
		name  string
		r     policy.Rate
		burst bool // use up the burst first
	}{
		{"at the rate from idle", policy.Rate{Events: 600, Per: time.Minute}, false},
		{"at the rate after the burst", policy.Rate{Events: 600, Per: time.Minute}, true},
		{"one per period", policy.Rate{Events: 1, Per: time.Hour}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewRateLimiter(0)
			interval := tt.r.Per / time.Duration(tt.r.Events)
			if tt.burst {
				for range tt.r.Events {
					l.Allow(7, tt.r, rateT0)
				}
			}
			for i := 1; i <= 3*tt.r.Events; i++ {
				now := rateT0.Add(time.Duration(i) * interval)
				if d, ok := l.Allow(7, tt.r, now); !ok {
					t.Fatalf("request %d at the rate refused (retry %v)", i, d)
				}
				if !tt.burst {
					continue
				}
				if d, ok := l.Allow(7, tt.r, now); ok || d != interval {
					t.Fatalf("second request at instant %d: %v, %v; want %v, false", i, d, ok, interval)
				}
			}
		})
	}
}

func TestRateLimiterLen(t *testing.T) {
	l := NewRateLimiter(0)
	l.Allow(1, policy.Rate{}, rateT0)
	if n := l.Len(); n != 0 {
		t.Errorf("unlimited rate recorded a key: Len = %d", n)
	}
	l.Allow(1, policy.Rate{Events: 1, Per: time.Second}, rateT0)
	l.Allow(1, policy.Rate{Events: 1, Per: time.Second}, rateT0)
	l.Allow(2, policy.Rate{Events: 1, Per: time.Second}, rateT0)
	if n := l.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
}

func TestRateLimiterBounded(t *testing.T) {
	const maxKeys, flood = 1000, 100_000
	r := policy.Rate{Events: 5, Per: time.Hour}
	tests := []struct {
		name string
		step time.Duration
	}{
		{"all at one instant", 0},
		{"over two hours, keys going idle", 2 * time.Hour / flood},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const hot = 1 << 62
			l := NewRateLimiter(maxKeys)
			for range 5 {
				l.Allow(hot, policy.Rate{Events: 5, Per: 24 * time.Hour}, rateT0)
			}
			now := rateT0
			for i := range flood {
				now = now.Add(tt.step)
				if _, ok := l.Allow(uint64(i), r, now); !ok {
					t.Fatalf("new key %d refused", i)
				}
			}
			if n := l.Len(); n > maxKeys {
				t.Errorf("Len = %d after %d keys, want <= %d", n, flood, maxKeys)
			}
			if _, ok := l.Allow(hot, policy.Rate{Events: 5, Per: 24 * time.Hour}, now); ok {
				t.Error("key that used its burst was forgotten in the flood: allowed again")
			}
		})
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	const workers, perWorker = 8, 1000
	l := NewRateLimiter(500)
	r := policy.Rate{Events: 100, Per: time.Minute}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if _, ok := l.Allow(1<<62, r, rateT0); ok {
					allowed.Add(1)
				}
				l.Allow(uint64(w*perWorker+i), policy.Rate{Events: 1, Per: time.Millisecond}, rateT0)
				_ = l.Len()
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 100 {
		t.Errorf("%d requests of %d allowed at one instant, want the burst of 100", n, workers*perWorker)
	}
	if n := l.Len(); n > 500 {
		t.Errorf("Len = %d, want <= 500", n)
	}
}

func TestRateLimiterAllocs(t *testing.T) {
	l := NewRateLimiter(0)
	r := policy.Rate{Events: 10, Per: time.Second}
	const key = 0x0123456789abcdef
	l.Allow(key, r, rateT0)
	now := rateT0
	tests := []struct {
		name string
		f    func()
	}{
		{"allowed", func() { now = now.Add(time.Second); l.Allow(key, r, now) }},
		{"refused", func() {
			for range 20 {
				l.Allow(key, r, now)
			}
		}},
		{"unlimited", func() { l.Allow(key+1, policy.Rate{}, now) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("Allow (%s) on an existing key allocates %v times, want 0", tt.name, n)
			}
		})
	}
}

func BenchmarkRateLimiterAllow(b *testing.B) {
	l := NewRateLimiter(0)
	r := policy.Rate{Events: 600, Per: time.Minute}
	keys := make([]uint64, 1024)
	for i := range keys {
		keys[i] = rand.Uint64() >> 4 // as a token's 60-bit key
		l.Allow(keys[i], r, rateT0)
	}
	now := rateT0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		now = now.Add(100 * time.Microsecond)
		l.Allow(keys[i&(len(keys)-1)], r, now)
		i++
	}
}
