package policy

import (
	"strings"
	"testing"
	"time"
)

func TestPathPattern(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"/rest/api/2/search", []string{"/rest/api/2/search", "/REST/API/2/Search"}, []string{"/rest/api/2/search/x", "/rest/api/2/searc"}},
		{"/rest/*", []string{"/rest/", "/rest/api/2/issue", "/Rest/x"}, []string{"/rest", "/restricted", "/wiki/rest/"}},
		{"/rest*", []string{"/rest", "/restricted", "/rest/x"}, []string{"/wiki/rest"}},
		{"*.json", []string{"/a/b.json", "/x.JSON"}, []string{"/a.json/x", "/json"}},
		{"*attachment*", []string{"/rest/api/content/1/child/attachment", "/ATTACHMENTS"}, []string{"/rest/api/content"}},
		{"/rest/api/*/issue", []string{"/rest/api/2/issue", "/rest/api/latest/issue"}, []string{"/rest/api/2/x/issue", "/rest/api/2/issue/1"}},
		{"*", []string{"/", "/anything"}, nil},
		{"/rest/api/*/issue/*", []string{"/rest/api/2/issue/X-1", "/REST/api/latest/issue/a"}, []string{"/rest/api/2/search/issue/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := ParsePathPattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.match {
				if !p.Match(m) {
					t.Errorf("%q does not match %q", tt.pattern, m)
				}
			}
			for _, m := range tt.noMatch {
				if p.Match(m) {
					t.Errorf("%q matches %q", tt.pattern, m)
				}
			}
		})
	}
}

func TestParsePathPatternErrors(t *testing.T) {
	for _, p := range []string{"", "rest/*", "/a[", "/a\x00", "*a*b", "/a%2f"} {
		if _, err := ParsePathPattern(p); err == nil || !strings.Contains(err.Error(), "path pattern") {
			t.Errorf("ParsePathPattern(%q) error = %v", p, err)
		}
	}
}

