package policy

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var rateT0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr string // a part of the message after `rate "in": `
	}{
		{in: "600/1m", want: Rate{600, time.Minute}},
		{in: "10/s", want: Rate{10, time.Second}},
		{in: "100/1h", want: Rate{100, time.Hour}},
		{in: "5/30s", want: Rate{5, 30 * time.Second}},
		{in: "3/1h30m", want: Rate{3, 90 * time.Minute}},
		{in: "1/.5s", want: Rate{1, 500 * time.Millisecond}},
		{in: "2/ms", want: Rate{2, time.Millisecond}},
		{in: "1/µs", want: Rate{1, time.Microsecond}},
		{in: "007/m", want: Rate{7, time.Minute}},
		{in: "1000/1us", want: Rate{1000, time.Microsecond}},

		{in: "", wantErr: "want <events>/<period>"},
		{in: "abc", wantErr: "want <events>/<period>"},
		{in: "600", wantErr: "want <events>/<period>"},
		{in: "/1m", wantErr: "want <events>/<period>"},
		{in: "600/", wantErr: "want <events>/<period>"},
		{in: "0/1m", wantErr: "events must be positive"},
		{in: "-1/1m", wantErr: `events "-1" is not a decimal number`},
		{in: "+1/1m", wantErr: `events "+1" is not a decimal number`},
		{in: "1.5/1m", wantErr: "not a decimal number"},
		{in: " 600/1m", wantErr: "not a decimal number"},
		{in: "99999999999999999999/1h", wantErr: "events: value out of range"},
		{in: "600/0s", wantErr: "period must be positive"},
		{in: "600/-1m", wantErr: "must be an unsigned duration"},
		{in: "600/+1m", wantErr: "must be an unsigned duration"},
		{in: "600/xyz", wantErr: "period: time: unknown unit"},
		{in: "600/1m ", wantErr: "period: time: unknown unit"},
		{in: "600/1m/1s", wantErr: "period: time:"},
		{in: "600/1d", wantErr: `unknown unit "d"`},
		{in: "2/1ns", wantErr: "more than one event per nanosecond"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.wantErr != "" {
				prefix := "rate " + strconv.Quote(tt.in) + ": "
				if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRate(%q) = %v, %v; want an error %q…%q", tt.in, got, err, prefix, tt.wantErr)
				}
				if got != (Rate{}) {
					t.Errorf("error came with rate %+v", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseRate(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRateString(t *testing.T) {
	tests := []struct {
		r    Rate
		want string
	}{
		{Rate{600, time.Minute}, "600/1m"},
		{Rate{10, time.Second}, "10/1s"},
		{Rate{100, time.Hour}, "100/1h"},
		{Rate{5, 30 * time.Second}, "5/30s"},
		{Rate{1, 90 * time.Second}, "1/90s"},
		{Rate{2, 36 * time.Hour}, "2/36h"},
		{Rate{5, 1500 * time.Millisecond}, "5/1500ms"},
		{Rate{1, time.Microsecond + 1}, "1/1001ns"},
		{Rate{}, "unlimited"},
		{Rate{Events: -1, Per: time.Second}, "unlimited"},
		{Rate{Events: 1}, "unlimited"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Fatalf("%#v.String() = %q, want %q", tt.r, got, tt.want)
			}
			if tt.r.IsZero() {
				return
			}
			if back, err := ParseRate(tt.want); err != nil || back != tt.r {
				t.Errorf("ParseRate(%q) = %+v, %v; want %+v", tt.want, back, err, tt.r)
			}
		})
	}
}

// FuzzParseRate checks that ParseRate never panics, that a rate it accepts
// is limited, and that its String parses back to the same Rate.
func FuzzParseRate(f *testing.F) {
	f.Add("600/1m")                     // the usual form
	f.Add("10/s")                       // a bare unit
	f.Add("3/1h30m")                    // a compound period
	f.Add("1/.5s")                      // a fractional period
	f.Add("1/µs")                       // a non-ASCII unit
	f.Add("0/1m")                       // zero events
	f.Add("600/-1m")                    // a negative period
	f.Add("2/1ns")                      // faster than one per nanosecond
	f.Add("99999999999999999999/1h")    // events out of range
	f.Add("1/2562047h47m16.854775807s") // the longest duration
	f.Add("1/2562047h47m16.854775808s") // one past it
	f.Add("/")                          // nothing either side
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if r != (Rate{}) {
				t.Fatalf("error %v came with rate %+v", err, r)
			}
			if !strings.HasPrefix(err.Error(), "rate "+strconv.Quote(s)+": ") {
				t.Fatalf("error %q does not name the value", err)
			}
			return
		}
		if r.IsZero() || int64(r.Per) < int64(r.Events) {
			t.Fatalf("ParseRate(%q) accepted %+v", s, r)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %+v, whose String %q parses to %+v, %v", s, r, r.String(), back, err)
		}
	})
}

// rateStep is a burst of calls in a rate limiter scenario: at rateT0+at,
// allowed calls for key that must succeed, then, if refused, one that must
// be refused with retry.
type rateStep struct {
	at      time.Duration
	key     uint64
	r       Rate
	allowed int
	refused bool
	retry   time.Duration
}

