package policy

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

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
