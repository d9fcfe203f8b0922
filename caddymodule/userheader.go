package caddymodule

import "strings"

// UserEncoding says how user_header carries the user name to the backend.
// Header values are bytes: a Go backend reads a UTF-8 name as it was sent,
// but Java servlet containers (Tomcat, and so Jira, Confluence and
// Bitbucket Data Center) and Python WSGI servers decode header values as
// ISO-8859-1, so a name such as "jürgen" arrives as "jÃ¼rgen" unless it is
// encoded and the backend decodes it.
type UserEncoding string

// User name encodings.
const (
	// UserEncodingRaw sends the name as it is (UTF-8).
	UserEncodingRaw UserEncoding = "raw"
	// UserEncodingPercent percent-encodes (RFC 3986, upper-case hex) every
	// byte of the name's UTF-8 that is not printable ASCII, and "%" and
	// "+", so that both a URI decoder and a form decoder (Java's
	// URLDecoder.decode(value, UTF_8)) give the name back. An ASCII name
	// without "%" or "+" is sent unchanged.
	UserEncodingPercent UserEncoding = "percent"
	// UserEncodingRFC8187 sends the name as an RFC 8187 ext-value:
	// UTF-8'' followed by the name with every byte that is not an
	// attr-char percent-encoded (as in a Content-Disposition filename*).
	UserEncodingRFC8187 UserEncoding = "rfc8187"
)

// encode returns user encoded as e says.
func (e UserEncoding) encode(user string) string {
	switch e {
	case UserEncodingPercent:
		return percentEncode(user, &percentKeep)
	case UserEncodingRFC8187:
		return "UTF-8''" + percentEncode(user, &attrChar)
	}
	return user
}

// valid reports whether e is an encoding ("" is raw).
func (e UserEncoding) valid() bool {
	switch e {
	case "", UserEncodingRaw, UserEncodingPercent, UserEncodingRFC8187:
		return true
	}
	return false
}

// percentKeep are the bytes UserEncodingPercent sends as they are.
var percentKeep = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = c != '%' && c != '+'
	}
	return t
}()

// attrChar are RFC 8187's attr-char: ALPHA / DIGIT / "!" / "#" / "$" /
// "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~".
var attrChar = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$&+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

// percentEncode percent-encodes every byte of s that keep does not mark,
// returning s itself if there is none.
func percentEncode(s string, keep *[256]bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !keep[s[i]] {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep[c] {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
