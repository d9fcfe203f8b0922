package policy

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unsafe"
)

func basic(userPass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass))
}

func TestParseAuthorization(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		want    Credential
		wantErr error
	}{
		{name: "empty", header: "", want: Credential{}},
		{name: "basic", header: basic("alice:s3cret"), want: Credential{Scheme: SchemeBasic, User: "alice", Secret: "s3cret"}},
		{name: "basic scheme lowercase", header: "basic " + base64.StdEncoding.EncodeToString([]byte("a:b")), want: Credential{Scheme: SchemeBasic, User: "a", Secret: "b"}},
		{name: "basic scheme uppercase", header: "BASIC " + base64.StdEncoding.EncodeToString([]byte("a:b")), want: Credential{Scheme: SchemeBasic, User: "a", Secret: "b"}},
		{name: "basic several spaces", header: "Basic   " + base64.StdEncoding.EncodeToString([]byte("a:b")), want: Credential{Scheme: SchemeBasic, User: "a", Secret: "b"}},
		{name: "basic password with colons", header: basic("bob:a:b:c"), want: Credential{Scheme: SchemeBasic, User: "bob", Secret: "a:b:c"}},
		{name: "basic empty password", header: basic("bob:"), want: Credential{Scheme: SchemeBasic, User: "bob", Secret: ""}},
		{name: "basic empty user", header: basic(":tok"), want: Credential{Scheme: SchemeBasic, User: "", Secret: "tok"}},
		{name: "basic utf-8 user", header: basic("jürgen:x"), want: Credential{Scheme: SchemeBasic, User: "jürgen", Secret: "x"}},
		{name: "basic no colon", header: basic("alice"), wantErr: ErrMalformedBasic},
		{name: "basic bad base64", header: "Basic !!!!", wantErr: ErrMalformedBasic},
		{name: "basic unpadded base64", header: "Basic YTpiYw", wantErr: ErrMalformedBasic},
		{name: "basic no parameter", header: "Basic", wantErr: ErrMalformedBasic},
		{name: "bearer", header: "Bearer caddytok_abc", want: Credential{Scheme: SchemeBearer, Secret: "caddytok_abc"}},
		{name: "bearer lowercase", header: "bearer caddytok_abc", want: Credential{Scheme: SchemeBearer, Secret: "caddytok_abc"}},
		{name: "bearer empty", header: "Bearer ", wantErr: ErrEmptyBearer},
		{name: "bearer no parameter", header: "Bearer", wantErr: ErrEmptyBearer},
		{name: "bearer two words", header: "Bearer a b", wantErr: ErrEmptyBearer},
		{name: "digest", header: `Digest username="a"`, wantErr: ErrUnsupportedScheme},
		{name: "negotiate", header: "Negotiate YII=", wantErr: ErrUnsupportedScheme},
		{name: "no scheme", header: "caddytok_abc", wantErr: ErrUnsupportedScheme},
		{name: "basic prefix of longer scheme", header: "Basicx YTpi", wantErr: ErrUnsupportedScheme},
		{name: "too long", header: "Bearer " + strings.Repeat("a", MaxCredentialLength), wantErr: ErrCredentialTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.header)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseAuthorization(%q) error = %v, want %v", tt.header, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseAuthorization(%q) = %+v, want %+v", tt.header, got, tt.want)
			}
		})
	}
}

func TestBareToken(t *testing.T) {
	if c, err := BareToken(SchemeHeader, ""); err != nil || c.Scheme != SchemeNone {
		t.Errorf("BareToken(empty) = %+v, %v; want SchemeNone, nil", c, err)
	}
	if c, err := BareToken(SchemeQuery, "tok"); err != nil || c != (Credential{Scheme: SchemeQuery, Secret: "tok"}) {
		t.Errorf("BareToken(tok) = %+v, %v", c, err)
	}
	if _, err := BareToken(SchemeHeader, strings.Repeat("x", MaxCredentialLength+1)); !errors.Is(err, ErrCredentialTooLong) {
		t.Errorf("BareToken(long) error = %v, want ErrCredentialTooLong", err)
	}
}

