// Package keytable is a hash table from uint64 keys to small values, for
// the state the gate keeps per token or client and reads on every request
// (the token index's positions, the rate limiter's times, the usage
// tracker's records, the throttle's entries).
//
// A Go map suits it well while it is in the CPU's caches and TLB. But a
// server makes system calls between two requests, and where each of them
// flushes the TLB (page table isolation without PCID, as on many virtual
// machines) a request pays a page walk for every page it touches. A
// look-up in a Go map of more than eight entries reads four allocations
// on as many pages: the map's header, its directory, the table and the
// group. A Table is one array of slots, each a key and its value, probed
// linearly from the key's Fibonacci hash: a look-up reads the Table
// itself, usually embedded in its owner, and then a cache line or two of
// one page. BenchmarkGet measures the difference (its after_syscall
// cases).
//
// A Table is not safe for concurrent use; its owners lock.
package keytable

// slot is a key and its value; key 0 marks an empty slot (the key 0
// itself is kept in Table.zero).
type slot[V any] struct {
	key uint64
	val V
}

// minSlots is the size of a table's first array.
const minSlots = 8

// Table maps uint64 keys to values of type V. The zero value is an empty
// table ready to use.
//
// The slots are at most three quarters full, so that a look-up of an
// absent key, which probes up to the next empty slot, stays short: such
// look-ups are common (a token not yet tracked, an unknown token).
type Table[V any] struct {
	slots   []slot[V] // len is 0 or a power of two
	shift   uint      // 64 - log2(len(slots)): home(key) = hash(key) >> shift
	n       int       // keys in slots
	zero    V         // the value of key 0, if hasZero
	hasZero bool
}

// Make returns a table with room for n keys before it grows.
func Make[V any](n int) Table[V] {
	var t Table[V]
	if n > 0 {
		t.resize(slotsFor(n))
	}
	return t
}

// slotsFor returns the number of slots that hold n keys within the load
// bound.
func slotsFor(n int) int {
	size := minSlots
	for size*3/4 < n {
		size *= 2
	}
	return size
}

// Hash is the multiplicative (Fibonacci) hash of key: key times 2^64/φ.
// Its top bits, Hash(key) >> (64 - bits), pick one of 2^bits slots or
// shards, spreading keys that count up as well as random ones; its low
// bits are poor. Every table and sharded structure keyed by a uint64
// uses it.
func Hash(key uint64) uint64 {
	return key * 0x9e3779b97f4a7c15
}

// home returns the slot at which key's probe starts.
func (t *Table[V]) home(key uint64) int {
	return int(Hash(key) >> t.shift)
}

// find returns the index of key's slot, or of the empty slot where it
// would go; found says which. key is not 0, and slots not empty.
func (t *Table[V]) find(key uint64) (i int, found bool) {
	mask := len(t.slots) - 1
	for i = t.home(key); ; i = (i + 1) & mask {
		switch t.slots[i].key {
		case key:
			return i, true
		case 0:
			return i, false
		}
	}
}

// Len returns the number of keys in t.
func (t *Table[V]) Len() int {
	if t.hasZero {
		return t.n + 1
	}
	return t.n
}

// Get returns key's value and whether t holds key.
func (t *Table[V]) Get(key uint64) (V, bool) {
	if p := t.Ptr(key); p != nil {
		return *p, true
	}
	var none V
	return none, false
}

// Ptr returns a pointer to key's value for updating it in place, or nil
// if t does not hold key. The pointer is valid until the next Put or
// Delete.
func (t *Table[V]) Ptr(key uint64) *V {
	if key == 0 {
		if t.hasZero {
			return &t.zero
		}
		return nil
	}
	if t.n == 0 {
		return nil
	}
	if i, found := t.find(key); found {
		return &t.slots[i].val
	}
	return nil
}

// Put sets key's value to v.
func (t *Table[V]) Put(key uint64, v V) {
	if key == 0 {
		t.zero, t.hasZero = v, true
		return
	}
	if len(t.slots) == 0 {
		t.resize(minSlots)
	}
	i, found := t.find(key)
	if !found && t.n+1 > len(t.slots)*3/4 {
		t.resize(len(t.slots) * 2)
		i, _ = t.find(key)
	}
	if !found {
		t.n++
	}
	t.slots[i] = slot[V]{key: key, val: v}
}

// Delete removes key, if t holds it.
func (t *Table[V]) Delete(key uint64) {
	if key == 0 {
		var none V
		t.zero, t.hasZero = none, false
		return
	}
	if t.n == 0 {
		return
	}
	i, found := t.find(key)
	if !found {
		return
	}
	// Backward-shift deletion: move up each key after the hole whose
	// probe passes the hole, so that no probe meets an empty slot before
	// its key. There are no tombstones to clean up later.
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].key != 0; j = (j + 1) & mask {
		// The key at j may fill the hole at i unless its home lies
		// cyclically within (i, j].
		if h := t.home(t.slots[j].key); (j-h)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot[V]{}
	t.n--
}

// All calls yield for each key and value in t, in no particular order,
// until it returns false. yield must not change t.
func (t *Table[V]) All(yield func(uint64, V) bool) {
	if t.hasZero && !yield(0, t.zero) {
		return
	}
	for i := range t.slots {
		if s := &t.slots[i]; s.key != 0 && !yield(s.key, s.val) {
			return
		}
	}
}

// resize moves the keys into a new array of size slots.
func (t *Table[V]) resize(size int) {
	old := t.slots
	t.slots = make([]slot[V], size)
	t.shift = 64
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	for i := range old {
		if s := &old[i]; s.key != 0 {
			j, _ := t.find(s.key)
			t.slots[j] = *s
		}
	}
}