func TestRateLimiter(t *testing.T) {
	perMin600 := Rate{600, time.Minute}
	perSec10 := Rate{10, time.Second}
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
			{at: 0, key: 1, r: Rate{1, time.Second}, allowed: 1, refused: true, retry: time.Second},
			{at: 500 * ms, key: 1, r: Rate{1, time.Second}, refused: true, retry: 500 * ms},
			{at: 999 * ms, key: 1, r: Rate{1, time.Second}, refused: true, retry: ms},
			{at: time.Second, key: 1, r: Rate{1, time.Second}, allowed: 1, refused: true, retry: time.Second},
		}},
		{"distinct keys are independent", []rateStep{
			{at: 0, key: 1, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: 0, key: 2, r: perSec10, allowed: 10, refused: true, retry: 100 * ms},
			{at: 0, key: 1, r: perSec10, refused: true, retry: 100 * ms},
		}},
		{"a stricter rate applies at once", []rateStep{
			{at: 0, key: 1, r: Rate{100, time.Second}, allowed: 5},
			{at: 0, key: 1, r: Rate{1, time.Second}, refused: true, retry: 50 * ms},
			{at: 50 * ms, key: 1, r: Rate{1, time.Second}, allowed: 1, refused: true, retry: time.Second},
		}},
		{"uneven interval truncates to the nanosecond", []rateStep{
			{at: 0, key: 1, r: Rate{3, time.Second}, allowed: 3, refused: true, retry: 4*333_333_333 - time.Second},
		}},
		{"unlimited allows everything", []rateStep{
			{at: 0, key: 1, r: Rate{}, allowed: 10_000},
			{at: 0, key: 1, r: Rate{Events: -5, Per: time.Second}, allowed: 10_000},
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
		r     Rate
		burst bool // use up the burst first
	}{
		{"at the rate from idle", Rate{600, time.Minute}, false},
		{"at the rate after the burst", Rate{600, time.Minute}, true},
		{"one per period", Rate{1, time.Hour}, true},
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
	l.Allow(1, Rate{}, rateT0)
	if n := l.Len(); n != 0 {
		t.Errorf("unlimited rate recorded a key: Len = %d", n)
	}
	l.Allow(1, Rate{1, time.Second}, rateT0)
	l.Allow(1, Rate{1, time.Second}, rateT0)
	l.Allow(2, Rate{1, time.Second}, rateT0)
	if n := l.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
}

func TestRateLimiterBounded(t *testing.T) {
	const maxKeys, flood = 1000, 100_000
	r := Rate{5, time.Hour}
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
				l.Allow(hot, Rate{5, 24 * time.Hour}, rateT0)
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
			if _, ok := l.Allow(hot, Rate{5, 24 * time.Hour}, now); ok {
				t.Error("key that used its burst was forgotten in the flood: allowed again")
			}
		})
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	const workers, perWorker = 8, 1000
	l := NewRateLimiter(500)
	r := Rate{100, time.Minute}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if _, ok := l.Allow(1<<62, r, rateT0); ok {
					allowed.Add(1)
				}
				l.Allow(uint64(w*perWorker+i), Rate{1, time.Millisecond}, rateT0)
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
	r := Rate{10, time.Second}
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
		{"unlimited", func() { l.Allow(key+1, Rate{}, now) }},
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
	r := Rate{600, time.Minute}
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

// TestRateBucket: a Rate described as Jira Data Center's rate-limit headers
// describe a token bucket, never advertising more than the real rate.
func TestRateBucket(t *testing.T) {
	tests := []struct {
		rate                      string
		limit, fillRate, interval int64
	}{
		{"600/1m", 600, 10, 1},
		{"3/1m", 3, 1, 20},
		{"100/1h", 100, 1, 36},
		{"5/30s", 5, 1, 6},
		{"10/s", 10, 10, 1},
		{"7/3s", 7, 7, 3},
		{"10/500ms", 10, 20, 1},
		{"3/2500ms", 3, 1, 1},
		{"1/1500ms", 1, 1, 2},
		{"2/3500ms", 2, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.rate, func(t *testing.T) {
			r, err := ParseRate(tt.rate)
			if err != nil {
				t.Fatal(err)
			}
			limit, fill, interval := r.Bucket()
			if limit != tt.limit || fill != tt.fillRate || interval != tt.interval {
				t.Errorf("Bucket() = %d, %d/%ds, want %d, %d/%ds", limit, fill, interval, tt.limit, tt.fillRate, tt.interval)
			}
			if fill < 1 || interval < 1 {
				t.Errorf("fill rate %d and interval %d must be at least 1 (clients divide by them)", fill, interval)
			}
			if float64(fill)/float64(interval) > float64(r.Events)/r.Per.Seconds()*(1+1e-9) {
				t.Errorf("advertises %d/%ds, more than %s", fill, interval, r)
			}
		})
	}
	if l, f, i := (Rate{}).Bucket(); l != 0 || f != 0 || i != 0 {
		t.Errorf("unlimited Bucket() = %d %d %d, want zeros", l, f, i)
	}
}
