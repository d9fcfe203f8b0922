package limit

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var throttleT0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// failN records n failures from ip at now and checks that none but the
// last reports a block; it returns what the last one reported.
func failN(t *testing.T, th *Throttle, ip netip.Addr, now time.Time, n int) (time.Duration, bool) {
	t.Helper()
	for i := 1; i < n; i++ {
		if d, b := th.Fail(ip, "", now); b {
			t.Fatalf("failure %d of %d from %v blocked (retry %v)", i, n, ip, d)
		}
	}
	return th.Fail(ip, "", now)
}

// throttleStep is one call in a throttle scenario: fails failures from ip
// (or, with fails == 0, one Blocked check) at throttleT0+at, expecting the
// last call to answer blocked and retry.
type throttleStep struct {
	at      time.Duration
	ip      string
	fails   int
	blocked bool
	retry   time.Duration
}

func TestThrottle(t *testing.T) {
	const a, b = "192.0.2.1", "192.0.2.2"
	s := time.Second
	tests := []struct {
		name  string
		conf  ThrottleConfig
		steps []throttleStep
	}{
		{"9 failures within a minute: not blocked", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 9},
			{at: 59 * s, ip: a},
		}},
		{"10 failures within a minute: the 10th blocks for 5m", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 9},
			{at: 59 * s, ip: a, fails: 1, blocked: true, retry: 5 * time.Minute},
			{at: 59 * s, ip: a, blocked: true, retry: 5 * time.Minute},
		}},
		{"10th failure 1ns before the window closes blocks", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 9},
			{at: time.Minute - 1, ip: a, fails: 1, blocked: true, retry: 5 * time.Minute},
		}},
		{"window expiry resets the count", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 9},
			{at: time.Minute, ip: a, fails: 9}, // a new window: 1..9
			{at: 2*time.Minute - 1, ip: a},
			{at: 2*time.Minute - 1, ip: a, fails: 1, blocked: true, retry: 5 * time.Minute},
		}},
		{"cool-down ends exactly after Cooldown", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 10, blocked: true, retry: 5 * time.Minute},
			{at: time.Minute, ip: a, blocked: true, retry: 4 * time.Minute},
			{at: 5*time.Minute - 1, ip: a, blocked: true, retry: 1},
			{at: 5 * time.Minute, ip: a},
		}},
		{"failures during a block neither count nor extend it", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 10, blocked: true, retry: 5 * time.Minute},
			{at: 2 * time.Minute, ip: a, fails: 1, blocked: true, retry: 3 * time.Minute},
			{at: 5 * time.Minute, ip: a},
		}},
		{"after the cool-down counting starts afresh", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 10, blocked: true, retry: 5 * time.Minute},
			{at: 5 * time.Minute, ip: a, fails: 9},
			{at: 5 * time.Minute, ip: a},
			{at: 5*time.Minute + s, ip: a, fails: 1, blocked: true, retry: 5 * time.Minute},
		}},
		{"addresses count separately", ThrottleConfig{}, []throttleStep{
			{at: 0, ip: a, fails: 10, blocked: true, retry: 5 * time.Minute},
			{at: 0, ip: b},
			{at: 0, ip: b, fails: 9},
		}},
		{"custom rules", ThrottleConfig{MaxFailures: 3, Window: 10 * s, Cooldown: 30 * s}, []throttleStep{
			{at: 0, ip: a, fails: 2},
			{at: 10 * s, ip: a, fails: 2},
			{at: 19 * s, ip: a, fails: 1, blocked: true, retry: 30 * s},
			{at: 49 * s, ip: a},
		}},
		{"MaxFailures 1 blocks on the first failure", ThrottleConfig{MaxFailures: 1}, []throttleStep{
			{at: 0, ip: a},
			{at: 0, ip: a, fails: 1, blocked: true, retry: 5 * time.Minute},
		}},
		{"negative MaxFailures disables", ThrottleConfig{MaxFailures: -1}, []throttleStep{
			{at: 0, ip: a, fails: 1000},
			{at: 0, ip: a},
		}},
		{"huge cool-down saturates", ThrottleConfig{MaxFailures: 1, Cooldown: 1<<63 - 1}, []throttleStep{
			{at: 0, ip: a, fails: 1, blocked: true, retry: time.Duration(1<<63-1) - time.Duration(throttleT0.UnixNano())},
			{at: 100 * 365 * 24 * time.Hour, ip: a, blocked: true,
				retry: time.Duration(1<<63-1) - time.Duration(throttleT0.UnixNano()) - 100*365*24*time.Hour},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := NewThrottle(tt.conf)
			for i, st := range tt.steps {
				ip, now := netip.MustParseAddr(st.ip), throttleT0.Add(st.at)
				var retry time.Duration
				var blocked bool
				op := "Blocked"
				if st.fails > 0 {
					op = "Fail"
					retry, blocked = failN(t, th, ip, now, st.fails)
				} else {
					retry, blocked = th.Blocked(ip, "", now)
				}
				if retry != st.retry || blocked != st.blocked {
					t.Errorf("step %d: %s(%s, +%v) = %v, %v; want %v, %v",
						i, op, st.ip, st.at, retry, blocked, st.retry, st.blocked)
				}
			}
		})
	}
}

