//go:build cgo

package tokenstore

import (
	"fmt"
	"testing"
)

// benchStore returns a store holding 1000 tokens and the secret of one.
func benchStore(b *testing.B) (*Store, string) {
	b.Helper()
	s := openStore(b, b.TempDir()+"/tokens.db", Options{PollInterval: -1})
	var secret string
	for i := range 1000 {
		_, secret = mustCreate(b, s, NewToken{User: fmt.Sprintf("user%d", i%50), Name: fmt.Sprintf("token%d", i)})
	}
	return s, secret
}

func BenchmarkLookupHit(b *testing.B) {
	s, secret := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Lookup(secret); !ok {
			b.Fatal("Lookup failed")
		}
	}
}

// BenchmarkLookupMiss: a well-formed token (valid checksum) with an unknown
// id. It should cost what a hit costs.
func BenchmarkLookupMiss(b *testing.B) {
	s, _ := benchStore(b)
	token := unknownIDToken(b, s)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Lookup(token); ok {
			b.Fatal("Lookup succeeded")
		}
	}
}

// BenchmarkParseMalformed: the costliest malformed token, one whose
// checksum alone is wrong.
func BenchmarkParseMalformed(b *testing.B) {
	token := fixedToken(b, DefaultPrefix)
	token = token[:len(token)-1] + "x"
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Parse(token); ok {
			b.Fatal("Parse succeeded")
		}
	}
}