func TestScope(t *testing.T) {
	tests := []struct {
		name               string
		scope              Scope
		method, host, path string
		want               Reason
	}{
		{"unrestricted", Scope{}, "DELETE", "a.example.com", "/x", ReasonOK},
		{"read-only get", Scope{ReadOnly: true}, "GET", "h", "/x", ReasonOK},
		{"read-only head", Scope{ReadOnly: true}, "HEAD", "h", "/x", ReasonOK},
		{"read-only options", Scope{ReadOnly: true}, "OPTIONS", "h", "/x", ReasonOK},
		{"read-only post", Scope{ReadOnly: true}, "POST", "h", "/x", ReasonReadOnly},
		{"methods", Scope{Methods: []string{"get", "POST"}}, "POST", "h", "/x", ReasonOK},
		{"methods refused", Scope{Methods: []string{"GET"}}, "PUT", "h", "/x", ReasonMethodNotAllowed},
		{"read-only and methods", Scope{ReadOnly: true, Methods: []string{"GET", "POST"}}, "POST", "h", "/x", ReasonReadOnly},
		{"paths", Scope{Paths: []string{"/rest/api/*", "/status"}}, "GET", "h", "/rest/api/2/issue", ReasonOK},
		{"paths refused", Scope{Paths: []string{"/rest/api/*"}}, "GET", "h", "/secure/admin", ReasonPathNotAllowed},
		{"hosts", Scope{Hosts: []string{"jira.example.com"}}, "GET", "JIRA.example.com", "/", ReasonOK},
		{"hosts wildcard", Scope{Hosts: []string{"*.example.com"}}, "GET", "wiki.example.com", "/", ReasonOK},
		{"hosts wildcard one label", Scope{Hosts: []string{"*.example.com"}}, "GET", "a.b.example.com", "/", ReasonHostNotAllowed},
		{"hosts wildcard apex", Scope{Hosts: []string{"*.example.com"}}, "GET", "example.com", "/", ReasonHostNotAllowed},
		{"hosts refused", Scope{Hosts: []string{"jira.example.com"}}, "GET", "evil.com", "/", ReasonHostNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileScope(tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Check(tt.method, tt.host, tt.path); got != tt.want {
				t.Errorf("Check(%s %s %s) = %q, want %q", tt.method, tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestDenyGlob(t *testing.T) {
	rules, err := CompilePathRules(PathConfig{Deny: []string{"/rest/api/*/user/password"}})
	if err != nil {
		t.Fatal(err)
	}
	if rule, reason := rules.Inspect("/rest/api/2/user/password?x=1"); reason != ReasonPathBlocked || rule != PathRuleDenyPattern {
		t.Errorf("glob deny: %q %q", rule, reason)
	}
	if _, reason := rules.Inspect("/rest/api/2/user"); reason != ReasonOK {
		t.Errorf("glob deny overreaches: %q", reason)
	}
}

func TestCompileScopeErrors(t *testing.T) {
	tests := []struct {
		scope Scope
		err   string
	}{
		{Scope{Methods: []string{"GE T"}}, `method "GE T"`},
		{Scope{Methods: []string{""}}, `method ""`},
		{Scope{Paths: []string{"rest"}}, `path pattern "rest"`},
		{Scope{Hosts: []string{"a..b"}}, `host "a..b"`},
		{Scope{Hosts: []string{"*."}}, `host "*."`},
		{Scope{Hosts: []string{"a b"}}, `host "a b"`},
	}
	for _, tt := range tests {
		if _, err := CompileScope(tt.scope); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("CompileScope(%+v) error = %v, want %q", tt.scope, err, tt.err)
		}
	}
}

func TestScopeCheckAllocs(t *testing.T) {
	c, err := CompileScope(Scope{ReadOnly: true, Methods: []string{"GET"}, Paths: []string{"/rest/*", "*attach*"}, Hosts: []string{"*.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { c.Check("GET", "jira.example.com", "/rest/api/2/Issue") }); n != 0 {
		t.Errorf("Check allocates %v times, want 0", n)
	}
}

func TestHolders(t *testing.T) {
	h, err := ParseHolders([]string{"Alice", "group:jira-users"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		userKey string
		groups  []string
		want    Reason
	}{
		{"named user", "alice", nil, ReasonOK},
		{"group member", "bob", []string{"other", "jira-users"}, ReasonOK},
		{"neither", "carol", []string{"other"}, ReasonHolderNotAllowed},
		{"no groups", "dave", nil, ReasonHolderNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := h.Check(tt.userKey, tt.groups); got != tt.want {
				t.Errorf("Check = %q, want %q", got, tt.want)
			}
		})
	}
	if (Holders{}).Check("anyone", nil) != ReasonOK {
		t.Error("an empty holders list refuses")
	}
	for _, bad := range []string{"", "group:", "group:Upper", "group:-x", "a:b"} {
		if _, err := ParseHolders([]string{bad}); err == nil || !strings.Contains(err.Error(), "holders") {
			t.Errorf("ParseHolders(%q) error = %v", bad, err)
		}
	}
}

func TestValidityFor(t *testing.T) {
	day := 24 * time.Hour
	global := Validity{Default: 90 * day, Max: 365 * day}
	per := map[string]Validity{
		"contractors": {Max: 30 * day},
		"service":     {Default: 365 * day, Max: -1},
		"ops":         {Default: 7 * day},
	}
	tests := []struct {
		name   string
		groups []string
		want   Validity
	}{
		{"no groups", nil, global},
		{"group without rules", []string{"staff"}, global},
		{"stricter group, default cut to its max", []string{"contractors"}, Validity{Default: 30 * day, Max: 30 * day}},
		{"most generous wins", []string{"contractors", "service"}, Validity{Default: 365 * day, Max: -1}},
		{"default only", []string{"ops"}, Validity{Default: 7 * day, Max: 365 * day}},
		{"longer max beats longer default", []string{"ops", "contractors"}, Validity{Default: 7 * day, Max: 365 * day}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidityFor(global, tt.groups, per); got != tt.want {
				t.Errorf("ValidityFor = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPathSetMatchTarget(t *testing.T) {
	set, err := CompilePathSet("protect", []string{"/rest/*", "/plugins/servlet/*"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		want   bool
	}{
		{"/rest/api/2/issue?x=/public", true},
		{"/REST/api", true},
		{"/x/..;/rest/api/2/user", true},
		{"/x/%2e%2e/rest/api", true},
		{"/public/..%2frest/api", true},
		{"//rest//api", true},
		{"/rest;jsessionid=1/api", true},
		{"/plugins/servlet/a", true},
		{"/secure/Dashboard.jspa", false},
		{"/restricted", false},
		{"/s/x/_/rest/x.js?/rest/", false},
	}
	for _, tt := range tests {
		if got := set.MatchTarget(tt.target); got != tt.want {
			t.Errorf("MatchTarget(%q) = %v, want %v", tt.target, got, tt.want)
		}
	}
	if (PathSet{}).MatchTarget("/rest/x") {
		t.Error("the zero set matches")
	}
	if _, err := CompilePathSet("protect", []string{"rest"}); err == nil || !strings.Contains(err.Error(), `protect[0] "rest"`) {
		t.Errorf("bad pattern error = %v", err)
	}
	if n := testing.AllocsPerRun(100, func() { set.MatchTarget("/x/..;/rest/api/2/user") }); n != 0 {
		t.Errorf("MatchTarget allocates %v times", n)
	}
}

func BenchmarkPathSetMatchTarget(b *testing.B) {
	set, err := CompilePathSet("protect", []string{"/rest/*"})
	if err != nil {
		b.Fatal(err)
	}
	benches := []struct{ name, target string }{
		{"plain", "/rest/api/2/issue/ABC-123?fields=summary"},
		{"plain_miss", "/secure/Dashboard.jspa"},
		{"encoded", "/rest/api/2/search?jql=x&fields=%2A"},
		{"encoded_path", "/rest/api/2/issue/ABC-1/attachments/report%20v2.pdf"},
		{"dot_params", "/x/..;/rest/api/2/user"},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.MatchTarget(bb.target)
			}
		})
	}
}

func BenchmarkScopeCheck(b *testing.B) {
	c, err := CompileScope(Scope{Methods: []string{"GET", "POST"}, Paths: []string{"/rest/api/2/issue/*", "*attach*"}, Hosts: []string{"*.example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Check("POST", "jira.example.com", "/rest/api/2/issue/ABC-123/comment")
	}
}

func BenchmarkHoldersCheck(b *testing.B) {
	h, err := ParseHolders([]string{"alice", "group:jira-users"})
	if err != nil {
		b.Fatal(err)
	}
	groups := []string{"staff", "jira-users"}
	b.ReportAllocs()
	for b.Loop() {
		h.Check("bob", groups)
	}
}