// TestThrottleKeys checks which addresses share a count: blocking a must
// block b exactly when they are the same network.
func TestThrottleKeys(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"IPv6 same /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"IPv6 neighbouring /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv6 zones ignored", "fe80::1%eth0", "fe80::2%eth1", true},
		{"IPv4 mapped is IPv4", "192.0.2.7", "::ffff:192.0.2.7", true},
		{"IPv4 mapped both ways", "::ffff:192.0.2.7", "192.0.2.7", true},
		{"IPv4 by /32", "192.0.2.7", "192.0.2.8", false},
		{"IPv4 not in ::/64", "0.0.0.0", "::", false},
		{"IPv4-compatible is IPv6", "::192.0.2.7", "192.0.2.7", false},
		{"loopbacks differ", "127.0.0.1", "::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := NewThrottle(ThrottleConfig{MaxFailures: 1})
			a, b := netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b)
			if _, blocked := th.Fail(a, "", throttleT0); !blocked {
				t.Fatalf("Fail(%v) did not block", a)
			}
			if _, blocked := th.Blocked(b, "", throttleT0); blocked != tt.same {
				t.Errorf("after blocking %v, Blocked(%v) = %v, want %v", a, b, blocked, tt.same)
			}
			th.Fail(b, "", throttleT0)
			// An address key and an address-and-user key each.
			if got, want := th.Len(), map[bool]int{true: 2, false: 4}[tt.same]; got != want {
				t.Errorf("Len = %d after failures from both, want %d", got, want)
			}
		})
	}
}

// floodAddr returns the i-th address of a flood: alternately an IPv4
// address and an IPv6 address in a /64 of its own.
func floodAddr(i int) netip.Addr {
	if i%2 == 0 {
		return netip.AddrFrom4([4]byte{10, byte(i >> 17), byte(i >> 9), byte(i >> 1)})
	}
	var a [16]byte
	a[0], a[1] = 0x20, 0x01
	binary.BigEndian.PutUint32(a[4:], uint32(i))
	a[15] = 1
	return netip.AddrFrom16(a)
}

func TestThrottleFlood(t *testing.T) {
	const flood, maxTracked = 1_000_000, 10_000
	tests := []struct {
		name string
		step time.Duration // between flood failures
	}{
		{"all at one instant", 0},
		{"over two minutes, windows expiring", 2 * time.Minute / flood},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := NewThrottle(ThrottleConfig{MaxTracked: maxTracked})
			blocked := netip.MustParseAddr("203.0.113.7")
			nine := netip.MustParseAddr("2001:db8:bad::1")
			if _, b := failN(t, th, blocked, throttleT0, 10); !b {
				t.Fatal("10 failures did not block")
			}
			failN(t, th, nine, throttleT0, 9)

			now := throttleT0
			for i := range flood {
				now = now.Add(tt.step)
				th.Fail(floodAddr(i), "", now)
			}
			if n := th.Len(); n > maxTracked {
				t.Errorf("Len = %d after %d distinct addresses, want <= %d", n, flood, maxTracked)
			}
			if d, b := th.Blocked(blocked, "", now); !b || d != 5*time.Minute-(now.Sub(throttleT0)) {
				t.Errorf("blocked address after the flood: Blocked = %v, %v; want true, %v",
					d, b, 5*time.Minute-now.Sub(throttleT0))
			}
			if tt.step == 0 {
				// Its window is still open: the flood must not have reset it.
				if _, b := th.Fail(nine, "", now); !b {
					t.Error("address with 9 failures was forgotten in the flood: 10th failure did not block")
				}
			}
		})
	}
}

