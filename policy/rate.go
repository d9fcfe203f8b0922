package policy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Rate is a number of events per period, such as 600 per minute. The zero
// Rate (or any Rate with Events or Per not positive) means unlimited.
type Rate struct {
	Events int
	Per    time.Duration
}

// IsZero reports whether r is unlimited.
func (r Rate) IsZero() bool { return r.Events <= 0 || r.Per <= 0 }

// ParseRate parses "<events>/<period>": a positive decimal number of
// events, a slash, and a positive period in time.ParseDuration syntax, in
// which a bare unit counts as one of it. For example "600/1m", "10/s",
// "100/1h", "5/30s". The period divided by the events must be at least a
// nanosecond.
func ParseRate(s string) (Rate, error) {
	ev, per, ok := strings.Cut(s, "/")
	if !ok || ev == "" || per == "" {
		return Rate{}, fmt.Errorf("rate %q: want <events>/<period>, such as 600/1m", s)
	}
	for _, c := range []byte(ev) {
		if c < '0' || c > '9' {
			return Rate{}, fmt.Errorf("rate %q: events %q is not a decimal number", s, ev)
		}
	}
	n, err := strconv.Atoi(ev)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: events: %w", s, errors.Unwrap(err))
	}
	if n == 0 {
		return Rate{}, fmt.Errorf("rate %q: events must be positive", s)
	}
	if c := per[0]; c != '.' && (c < '0' || c > '9') {
		if c == '+' || c == '-' {
			return Rate{}, fmt.Errorf("rate %q: period %q must be an unsigned duration", s, per)
		}
		per = "1" + per // a bare unit: "s" is "1s"
	}
	d, err := time.ParseDuration(per)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: period: %w", s, err)
	}
	if d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: period must be positive", s)
	}
	if int64(d) < int64(n) {
		return Rate{}, fmt.Errorf("rate %q: more than one event per nanosecond", s)
	}
	return Rate{Events: n, Per: d}, nil
}

// String formats r as ParseRate reads it, with the period in its largest
// whole unit ("600/1m", "10/1s", "90/90s"). An unlimited Rate formats as
// "unlimited", which ParseRate does not accept.
func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	units := []struct {
		d    time.Duration
		name string
	}{
		{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"},
		{time.Millisecond, "ms"}, {time.Microsecond, "us"}, {time.Nanosecond, "ns"},
	}
	for _, u := range units {
		if r.Per%u.d == 0 {
			return strconv.Itoa(r.Events) + "/" + strconv.FormatInt(int64(r.Per/u.d), 10) + u.name
		}
	}
	panic("unreachable")
}

// Bucket describes r the way Jira Data Center's rate-limit headers
// describe a token bucket, for clients that read them: at most limit
// requests at once (the burst, Events), and fillRate more every interval
// seconds. Both are at least 1 (clients divide by them) and as small as
// the rate allows: 600/1m is 10 every second, 100/1h one every 36 seconds.
// A period that is not a whole number of seconds is rounded so that the
// rate described is never above r. An unlimited r gives zeros.
func (r Rate) Bucket() (limit, fillRate, interval int64) {
	if r.IsZero() {
		return 0, 0, 0
	}
	limit = int64(r.Events)
	if r.Per%time.Second == 0 {
		secs := int64(r.Per / time.Second)
		g := gcd(limit, secs)
		return limit, limit / g, secs / g
	}
	perSecond := float64(r.Events) / r.Per.Seconds()
	if perSecond >= 1 {
		return limit, int64(perSecond), 1
	}
	return limit, 1, int64(math.Ceil(1 / perSecond))
}

// gcd returns the greatest common divisor of two positive numbers.
func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
