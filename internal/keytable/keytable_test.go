package keytable

import (
	"math/rand/v2"
	"syscall"
	"testing"
)

// check compares t with the model m in every way t can be read.
func check(t *testing.T, tab *Table[int], m map[uint64]int, step string) {
	t.Helper()
	if tab.Len() != len(m) {
		t.Fatalf("%s: Len %d, want %d", step, tab.Len(), len(m))
	}
	for k, v := range m {
		got, ok := tab.Get(k)
		if !ok || got != v {
			t.Fatalf("%s: Get(%#x) = %d, %v; want %d, true", step, k, got, ok, v)
		}
	}
	seen := 0
	tab.All(func(k uint64, v int) bool {
		seen++
		if want, ok := m[k]; !ok || want != v {
			t.Fatalf("%s: All yields %#x = %d; the model has %d, %v", step, k, v, want, ok)
		}
		return true
	})
	if seen != len(m) {
		t.Fatalf("%s: All yields %d keys, want %d", step, seen, len(m))
	}
	if n := len(tab.slots); n > 0 && tab.n > n*3/4 {
		t.Fatalf("%s: %d keys in %d slots, above the load bound", step, tab.n, n)
	}
}

// TestTableModel runs random puts, deletes and reads against a Go map.
// Keys come from small sets, so that probes collide, wrap around the end
// of the array and cross the holes deletes leave; key 0 is among them.
func TestTableModel(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 1))
		var tab Table[int]
		if seed%2 == 1 {
			tab = Make[int](int(seed))
		}
		m := map[uint64]int{}
		space := 4 + r.IntN(300)
		keyOf := func() uint64 {
			if r.IntN(8) == 0 {
				return r.Uint64() // a key the other steps will rarely meet
			}
			// Multiples of 2^58: Fibonacci hashing still spreads them.
			return uint64(r.IntN(space)) << (r.IntN(2) * 58)
		}
		for step := range 3000 {
			k := keyOf()
			switch op := r.IntN(10); {
			case op < 5:
				tab.Put(k, step)
				m[k] = step
			case op < 8:
				tab.Delete(k)
				delete(m, k)
			default:
				got, ok := tab.Get(k)
				want, wantOK := m[k]
				if got != want || ok != wantOK {
					t.Fatalf("seed %d step %d: Get(%#x) = %d, %v; want %d, %v", seed, step, k, got, ok, want, wantOK)
				}
				if p := tab.Ptr(k); (p != nil) != wantOK {
					t.Fatalf("seed %d step %d: Ptr(%#x) = %v, want a pointer: %v", seed, step, k, p, wantOK)
				} else if p != nil {
					*p = -step
					m[k] = -step
				}
			}
			if step%100 == 0 || step < 50 {
				check(t, &tab, m, "step")
			}
		}
		check(t, &tab, m, "end")
		for k := range m {
			tab.Delete(k)
		}
		check(t, &tab, map[uint64]int{}, "emptied")
	}
}

// TestDeleteKeepsChains deletes from the middle of one long probe chain,
// which must leave every later key of the chain reachable.
func TestDeleteKeepsChains(t *testing.T) {
	var tab Table[int]
	tab.resize(64)
	// Keys whose home is the last slot, so the chain wraps around.
	var keys []uint64
	for k := uint64(1); len(keys) < 20; k++ {
		if tab.home(k) == 63 {
			keys = append(keys, k)
		}
	}
	m := map[uint64]int{}
	for i, k := range keys {
		tab.Put(k, i)
		m[k] = i
	}
	if len(tab.slots) != 64 {
		t.Fatalf("the table grew to %d slots: the chain is not what the test means", len(tab.slots))
	}
	for _, i := range []int{0, 7, 19, 3} {
		tab.Delete(keys[i])
		delete(m, keys[i])
		check(t, &tab, m, "after a delete")
	}
}

func TestMakeReserves(t *testing.T) {
	tab := Make[int](1000)
	size := len(tab.slots)
	for k := range uint64(1000) {
		tab.Put(k+1, 1)
	}
	if len(tab.slots) != size {
		t.Errorf("Make(1000) gave %d slots, grown to %d by 1000 keys", size, len(tab.slots))
	}
	if empty := Make[int](0); empty.slots != nil {
		t.Errorf("Make(0) allocated %d slots", len(empty.slots))
	}
}

func TestAllStops(t *testing.T) {
	var tab Table[int]
	for k := range uint64(10) {
		tab.Put(k, int(k))
	}
	calls := 0
	tab.All(func(uint64, int) bool { calls++; return calls < 3 })
	if calls != 3 {
		t.Errorf("All went on after yield returned false: %d calls", calls)
	}
}

// benchKeys is how many keys the benchmarks hold: a gate's tokens.
const benchKeys = 10000

// benchLookups returns keys to look up, from benchKeys random ones, in an
// order that visits them all before coming back.
func benchLookups() (keys, order []uint64) {
	r := rand.New(rand.NewPCG(1, 2))
	keys = make([]uint64, benchKeys)
	for i := range keys {
		keys[i] = r.Uint64() >> 4 // 60 bits, as tokenstore's keys
	}
	order = append([]uint64(nil), keys...)
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return keys, order
}

// BenchmarkGet compares a look-up in a Table with one in a Go map, warm
// and after a system call (getppid, whose own cost is syscall_only): where
// system calls flush the TLB, as with page table isolation and no PCID,
// the map's four allocations cost four page walks and the Table's array
// one.
func BenchmarkGet(b *testing.B) {
	keys, order := benchLookups()
	m := make(map[uint64]int64)
	var tab Table[int64]
	for i, k := range keys {
		m[k] = int64(i)
		tab.Put(k, int64(i))
	}
	var sink int64
	get := map[string]func(uint64) int64{
		"map":   func(k uint64) int64 { return m[k] },
		"table": func(k uint64) int64 { v, _ := tab.Get(k); return v },
	}
	b.Run("syscall_only", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			syscall.Getppid()
		}
	})
	for _, syscalls := range []bool{false, true} {
		for _, name := range []string{"map", "table"} {
			label := name + "/warm"
			if syscalls {
				label = name + "/after_syscall"
			}
			f := get[name]
			b.Run(label, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if syscalls {
						syscall.Getppid()
					}
					sink += f(order[i%len(order)])
				}
			})
		}
	}
	if sink == -1 {
		b.Log(sink)
	}
}

// FuzzTable runs the operations a byte string spells against a Go map:
// each operation is three bytes, an opcode and a key from a small space
// (so that probes collide and deletes cross chains), key 0 among them.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 2, 0, 1, 1, 0, 2, 2, 0})
	f.Add([]byte{0, 0, 0, 0, 9, 0, 1, 0, 0, 2, 9, 0, 0, 255, 255})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var tab Table[int]
		m := map[uint64]int{}
		for i := 0; i+2 < len(ops); i += 3 {
			k := uint64(ops[i+1]) | uint64(ops[i+2]&3)<<62
			switch ops[i] % 3 {
			case 0:
				tab.Put(k, i)
				m[k] = i
			case 1:
				tab.Delete(k)
				delete(m, k)
			default:
				got, ok := tab.Get(k)
				if want, wantOK := m[k]; got != want || ok != wantOK {
					t.Fatalf("op %d: Get(%#x) = %d, %v; want %d, %v", i/3, k, got, ok, want, wantOK)
				}
			}
		}
		check(t, &tab, m, "end")
	})
}