// TestThrottleEvictsBlockedLast fills a tiny throttle with blocked entries
// and checks that a newcomer then replaces the one whose cool-down ends
// first, not a random one.
func TestThrottleEvictsBlockedLast(t *testing.T) {
	// Each client takes two entries, both blocked on the first failure.
	th := NewThrottle(ThrottleConfig{MaxFailures: 1, MaxFailuresPerAddress: 1, MaxTracked: 8})
	ips := make([]netip.Addr, 4)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		th.Fail(ips[i], "", throttleT0.Add(time.Duration(3-i)*time.Second)) // ips[3] blocked first
	}
	if th.Len() != 8 {
		t.Fatalf("Len = %d, want 8", th.Len())
	}
	th.Blocked(netip.MustParseAddr("192.0.2.99"), "", throttleT0) // a miss records nothing
	th.Fail(netip.MustParseAddr("192.0.2.100"), "", throttleT0.Add(4*time.Second))
	if th.Len() != 8 {
		t.Errorf("Len = %d after eviction, want 8", th.Len())
	}
	now := throttleT0.Add(5 * time.Second)
	for i, ip := range ips {
		_, b := th.Blocked(ip, "", now)
		if want := i != 3; b != want {
			t.Errorf("Blocked(%v) = %v, want %v", ip, b, want)
		}
	}
}

func TestThrottleConcurrent(t *testing.T) {
	const workers, perWorker = 8, 2000
	t.Run("exactly one failure tips the block", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{MaxFailures: workers * 10})
		shared := netip.MustParseAddr("198.51.100.1")
		var tipped atomic.Int32
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					if i%(perWorker/10) == 0 {
						if _, b := th.Fail(shared, "", throttleT0); b {
							tipped.Add(1)
						}
					}
					ip := floodAddr(w*perWorker + i)
					th.Fail(ip, "", throttleT0)
					th.Blocked(ip, "", throttleT0)
					th.Blocked(shared, "", throttleT0)
				}
			})
		}
		wg.Wait()
		if n := tipped.Load(); n != 1 {
			t.Errorf("%d of %d failures of the shared address reported a block, want exactly 1 (the last)",
				n, workers*10)
		}
		if _, b := th.Blocked(shared, "", throttleT0); !b {
			t.Error("shared address not blocked")
		}
		if got, want := th.Len(), 2*(workers*perWorker+1); got != want { // address and address-and-user keys
			t.Errorf("Len = %d, want %d", got, want)
		}
	})
	t.Run("eviction under contention spares the blocked", func(t *testing.T) {
		const maxTracked = 256
		th := NewThrottle(ThrottleConfig{MaxTracked: maxTracked})
		shared := netip.MustParseAddr("198.51.100.1")
		failN(t, th, shared, throttleT0, 10)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					now := throttleT0.Add(time.Duration(i) * time.Millisecond)
					ip := floodAddr(w*perWorker + i)
					th.Fail(ip, "", now)
					th.Blocked(ip, "", now)
					if _, b := th.Blocked(shared, "", now); !b {
						t.Errorf("shared address unblocked at +%v", now.Sub(throttleT0))
						return
					}
					_ = th.Len()
				}
			})
		}
		wg.Wait()
		if n := th.Len(); n > maxTracked {
			t.Errorf("Len = %d, want <= %d", n, maxTracked)
		}
	})
}

func TestThrottleAllocs(t *testing.T) {
	th := NewThrottle(ThrottleConfig{})
	hit := netip.MustParseAddr("2001:db8::1")
	failN(t, th, hit, throttleT0, 10)
	miss := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		name string
		f    func()
	}{
		{"Blocked hit", func() { th.Blocked(hit, "", throttleT0) }},
		{"Blocked miss", func() { th.Blocked(miss, "", throttleT0) }},
		{"Blocked with a user", func() { th.Blocked(hit, "Älice", throttleT0) }},
		{"Fail while blocked", func() { th.Fail(hit, "", throttleT0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("%s allocates %v times, want 0", tt.name, n)
			}
		})
	}
}