func TestSchemeString(t *testing.T) {
	want := map[Scheme]string{SchemeNone: "none", SchemeBasic: "basic", SchemeBearer: "bearer", SchemeHeader: "header", SchemeQuery: "query"}
	for s, name := range want {
		if s.String() != name {
			t.Errorf("Scheme(%d).String() = %q, want %q", s, s.String(), name)
		}
	}
}

// FuzzParseAuthorization checks that the parser never panics, that it
// agrees with refParseAuthorization, that errors and credentials are
// exclusive, and that a Basic credential re-encodes to an equivalent
// header.
func FuzzParseAuthorization(f *testing.F) {
	f.Add(basic("alice:caddytok_x"))                                       // well-formed Basic
	f.Add("bEaReR caddytok_x")                                             // mixed-case scheme
	f.Add("Basic " + strings.Repeat("=", 8))                               // padding only
	f.Add("Basic Og==")                                                    // ":" alone: empty user and secret
	f.Add("Bearer \x00")                                                   // control byte in a token
	f.Add("Digest a")                                                      // unsupported scheme
	f.Add(" Basic YTpi")                                                   // leading space: no scheme
	f.Add("Basic   YTpi\r\nYw==")                                          // several spaces; CR LF inside the base64
	f.Add("Basic YTpiYw")                                                  // unpadded
	f.Add("Basic YTpi=")                                                   // stray padding
	f.Add("Basic\tYTpi")                                                   // a tab does not separate
	f.Add("Bearer a\tb")                                                   // a tab inside a token
	f.Add(basic(strings.Repeat("u", 10) + ":" + strings.Repeat("p", 500))) // past the stack buffer
	f.Add("Ba\u017fic YTpi")                                               // ſ folds to s, but not in ASCII
	f.Add(basic("a\u0085:b\xc2A"))                                         // a C1 control; 0xC2 before no continuation
	f.Add(basic("a:b\x1b"))                                                // an escape in the password
	f.Fuzz(func(t *testing.T, header string) {
		c, err := ParseAuthorization(header)
		if rc, rerr := refParseAuthorization(header); c != rc || err != rerr {
			t.Fatalf("ParseAuthorization(%q) = %+v, %v; the reference says %+v, %v", header, c, err, rc, rerr)
		}
		scheme, param, serr := SplitAuthorization(header)
		vc := Credential{Scheme: scheme, Secret: param}
		if scheme == SchemeBasic {
			var buf BasicBuffer
			vc.User, vc.Secret, serr = DecodeBasic(&buf, param)
			if serr != nil {
				vc = Credential{}
			}
		}
		if vc != c || serr != err {
			t.Fatalf("SplitAuthorization and DecodeBasic(%q) = %+v, %v; ParseAuthorization says %+v, %v", header, vc, serr, c, err)
		}
		if err != nil {
			if c != (Credential{}) {
				t.Fatalf("error %v came with a credential %+v", err, c)
			}
			return
		}
		switch c.Scheme {
		case SchemeNone:
			if header != "" {
				t.Fatalf("SchemeNone for non-empty header %q", header)
			}
		case SchemeBasic:
			again, err := ParseAuthorization(basic(c.User + ":" + c.Secret))
			if err != nil || again != c {
				t.Fatalf("Basic round trip of %+v gave %+v, %v", c, again, err)
			}
			if strings.Contains(c.User, ":") {
				t.Fatalf("user %q contains a colon", c.User)
			}
		case SchemeBearer:
			if c.Secret == "" || strings.ContainsAny(c.Secret, " \t") {
				t.Fatalf("bearer secret %q is empty or has blanks", c.Secret)
			}
		default:
			t.Fatalf("unexpected scheme %v", c.Scheme)
		}
	})
}

