package token

import (
	"strconv"
	"strings"
	"testing"
)

func TestKey(t *testing.T) {
	for _, id := range []string{"abcdefgh2345", "234567234567", "abcdefgh234", "abcdefgh23456", "", "Abcdefgh2345", "abcdefgh1345", "abcdefgh_345", "abcdefgh\xff345"} {
		if _, ok := Key(id); ok != ValidID(id) {
			t.Errorf("Key(%q) ok = %v, ValidID %v", id, ok, ValidID(id))
		}
	}
	for _, tt := range []struct {
		id  string
		key uint64
	}{
		{"aaaaaaaaaaaa", 0},
		{"aaaaaaaaaaab", 1},
		{"baaaaaaaaaaa", 1 << 55},
		{"777777777777", 1<<60 - 1},
	} {
		if key, ok := Key(tt.id); !ok || key != tt.key {
			t.Errorf("Key(%q) = %#x, %v; want %#x, true", tt.id, key, ok, tt.key)
		}
	}
}

// keyOf is Key for id, worked out apart from the package: the id's
// alphabet a-z2-7 is base 32 with the digits strconv reads as 0-9a-v.
func keyOf(t *testing.T, id string) uint64 {
	t.Helper()
	digits := strings.NewReplacer(strings.Split("a 0 b 1 c 2 d 3 e 4 f 5 g 6 h 7 i 8 j 9 k a l b m c n d o e p f q g r h s i t j u k v l w m x n y o z p 2 q 3 r 4 s 5 t 6 u 7 v", " ")...)
	key, err := strconv.ParseUint(digits.Replace(id), 32, 64)
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return key
}

func TestKeyBase32(t *testing.T) {
	for range 100 {
		id, _, err := Generate(DefaultPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := Key(id); !ok || got != keyOf(t, id) {
			t.Fatalf("Key(%q) = %d, %v; want %d, true", id, got, ok, keyOf(t, id))
		}
	}
	for _, id := range []string{"", "abcdefghijk", "abcdefghijklm", "ABCDEFGHIJKL", "abcdefghijk1", "abcdefghijk_"} {
		if got, ok := Key(id); got != 0 || ok {
			t.Errorf("Key(%q) = %d, %v; want 0, false for an id Parse refuses", id, got, ok)
		}
	}
	if got, _ := Key("777777777777"); got != 1<<60-1 {
		t.Errorf("Key of the largest id = %d, want 2^60-1", got)
	}
}