func BenchmarkThrottleBlocked(b *testing.B) {
	th := NewThrottle(ThrottleConfig{})
	ip := netip.MustParseAddr("2001:db8::1")
	for range 10 {
		th.Fail(ip, "", throttleT0)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, blocked := th.Blocked(ip, "", throttleT0); !blocked {
			b.Fatal("not blocked")
		}
	}
}

func BenchmarkThrottleBlockedParallel(b *testing.B) {
	th := NewThrottle(ThrottleConfig{})
	var n atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ip := floodAddr(int(n.Add(1)))
		for range 10 {
			th.Fail(ip, "", throttleT0)
		}
		for pb.Next() {
			if _, blocked := th.Blocked(ip, "", throttleT0); !blocked {
				b.Error("not blocked")
				return
			}
		}
	})
}

// BenchmarkThrottleBlockedMiss checks an address the throttle does not
// know: quiet, with no block in force (the usual case), and under attack,
// with a blocked network in every shard, so the lookup cannot be skipped.
func BenchmarkThrottleBlockedMiss(b *testing.B) {
	tests := []struct {
		name  string
		fails int
	}{
		{"quiet", 1},
		{"under_attack", 10},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			th := NewThrottle(ThrottleConfig{})
			for i := range 10_000 {
				for range tt.fails {
					th.Fail(floodAddr(i), "", throttleT0)
				}
			}
			ip := netip.MustParseAddr("192.0.2.1")
			b.ReportAllocs()
			for b.Loop() {
				if _, blocked := th.Blocked(ip, "", throttleT0); blocked {
					b.Fatal("blocked")
				}
			}
		})
	}
}

// BenchmarkThrottleFail is a flood of distinct addresses into a full
// throttle: every failure inserts and evicts.
func BenchmarkThrottleFail(b *testing.B) {
	th := NewThrottle(ThrottleConfig{MaxTracked: 10_000})
	ips := make([]netip.Addr, 1<<16)
	for i := range ips {
		ips[i] = floodAddr(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		th.Fail(ips[i&(len(ips)-1)], "", throttleT0)
		i++
	}
}

// BenchmarkThrottleFailFlood is the load benchmark's scenario (d): one
// failure from each of many addresses in 10.0.0.0/9, from every core,
// into a throttle of the default size, which the flood keeps full.
func BenchmarkThrottleFailFlood(b *testing.B) {
	th := NewThrottle(ThrottleConfig{})
	ips := make([]netip.Addr, 1<<20)
	for i := range ips {
		x := uint32(i) * 0x9e3779b1 // a bijection: the addresses are distinct
		ips[i] = netip.AddrFrom4([4]byte{10, byte(x>>16) & 0x7f, byte(x >> 8), byte(x)})
	}
	for i := range DefaultThrottleMaxTracked {
		th.Fail(ips[i], "", throttleT0)
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			th.Fail(ips[next.Add(1)&(1<<20-1)], "", throttleT0)
		}
	})
}

var baselineSink byte

// BenchmarkTokenCheckBaseline costs what checking a token costs: a SHA-256
// of a 70-byte token and a lookup of a 12-byte id in a 1000-entry map. The
// throttle's Blocked should cost a fraction of it.
func BenchmarkTokenCheckBaseline(b *testing.B) {
	m := make(map[string][32]byte, 1000)
	for i := range 1000 {
		m["tokenid"+strconv.Itoa(10000+i)] = [32]byte{byte(i)}
	}
	tok := []byte("caddytok_tokenid10500_" + string(make([]byte, 48)))
	if len(tok) != 70 {
		b.Fatalf("token is %d bytes", len(tok))
	}
	id := tok[9:21]
	b.ReportAllocs()
	for b.Loop() {
		sum := sha256.Sum256(tok)
		want, ok := m[string(id)]
		if !ok {
			b.Fatal("id not found")
		}
		baselineSink += sum[0] ^ want[0]
	}
}

