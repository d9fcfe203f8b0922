package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

func TestUnreadChain(t *testing.T) {
	xff := []string{"X-Forwarded-For"}
	tests := []struct {
		name, remote, ip string
		headers          []string // the server's client IP headers
		values           []string // X-Forwarded-For values
		want             bool
	}{
		{"no header", "10.0.0.5:4000", "10.0.0.5", xff, nil, false},
		{"garbage", "10.0.0.5:4000", "10.0.0.5", xff, []string{"garbage"}, true},
		{"empty value", "10.0.0.5:4000", "10.0.0.5", xff, []string{""}, true},
		{"unknown", "10.0.0.5:4000", "10.0.0.5", xff, []string{"unknown"}, true},
		{"garbage left of a trusted hop", "10.0.0.5:4000", "10.0.0.5", xff, []string{"garbage, 10.0.0.7"}, true},
		{"garbage in a second value", "10.0.0.5:4000", "10.0.0.5", xff, []string{"10.0.0.7", "x"}, true},
		{"trusted hops only", "10.0.0.5:4000", "10.0.0.5", xff, []string{"10.0.0.7, 10.0.0.8"}, false},
		{"address with port and zone", "10.0.0.5:4000", "10.0.0.5", xff, []string{"[fe80::1%eth0]:80, 10.0.0.7:81"}, false},
		{"read an address", "10.0.0.5:4000", "198.51.100.7", xff, []string{"garbage, 198.51.100.7"}, false},
		{"mapped peer", "[::ffff:10.0.0.5]:4000", "10.0.0.5", xff, []string{"garbage"}, true},
		{"ipv6 peer with zone", "[fe80::5%eth0]:4000", "fe80::5", xff, []string{"garbage"}, true},
		{"another header", "10.0.0.5:4000", "10.0.0.5", []string{"X-Real-Ip"}, []string{"garbage"}, false},
		{"unix socket peer", "@", "10.0.0.5", xff, []string{"garbage"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.values {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := unreadChain(r, tt.headers, netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("unreadChain = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHandlerWarnsSpoofableClientIP: behind trusted proxies in Caddy's
// default (non-strict) mode, a client chooses its own client IP by sending
// X-Forwarded-For, so the gate warns once that its IP limits can be
// bypassed; in strict mode it does not.
func TestHandlerWarnsSpoofableClientIP(t *testing.T) {
	tests := []struct {
		name     string
		strict   int
		viaProxy bool
		want     int // warnings
	}{
		{"non-strict", 0, true, 1},
		{"strict", 1, true, 0},
		{"not from a proxy", 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, st, clock, _ := testHandler(t)
			core, logs := observer.New(zapcore.WarnLevel)
			h.logger = zap.New(core)
			var err error
			if h.allowIPs, err = policy.ParsePrefixes([]string{"10.0.0.0/8"}); err != nil {
				t.Fatal(err)
			}
			_, secret, err := st.Create(context.Background(), storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv := &caddyhttp.Server{TrustedProxiesStrict: tt.strict, ClientIPHeaders: []string{"X-Forwarded-For"}}
			for range 3 {
				req := httptest.NewRequest(http.MethodGet, "/rest/x", nil)
				req.Header.Set("Authorization", "Bearer "+secret)
				req.Header.Set("X-Forwarded-For", "10.9.9.9, 203.0.113.7")
				w := httptest.NewRecorder()
				req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, srv)
				caddyhttp.SetVar(req.Context(), caddyhttp.TrustedProxyVarKey, tt.viaProxy)
				caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, "10.9.9.9")
				next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
				if err := h.ServeHTTP(w, req, next); err != nil {
					t.Fatal(err)
				}
			}
			warnings := logs.FilterMessageSnippet("client IP limits can be bypassed").All()
			if len(warnings) != tt.want {
				t.Fatalf("%d warnings, want %d: %v", len(warnings), tt.want, logs.All())
			}
			if tt.want > 0 {
				limits, _ := warnings[0].ContextMap()["limits"].([]any)
				if !slices.Contains(limits, any("allow_ips")) || !slices.Contains(limits, any("tokens' allowed_ips")) {
					t.Errorf("limits = %v, want allow_ips and tokens' allowed_ips", limits)
				}
			}
		})
	}
}
