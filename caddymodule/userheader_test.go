package caddymodule

import (
	"net/url"
	"strings"
	"testing"
)

func TestUserEncoding(t *testing.T) {
	tests := []struct {
		name, user        string
		raw, percent, ext string
	}{
		{"ascii", "alice", "alice", "alice", "UTF-8''alice"},
		{"email", "alice@example.com", "alice@example.com", "alice@example.com", "UTF-8''alice%40example.com"},
		{"umlaut", "jürgen", "jürgen", "j%C3%BCrgen", "UTF-8''j%C3%BCrgen"},
		{"space and euro", "€ rates", "€ rates", "%E2%82%AC%20rates", "UTF-8''%E2%82%AC%20rates"},
		{"percent and plus", "a+b%41", "a+b%41", "a%2Bb%2541", "UTF-8''a+b%2541"},
		{"cjk", "山田", "山田", "%E5%B1%B1%E7%94%B0", "UTF-8''%E5%B1%B1%E7%94%B0"},
		{"quote and backslash", `o'neil\x`, `o'neil\x`, `o'neil\x`, "UTF-8''o%27neil%5Cx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				enc  UserEncoding
				want string
			}{{"", tt.raw}, {UserEncodingRaw, tt.raw}, {UserEncodingPercent, tt.percent}, {UserEncodingRFC8187, tt.ext}} {
				if got := c.enc.encode(tt.user); got != c.want {
					t.Errorf("%q.encode(%q) = %q, want %q", c.enc, tt.user, got, c.want)
				}
			}
			// Both a URI decoder and a form decoder give the name back,
			// and the encoded value is printable ASCII: ISO-8859-1 reads it
			// as it is.
			pct := UserEncodingPercent.encode(tt.user)
			if got, err := url.PathUnescape(pct); err != nil || got != tt.user {
				t.Errorf("PathUnescape(%q) = %q, %v", pct, got, err)
			}
			if got, err := url.QueryUnescape(pct); err != nil || got != tt.user {
				t.Errorf("QueryUnescape(%q) = %q, %v", pct, got, err)
			}
			ext := strings.TrimPrefix(UserEncodingRFC8187.encode(tt.user), "UTF-8''")
			if got, err := url.PathUnescape(ext); err != nil || got != tt.user {
				t.Errorf("PathUnescape(%q) = %q, %v", ext, got, err)
			}
			for _, v := range []string{pct, ext} {
				for i := 0; i < len(v); i++ {
					if v[i] <= ' ' || v[i] >= 0x7f {
						t.Errorf("%q holds byte %#x", v, v[i])
					}
				}
			}
		})
	}
}

func TestHandlerValidateUserHeaderEncoding(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		err  string
	}{
		{"percent", Handler{Passwords: PasswordsBlock, UserHeader: "X-Remote-User", UserHeaderEncoding: UserEncodingPercent}, ""},
		{"unknown", Handler{Passwords: PasswordsBlock, UserHeader: "X-Remote-User", UserHeaderEncoding: "latin1"}, `user_header_encoding "latin1": must be`},
		{"without user_header", Handler{Passwords: PasswordsBlock, UserHeaderEncoding: UserEncodingPercent}, "needs user_header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Validate() = %v, want %q", err, tt.err)
			}
		})
	}
}