// refThrottleInsert is the eviction scan as it was before insert lost its
// divisions, on a shard's entries and hand alone; TestThrottleEviction
// holds insert to it.
func refThrottleInsert(s *throttleShard, k throttleKey, now, window int64) int32 {
	cheaperThan := func(e, o *throttleEntry) bool {
		er, or := e.rank(now, window), o.rank(now, window)
		switch {
		case er != or:
			return er < or
		case er == 2:
			return e.blockedUntil < o.blockedUntil
		case e.failures != o.failures:
			return e.failures < o.failures
		}
		return e.windowStart < o.windowStart
	}
	e := throttleEntry{key: k, windowStart: now}
	victim, scanned := -1, 0
	for scanned < min(throttleScan, len(s.entries)) {
		i := (s.hand + scanned) % len(s.entries)
		scanned++
		if victim < 0 || cheaperThan(&s.entries[i], &s.entries[victim]) {
			victim = i
		}
		if s.entries[victim].rank(now, window) == 0 {
			break
		}
	}
	s.hand = (s.hand + scanned) % len(s.entries)
	s.entries[victim] = e
	return int32(victim)
}

// TestThrottleEviction checks that a full shard evicts the entry the
// reference scan picks and moves its hand as far, on shards of every
// small size holding random mixes of idle, counting and blocked entries,
// and that its index then maps every key held, and only those, to its
// entry.
func TestThrottleEviction(t *testing.T) {
	const window = int64(time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	now := throttleT0.UnixNano()
	for round := range 20_000 {
		n := 1 + rng.IntN(20)
		got := throttleShard{index: throttleIndex{seed: rng.Uint64()}, limit: n, hand: rng.IntN(n)}
		for i := range n {
			// IPv4, IPv6 and user keys, as addrKey and userKey make them.
			key := throttleKey{lo: 0xffff<<32 | uint64(i)}
			switch i % 3 {
			case 1:
				key = throttleKey{hi: uint64(i) << 40}
			case 2:
				key = throttleKey{hi: rng.Uint64(), lo: userKeyLo}
			}
			e := throttleEntry{key: key, failures: 1 + rng.Int32N(3)}
			switch rng.IntN(4) {
			case 0: // idle: the window closed
				e.windowStart = now - window - rng.Int64N(3)
			case 1, 2: // counting, often on ties
				e.windowStart = now - rng.Int64N(3)
			default: // blocked, or a block just over
				e.windowStart = now - window
				e.blockedUntil = now - 1 + rng.Int64N(3)
			}
			got.entries = append(got.entries, e)
			got.index.put(e.key, int32(i))
		}
		want := throttleShard{entries: slices.Clone(got.entries), limit: n, hand: got.hand}
		evicted := slices.Clone(got.entries)
		k := throttleKey{hi: uint64(round+1) << 20}
		switch round % 3 {
		case 1:
			k = throttleKey{lo: 0xffff<<32 | uint64(1000+round)}
		case 2:
			k = throttleKey{hi: rng.Uint64(), lo: userKeyLo}
		}
		gi, wi := got.insert(k, now, window), refThrottleInsert(&want, k, now, window)
		if gi != wi || got.hand != want.hand || !slices.Equal(got.entries, want.entries) {
			t.Fatalf("round %d (%d entries): insert took %d, hand %d; the reference took %d, hand %d",
				round, n, gi, got.hand, wi, want.hand)
		}
		if got.index.len() != n {
			t.Fatalf("round %d: the index holds %d keys for %d entries", round, got.index.len(), n)
		}
		for i, e := range got.entries {
			if j, ok := got.index.get(e.key); !ok || j != int32(i) {
				t.Fatalf("round %d: the index maps entry %d's key %v to %d, %v", round, i, e.key, j, ok)
			}
		}
		if _, ok := got.index.get(evicted[wi].key); ok && evicted[wi].key != k {
			t.Fatalf("round %d: the evicted key %v is still indexed", round, evicted[wi].key)
		}
	}
}

// TestThrottleUsers checks that failures count per address and claimed
// user, with a higher ceiling per address, so that one client failing as
// one user does not block the others behind its address; and that
// clients without a valid address neither share one key nor go unkeyed
// when they claim a user.
func TestThrottleUsers(t *testing.T) {
	nat := netip.MustParseAddr("192.0.2.1")
	other := netip.MustParseAddr("192.0.2.2")
	var none netip.Addr
	blocked := func(t *testing.T, th *Throttle, ip netip.Addr, user string, want bool) {
		t.Helper()
		if _, b := th.Blocked(ip, user, throttleT0); b != want {
			t.Errorf("Blocked(%v, %q) = %v, want %v", ip, user, b, want)
		}
	}

	t.Run("one user blocked, the others behind the address not", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{})
		for i := 1; i < 10; i++ {
			if _, b := th.Fail(nat, "git-bot", throttleT0); b {
				t.Fatalf("failure %d blocked", i)
			}
		}
		if d, b := th.Fail(nat, "git-bot", throttleT0); !b || d != 5*time.Minute {
			t.Fatalf("10th failure: %v, %v", d, b)
		}
		blocked(t, th, nat, "git-bot", true)
		blocked(t, th, nat, "GIT-Bot", true) // user names fold case
		blocked(t, th, nat, "alice", false)
		blocked(t, th, nat, "", false)
		blocked(t, th, other, "git-bot", false)
		if _, b := th.BlockedAddress(nat, throttleT0); b {
			t.Error("BlockedAddress = true for an address with one blocked user")
		}
		if _, b := th.BlockedUser(nat, "Git-Bot", throttleT0); !b {
			t.Error("BlockedUser = false for the blocked user")
		}
	})

	t.Run("the address ceiling stops a guesser rotating user names", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{})
		for i := range 49 {
			if _, b := th.Fail(nat, "user"+strconv.Itoa(i), throttleT0); b {
				t.Fatalf("failure %d blocked", i+1)
			}
		}
		if d, b := th.Fail(nat, "user49", throttleT0); !b || d != 5*time.Minute {
			t.Fatalf("50th failure from the address: %v, %v", d, b)
		}
		blocked(t, th, nat, "alice", true)
		blocked(t, th, nat, "", true)
		blocked(t, th, other, "alice", false)
		if d, b := th.BlockedAddress(nat, throttleT0); !b || d != 5*time.Minute {
			t.Errorf("BlockedAddress = %v, %v", d, b)
		}
		if _, b := th.BlockedUser(nat, "alice", throttleT0); b {
			t.Error("BlockedUser = true for a user that never failed")
		}
	})

	t.Run("configured address ceiling", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{MaxFailures: 3, MaxFailuresPerAddress: 4})
		for _, u := range []string{"a", "b", "c"} {
			th.Fail(nat, u, throttleT0)
		}
		blocked(t, th, nat, "d", false)
		th.Fail(nat, "d", throttleT0)
		blocked(t, th, nat, "e", true)
	})

	t.Run("unicode user names fold as strings.ToLower", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{MaxFailures: 1})
		th.Fail(nat, "ÄLICE", throttleT0)
		blocked(t, th, nat, "älice", true)
		blocked(t, th, nat, "alice", false)
	})

	t.Run("long user names fold too", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{MaxFailures: 1})
		th.Fail(nat, strings.Repeat("\u212a", 100), throttleT0) // Kelvin sign: folds to k, too long to hash on the stack
		blocked(t, th, nat, strings.Repeat("k", 100), true)
		blocked(t, th, nat, strings.Repeat("K", 100), true)
		blocked(t, th, nat, strings.Repeat("k", 99), false)
		th.Fail(nat, strings.Repeat("\u212a", 10)+"\xff", throttleT0) // invalid UTF-8 reads as U+FFFD
		blocked(t, th, nat, strings.Repeat("k", 10)+"\ufffd", true)
	})

	t.Run("no address: keyed by user alone", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{})
		for range 10 {
			th.Fail(none, "alice", throttleT0)
		}
		blocked(t, th, none, "alice", true)
		blocked(t, th, none, "bob", false)
		blocked(t, th, none, "", false)
		// A user key without an address is not the key of any address.
		blocked(t, th, nat, "alice", false)
		blocked(t, th, netip.IPv4Unspecified(), "alice", false)
	})

	t.Run("no address and no user: not throttled", func(t *testing.T) {
		th := NewThrottle(ThrottleConfig{MaxFailures: 1})
		for range 100 {
			if _, b := th.Fail(none, "", throttleT0); b {
				t.Fatal("a failure without address or user blocked")
			}
		}
		blocked(t, th, none, "", false)
		if n := th.Len(); n != 0 {
			t.Errorf("Len = %d, want 0", n)
		}
	})

	t.Run("many user names stay within MaxTracked", func(t *testing.T) {
		const maxTracked = 1000
		th := NewThrottle(ThrottleConfig{MaxTracked: maxTracked})
		for i := range 100_000 {
			th.Fail(floodAddr(i%50), "u"+strconv.Itoa(i), throttleT0)
		}
		if n := th.Len(); n > maxTracked {
			t.Errorf("Len = %d, want <= %d", n, maxTracked)
		}
	})
}
