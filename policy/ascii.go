package policy

// equalFoldASCII reports whether a and b are equal when ASCII letters are
// compared case-insensitively. Unlike strings.EqualFold it folds nothing
// else: in Unicode, ſ (long s) folds to s and K (Kelvin sign) to k, so
// "Baſic" would be "Basic". Auth schemes, methods and host names are
// ASCII, and anything else a client sends in their place is not them.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if c, d := a[i], b[i]; c != d && (c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z') {
			return false
		}
	}
	return true
}
