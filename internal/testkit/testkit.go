// Package testkit holds small helpers the tests of several packages share.
// Only tests import it.
package testkit

import (
	"database/sql"
	"sync"
	"testing"
	"time"
)

// Clock is a clock a test moves by hand; its Now can stand in for
// time.Now wherever a package takes a clock. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock that reads start until moved.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ScanRows reads every row of rows, whatever its columns, and calls f with
// the column names and each row's values (as database/sql scans them into
// an any). It closes rows and fails t on an error.
func ScanRows(t testing.TB, rows *sql.Rows, f func(cols []string, vals []any)) {
	t.Helper()
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		f(cols, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}
