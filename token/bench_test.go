package token

import (
	"hash/crc32"
	"strconv"
	"testing"
)

// BenchmarkParse: a well-formed token, the longest and the shortest.
func BenchmarkParse(b *testing.B) {
	for _, prefix := range []string{"abcdefghijklmnop", DefaultPrefix, "a"} {
		token := fixedToken(b, prefix)
		b.Run(strconv.Itoa(len(token)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := Parse(token); !ok {
					b.Fatal("Parse failed")
				}
			}
		})
	}
}

// BenchmarkCRC32String: Parse's checksum over a token with the default
// prefix, against hash/crc32 over the same bytes as a []byte: the view of
// the string must cost nothing more.
func BenchmarkCRC32String(b *testing.B) {
	token := fixedToken(b, DefaultPrefix)
	s := token[:len(token)-checksumLen]
	buf := []byte(s)
	var sum uint32
	b.Run("crc32String", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sum += crc32String(s)
		}
	})
	b.Run("crc32.ChecksumIEEE", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sum += crc32.ChecksumIEEE(buf)
		}
	})
	if sum == 1 {
		b.Log(sum) // keeps sum live
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
