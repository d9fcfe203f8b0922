package event

import "testing"

func TestUnmapIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"198.51.100.20", "198.51.100.20"},
		{"::ffff:198.51.100.20", "198.51.100.20"},
		{"::FFFF:c633:6414", "198.51.100.20"},
		{"0:0:0:0:0:ffff:198.51.100.20", "198.51.100.20"},
		{"2001:db8::1", "2001:db8::1"},
		{"::1", "::1"},
		{"", ""},
		{"not-an-ip", "not-an-ip"},
		{"[::ffff:198.51.100.20]", "[::ffff:198.51.100.20]"}, // not an address: as it is
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := UnmapIP(tt.in); got != tt.want {
				t.Errorf("UnmapIP(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
