// Package benchsizes holds the -apitoken.bench-sizes flag that the store
// benchmarks of caddymodule and tokenstore share: the token counts to
// build stores of. Large stores take a while to build (a million tokens:
// about 16 s), so the default is only the small one. The flag belongs to
// the test binary, so it goes after the package on the go test command
// line (go test stops reading its own flags at the first one it does not
// know):
//
//	go test -run XXX -bench . ./tokenstore -apitoken.bench-sizes=1000,1000000
package benchsizes

import (
	"flag"
	"strconv"
	"strings"
	"testing"
)

var sizes = flag.String("apitoken.bench-sizes", "1000",
	"comma-separated token counts for the store benchmarks (e.g. 1000,100000,1000000)")

// Sizes returns the token counts of -apitoken.bench-sizes, failing tb if
// the flag is not a list of positive whole numbers.
func Sizes(tb testing.TB) []int {
	tb.Helper()
	var out []int
	for f := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("-apitoken.bench-sizes %q: %q is not a positive whole number", *sizes, f)
		}
		out = append(out, n)
	}
	return out
}
