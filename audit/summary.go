package audit

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
)

// DetailLimit bounds how many refusals are recorded in full, so that a
// flood of them (tens of thousands a second of random tokens) cannot make a
// refusal cost more than an acceptance: a log line and a database row each.
//
// Time is cut into fixed windows of length Window, aligned to multiples of
// it since the Unix epoch (so to the wall clock, for a length that divides
// a day). In each window, the first Events events of each type and reason
// are recorded in full. The ones beyond are only counted, with their most
// frequent client addresses and presented users, and recorded as one
// summary event when the window ends (see event.Event.IsSummary). Budgets are
// per type and reason, so that a flood of unknown_token cannot hide a
// revoked token's use or a scope_denied.
//
// Only request events of the failure and denied classes (auth_failed,
// password_passed, denied, would_deny) are limited; successes and admin
// events are recorded as before.
//
// A DetailLimit without Events or without a Window, such as the zero one,
// records every event in full.
type DetailLimit struct {
	// Events is how many events of one type and reason are recorded in
	// full per window; 0 records them all.
	Events int
	// Window is the length of the windows.
	Window time.Duration
}

// Defaults of the api_tokens app's detail limit (the zero DetailLimit of
// this package records everything): a script failing a few times a second
// is still recorded in full, a flood writes about ten events a second per
// reason and one summary per reason and window.
const (
	DefaultDetailEvents = 100
	DefaultDetailWindow = 10 * time.Second
)

// Top lists.
const (
	// TopReported is how many client addresses and users a summary lists.
	TopReported = 5
	// topTracked is how many the sketch behind a list follows.
	topTracked = 8
	// maxBudgets bounds the (type, reason) pairs followed. Reasons come
	// from a closed set, so this is never reached; an event beyond it is
	// recorded in full rather than counted without bound.
	maxBudgets = 256
)

// limited reports whether events of type t are subject to the detail limit.
func limited(t event.Type) bool {
	c := t.Class()
	return c == event.ClassFailure || c == event.ClassDenied
}

// budgetKey names a budget: events of one type and reason.
type budgetKey struct {
	typ    event.Type
	reason string
}

// budgets holds the detail budgets of a Recorder. All of its work on the
// request path is O(1) under mu and allocates nothing once a (type, reason)
// pair has been seen.
type budgets struct {
	events int
	window int64 // nanoseconds

	mu         sync.Mutex
	keys       map[budgetKey]*budget
	closed     bool  // Close ran: every event is recorded in full
	summarized int64 // events ever counted into a summary instead of recorded
}

// budget is one (type, reason) pair's state in its current window.
type budget struct {
	index      int64 // the window: unix nanoseconds / window, floored
	detailed   int   // events recorded in full in the window
	suppressed int   // events counted, not recorded
	// first is the first suppressed event; a summary keeps those of its
	// fields that every suppressed event shared (mixed says which not).
	first   event.Event
	mixed   sharedFields
	clients topK
	users   topK
}

// sharedFields is a set of the Event fields a summary keeps when all its
// events agree on them.
type sharedFields uint8

const (
	sharedTokenID sharedFields = 1 << iota
	sharedScheme
	sharedMethod
	sharedHost
	sharedPath
	sharedRule
	sharedStatus
	sharedClaimedUser
)

func newBudgets(l DetailLimit) *budgets {
	if l.Events <= 0 || l.Window <= 0 {
		return nil
	}
	return &budgets{events: l.Events, window: int64(l.Window), keys: make(map[budgetKey]*budget)}
}

// windowIndex returns the window t falls in.
func (b *budgets) windowIndex(t time.Time) int64 {
	ns := t.UnixNano()
	i := ns / b.window
	if ns%b.window < 0 {
		i--
	}
	return i
}

// windowEnd returns when window i ends.
func (b *budgets) windowEnd(i int64) time.Time {
	return time.Unix(0, (i+1)*b.window).UTC()
}

// admit decides whether e (of a limited type, at time e.Time) is recorded
// in full, and otherwise counts it. If e is the first event of its pair in
// a new window and the pair's previous window had suppressed events, it
// also returns that window's summary, to be recorded before e.
func (b *budgets) admit(e *event.Event) (full bool, summary event.Event, due bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return true, event.Event{}, false
	}
	idx := b.windowIndex(e.Time)
	s := b.keys[budgetKey{e.Type, e.Reason}]
	if s == nil {
		if len(b.keys) >= maxBudgets {
			return true, event.Event{}, false
		}
		s = &budget{index: idx}
		b.keys[budgetKey{e.Type, e.Reason}] = s
	}
	if idx > s.index { // a late event (idx < s.index) counts in the current window
		if s.suppressed > 0 {
			summary, due = s.summary(b.windowEnd(s.index)), true
		}
		s.reset(idx)
	}
	if s.detailed < b.events {
		s.detailed++
		return true, summary, due
	}
	s.count(e)
	b.summarized++
	return false, summary, due
}