func TestParseAuthorizationAllocs(t *testing.T) {
	tests := []struct {
		name   string
		header string
		max    float64
	}{
		{"basic token", basic("alice:" + benchToken), 1},
		{"basic at the stack bound", basic(strings.Repeat("u", 10) + ":" + strings.Repeat("p", basicBufferLen/3*3-11)), 1},
		{"basic past the stack bound", basic(strings.Repeat("u", 10) + ":" + strings.Repeat("p", basicBufferLen/3*3-10)), 2},
		{"basic no colon", basic(benchToken), 0},
		{"basic bad base64", "Basic " + benchToken + "!", 0},
		{"bearer", "Bearer " + benchToken, 0},
		{"bearer two words", "Bearer a b", 0},
		{"digest", `Digest username="a"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { ParseAuthorization(tt.header) }); n > tt.max {
				t.Errorf("ParseAuthorization(%q) allocates %v times, want <= %v", tt.header, n, tt.max)
			}
		})
	}
}

// TestDecodeBasic checks that a Basic credential's strings are views of
// the caller's buffer when it fits, and that decoding one costs no
// allocation then.
func TestDecodeBasic(t *testing.T) {
	param := basic("alice:" + benchToken)[len("Basic "):]
	var buf BasicBuffer
	user, secret, err := DecodeBasic(&buf, param)
	if err != nil || user != "alice" || secret != benchToken {
		t.Fatalf("DecodeBasic(%q) = %q, %q, %v", param, user, secret, err)
	}
	if p, lo, hi := uintptr(unsafe.Pointer(unsafe.StringData(secret))), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&buf[len(buf)-1])); p < lo || p > hi {
		t.Errorf("the secret is not in the buffer")
	}
	long := basic(strings.Repeat("u", 10) + ":" + strings.Repeat("p", basicBufferLen))[len("Basic "):]
	if _, secret, err := DecodeBasic(&buf, long); err != nil || len(secret) != basicBufferLen {
		t.Errorf("a credential longer than the buffer: %d bytes of secret, %v", len(secret), err)
	}
	if n := testing.AllocsPerRun(100, func() {
		var buf BasicBuffer
		if user, _, _ := DecodeBasic(&buf, param); user != "alice" {
			panic("wrong user")
		}
	}); n != 0 {
		t.Errorf("DecodeBasic of a token allocates %v times, want 0", n)
	}
}

// benchToken has the shape and length of a real token.
const benchToken = "caddytok_abcdEFGH1234_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0k"

func BenchmarkParseAuthorization(b *testing.B) {
	benches := []struct{ name, header string }{
		{"basic_token", basic("alice:" + benchToken)},
		{"basic_long", basic(strings.Repeat("u", 100) + ":" + strings.Repeat("p", 400))},
		{"bearer", "Bearer " + benchToken},
		{"basic_malformed", "Basic " + benchToken},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseAuthorization(bb.header)
			}
		})
	}
}

// refParseAuthorization is ParseAuthorization as it was before Basic
// credentials were decoded into a stack buffer: base64.DecodeString, then
// strings.Cut; a scheme lower-cased in ASCII only, and a control character
// (unicode.IsControl: C0, DEL, C1) anywhere in a Basic credential
// malformed. FuzzParseAuthorization holds the parser to it.
func refParseAuthorization(v string) (Credential, error) {
	if v == "" {
		return Credential{}, nil
	}
	if len(v) > MaxCredentialLength {
		return Credential{}, ErrCredentialTooLong
	}
	scheme, param, _ := strings.Cut(v, " ")
	param = strings.TrimLeft(param, " ")
	switch {
	case asciiFold(scheme) == "basic":
		raw, err := base64.StdEncoding.DecodeString(param)
		if err != nil {
			return Credential{}, ErrMalformedBasic
		}
		user, secret, ok := strings.Cut(string(raw), ":")
		if !ok || strings.IndexFunc(string(raw), unicode.IsControl) >= 0 {
			return Credential{}, ErrMalformedBasic
		}
		return Credential{Scheme: SchemeBasic, User: user, Secret: secret}, nil
	case asciiFold(scheme) == "bearer":
		if param == "" || strings.ContainsAny(param, " \t") {
			return Credential{}, ErrEmptyBearer
		}
		return Credential{Scheme: SchemeBearer, Secret: param}, nil
	}
	return Credential{}, ErrUnsupportedScheme
}

// asciiFold lower-cases the ASCII letters of s and nothing else.
func asciiFold(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}
