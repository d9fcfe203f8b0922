package policy

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestEqualFoldASCII(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"Basic", "basic", true},
		{"BASIC", "basic", true},
		{"bEaReR", "Bearer", true},
		{"", "", true},
		{"Basic", "Basi", false},
		{"Ba\u017fic", "basic", false}, // ſ (long s) folds to s in Unicode
		{"\u212aey", "key", false},     // K (Kelvin sign) folds to k
		{"basic", "basiC\x00", false},
		{"[", "{", false}, // differ by 0x20 but are not letters
		{"@", "`", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			if got := equalFoldASCII(tt.a, tt.b); got != tt.want {
				t.Errorf("equalFoldASCII(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
			if got := equalFoldASCII(tt.b, tt.a); got != tt.want {
				t.Errorf("equalFoldASCII(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
			}
		})
	}
}

// TestSchemesFoldASCII: scheme names compare case-insensitively in ASCII
// only: no other letter stands for an ASCII one.
func TestSchemesFoldASCII(t *testing.T) {
	param := base64.StdEncoding.EncodeToString([]byte("alice:" + benchToken))
	for _, header := range []string{"Ba\u017fic " + param, "BA\u017fIC " + param} {
		if scheme, _, err := SplitAuthorization(header); !errors.Is(err, ErrUnsupportedScheme) {
			t.Errorf("SplitAuthorization(%q) = %v, %v; want ErrUnsupportedScheme", header, scheme, err)
		}
	}
}

// TestScopeFoldsASCII: a host (or method) matches a scope's only in ASCII
// case folding.
func TestScopeFoldsASCII(t *testing.T) {
	c, err := CompileScope(Scope{Hosts: []string{"docs.example.com", "*.risk.example"}, Methods: []string{"GET"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, host string
		want               Reason
	}{
		{"exact", "GET", "docs.example.com", ReasonOK},
		{"upper case", "get", "DOCS.Example.COM", ReasonOK},
		{"wildcard", "GET", "a.RISK.example", ReasonOK},
		{"long s in the host", "GET", "doc\u017f.example.com", ReasonHostNotAllowed},
		{"kelvin sign under a wildcard", "GET", "a.ri\u017f\u212a.example", ReasonHostNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Check(tt.method, tt.host, "/", true); got != tt.want {
				t.Errorf("Check(%q, %q) = %q, want %q", tt.method, tt.host, got, tt.want)
			}
		})
	}
}

// TestDecodeBasicControls: RFC 7617 forbids control characters (RFC 5198's
// CC: C0, DEL and C1) in a user-id and a password.
func TestDecodeBasicControls(t *testing.T) {
	tests := []struct {
		name, raw string
		ok        bool
	}{
		{"plain", "alice:hunter2", true},
		{"utf-8", "jürgen:pässwörd€", true},
		{"utf-8 with continuation bytes 0x80-0x9f", "\u0100\u20ac:\u0800", true},
		{"escape in the user", "alice\x1b[31m:x", false},
		{"newline in the user", "alice\n:x", false},
		{"tab in the password", "alice:a\tb", false},
		{"NUL", "alice:\x00", false},
		{"DEL", "alice\x7f:x", false},
		{"C1 CSI", "alice\u009b:x", false},
		{"C1 NEL in the password", "alice:x\u0085", false},
		{"last C1", "alice:\u009f", false},
		{"first after C1", "alice:\u00a0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf BasicBuffer
			_, _, err := DecodeBasic(&buf, base64.StdEncoding.EncodeToString([]byte(tt.raw)))
			if (err == nil) != tt.ok {
				t.Errorf("DecodeBasic(%q) error %v, want ok %v", tt.raw, err, tt.ok)
			}
			if _, err := ParseAuthorization(basic(tt.raw)); (err == nil) != tt.ok {
				t.Errorf("ParseAuthorization(%q) error %v, want ok %v", tt.raw, err, tt.ok)
			}
		})
	}
	long := strings.Repeat("p", basicBufferLen) + "\x01"
	var buf BasicBuffer
	if _, _, err := DecodeBasic(&buf, base64.StdEncoding.EncodeToString([]byte("u:"+long))); !errors.Is(err, ErrMalformedBasic) {
		t.Errorf("a control past the buffer: %v, want ErrMalformedBasic", err)
	}
}
