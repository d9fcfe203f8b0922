// Command gentokens prints random API tokens for the load benchmark, one a
// line: tokens with the right shape (prefix, 12-character id, 43-character
// secret, correct CRC-32 checksum) that no store has issued, so the gate must
// look each one up before refusing it, mixed with a share of malformed ones
// (broken checksum, truncated, bad alphabet) that it can refuse without a
// lookup.
//
//	go run ./bench/gentokens -n 20000 -prefix caddytok -malformed 0.1 > wrong-tokens.txt
//
// The well-formed ones come from token.Generate, the same code that
// issues real tokens; with 60 random bits of id and 256 of secret, none of
// them matches a token in the store under test.
package main

import (
	"bufio"
	"crypto/rand"
	"flag"
	"fmt"
	"math/big"
	"os"

	"github.com/apitoken/caddy-apitoken/token"
)

func main() {
	n := flag.Int("n", 20000, "number of tokens to print")
	prefix := flag.String("prefix", token.DefaultPrefix, "token prefix")
	malformed := flag.Float64("malformed", 0.1, "share of malformed tokens (0 to 1)")
	flag.Parse()
	if *n < 0 || *malformed < 0 || *malformed > 1 {
		fmt.Fprintln(os.Stderr, "gentokens: -n must be >= 0 and -malformed within [0, 1]")
		os.Exit(2)
	}
	if err := token.ValidPrefix(*prefix); err != nil {
		fmt.Fprintln(os.Stderr, "gentokens:", err)
		os.Exit(2)
	}

	w := bufio.NewWriter(os.Stdout)
	bad := int(float64(*n)**malformed + 0.5)
	for i := 0; i < *n; i++ {
		_, tok, err := token.Generate(*prefix)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gentokens:", err)
			os.Exit(1)
		}
		// Spread the malformed ones evenly through the list.
		if bad > 0 && (i+1)*bad/(*n) != i*bad/(*n) {
			tok = mangle(tok, i)
			if _, ok := token.Parse(tok); ok {
				fmt.Fprintln(os.Stderr, "gentokens: a mangled token still parses:", tok)
				os.Exit(1)
			}
		} else if _, ok := token.Parse(tok); !ok {
			fmt.Fprintln(os.Stderr, "gentokens: a generated token does not parse:", tok)
			os.Exit(1)
		}
		fmt.Fprintln(w, tok)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "gentokens:", err)
		os.Exit(1)
	}
}

// mangle breaks a well-formed token in one of three ways, in turn.
func mangle(tok string, i int) string {
	b := []byte(tok)
	switch i % 3 {
	case 0: // a changed checksum digit: right shape, wrong checksum
		j := len(b) - 1 - randInt(6)
		if b[j] == 'A' {
			b[j] = 'B'
		} else {
			b[j] = 'A'
		}
		return string(b)
	case 1: // truncated
		return string(b[:len(b)-1-randInt(10)])
	default: // a character outside the secret's alphabet
		j := len(b) - 6 - 1 - randInt(43)
		b[j] = '-'
		return string(b)
	}
}

func randInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}