// flush returns the summaries of the windows that ended at or before now,
// or, with all set, of every window (cut short at now), oldest first.
func (b *budgets) flush(now time.Time, all bool) []event.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []event.Event
	for _, s := range b.keys {
		if s.suppressed == 0 {
			continue
		}
		end := b.windowEnd(s.index)
		if end.After(now) {
			if !all {
				continue
			}
			end = now
		}
		out = append(out, s.summary(end))
		s.suppressed = 0 // detailed stays: the window may go on
		s.clients, s.users = topK{}, topK{}
	}
	slices.SortFunc(out, func(a, b event.Event) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Type, b.Type), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// close returns every pending summary, cut short at now, and makes every
// later event go through in full.
func (b *budgets) close(now time.Time) []event.Event {
	out := b.flush(now, true)
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return out
}

// reset starts window idx.
func (s *budget) reset(idx int64) {
	*s = budget{index: idx}
}

// count adds e to the window's suppressed events.
func (s *budget) count(e *event.Event) {
	if s.suppressed == 0 {
		s.first = *e
		s.mixed = 0
	} else {
		f := &s.first
		diff := func(bit sharedFields, differs bool) {
			if s.mixed&bit == 0 && differs {
				s.mixed |= bit
			}
		}
		diff(sharedTokenID, e.TokenID != f.TokenID)
		diff(sharedScheme, e.Scheme != f.Scheme)
		diff(sharedMethod, e.Method != f.Method)
		diff(sharedHost, e.Host != f.Host)
		diff(sharedPath, e.Path != f.Path)
		diff(sharedRule, e.Rule != f.Rule)
		diff(sharedStatus, e.Status != f.Status)
		diff(sharedClaimedUser, e.ClaimedUser != f.ClaimedUser)
	}
	s.suppressed++
	s.clients.add(e.ClientIP)
	s.users.add(e.User)
}

// summary builds the event standing for the window's suppressed events,
// timed at end.
func (s *budget) summary(end time.Time) event.Event {
	f := &s.first
	e := event.Event{
		Time:    end,
		Type:    f.Type,
		Outcome: f.Outcome,
		Reason:  f.Reason,
		Count:   s.suppressed,
	}
	keep := func(bit sharedFields, dst *string, v string) {
		if s.mixed&bit == 0 {
			*dst = v
		}
	}
	keep(sharedTokenID, &e.TokenID, f.TokenID)
	keep(sharedScheme, &e.Scheme, f.Scheme)
	keep(sharedMethod, &e.Method, f.Method)
	keep(sharedHost, &e.Host, f.Host)
	keep(sharedPath, &e.Path, f.Path)
	keep(sharedRule, &e.Rule, f.Rule)
	keep(sharedClaimedUser, &e.ClaimedUser, f.ClaimedUser)
	if s.mixed&sharedStatus == 0 {
		e.Status = f.Status
	}
	e.TopClients = s.clients.top(TopReported)
	e.TopUsers = s.users.top(TopReported)
	if len(e.TopClients) > 0 {
		e.ClientIP = e.TopClients[0].Value
	}
	if len(e.TopUsers) > 0 {
		e.User = e.TopUsers[0].Value
	}
	return e
}

// topK finds the most frequent values of a stream in fixed memory: the
// Space-Saving algorithm (Metwally, Agrawal and El Abbadi, 2005). It
// follows topTracked values; a new value takes the place of the least
// counted one, inheriting its count as its possible overcount. Any value
// seen more than 1/topTracked of the time is among those followed.
type topK struct {
	n     int
	items [topTracked]struct {
		value string
		count int // an upper bound of the value's occurrences
		over  int // how much count may overcount
	}
}

// add counts one occurrence of v; the empty value is not counted.
func (t *topK) add(v string) {
	if v == "" {
		return
	}
	least := 0
	for i := range t.n {
		it := &t.items[i]
		if it.value == v {
			it.count++
			return
		}
		if it.count < t.items[least].count {
			least = i
		}
	}
	if t.n < len(t.items) {
		t.items[t.n].value, t.items[t.n].count, t.items[t.n].over = v, 1, 0
		t.n++
		return
	}
	it := &t.items[least]
	it.value, it.over, it.count = v, it.count, it.count+1
}

// top returns at most k values, most frequent first, each with the number
// of occurrences it certainly had: exact while at most topTracked distinct
// values were seen, a lower bound beyond. Ties go to the smaller value.
func (t *topK) top(k int) []event.Tally {
	if t.n == 0 {
		return nil
	}
	out := make([]event.Tally, t.n)
	for i := range t.n {
		out[i] = event.Tally{Value: t.items[i].value, Count: t.items[i].count - t.items[i].over}
	}
	slices.SortFunc(out, func(a, b event.Tally) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Value, b.Value))
	})
	return out[:min(k, len(out))]
}
