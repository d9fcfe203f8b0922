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
			var reads Reads // GET, HEAD and OPTIONS read; no POST does
			if got := c.Check(tt.method, tt.host, tt.path, reads.Read(tt.method, NewTarget(tt.path), "")); got != tt.want {
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
	if n := testing.AllocsPerRun(100, func() { c.Check("GET", "jira.example.com", "/rest/api/2/Issue", true) }); n != 0 {
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
		c.Check("POST", "jira.example.com", "/rest/api/2/issue/ABC-123/comment", false)
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

// TestReads: what read_only lets through. Paths are judged as the backend
// resolves them, and a git push's first step is a write although it is a GET.
func TestReads(t *testing.T) {
	defaults, err := CompileReads(nil)
	if err != nil {
		t.Fatal(err)
	}
	custom, err := CompileReads([]string{"default", "/rest/custom/query"})
	if err != nil {
		t.Fatal(err)
	}
	only, err := CompileReads([]string{"/rest/custom/query"})
	if err != nil {
		t.Fatal(err)
	}
	off, err := CompileReads([]string{"off"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		reads          Reads
		method, target string
		want           bool
	}{
		{"get", defaults, "GET", "/rest/api/2/issue/X-1", true},
		{"head", defaults, "HEAD", "/x", true},
		{"options", defaults, "OPTIONS", "/x", true},
		{"delete", defaults, "DELETE", "/rest/api/2/search", false},
		{"put", defaults, "PUT", "/rest/api/2/search", false},
		{"jira search", defaults, "POST", "/rest/api/2/search", true},
		{"jira search latest", defaults, "POST", "/rest/api/latest/search", true},
		{"jira search, resolved", defaults, "POST", "/x/..;/rest/api/2/search", true},
		{"jira create issue", defaults, "POST", "/rest/api/2/issue", false},
		{"jira create issue behind a search prefix", defaults, "POST", "/rest/api/2/search/..;/../issue", false},
		{"jira search in a longer path", defaults, "POST", "/rest/api/2/search/x", false},
		{"confluence convert", defaults, "POST", "/rest/api/contentbody/convert/view", true},
		{"bitbucket code search", defaults, "POST", "/rest/search/latest/search", true},
		{"bitbucket markup preview", defaults, "POST", "/rest/api/1.0/markup/preview", true},
		{"git fetch", defaults, "POST", "/scm/prj/repo.git/git-upload-pack", true},
		{"git push", defaults, "POST", "/scm/prj/repo.git/git-receive-pack", false},
		{"git push advertisement", defaults, "GET", "/scm/prj/repo.git/info/refs?service=git-receive-pack", false},
		{"git push advertisement, head", defaults, "HEAD", "/scm/prj/repo.git/info/refs?service=git-receive-pack", false},
		{"git push advertisement, encoded", defaults, "GET", "/r.git/info/refs?service=git%2Dreceive%2Dpack", false},
		{"git push advertisement, second value", defaults, "GET", "/r.git/info/refs?service=git-upload-pack&service=git-receive-pack", false},
		{"git push advertisement, unreadable query", defaults, "GET", "/r.git/info/refs?service=git-upload-pack;x", false},
		{"git push advertisement, resolved path", defaults, "GET", "/r.git/info/refs;x/?service=git-receive-pack", false},
		{"git fetch advertisement", defaults, "GET", "/scm/prj/repo.git/info/refs?service=git-upload-pack", true},
		{"git dumb fetch", defaults, "GET", "/scm/prj/repo.git/info/refs", true},
		{"service elsewhere", defaults, "GET", "/rest/api/2/x?service=git-receive-pack", true},
		{"extended keeps defaults", custom, "POST", "/rest/api/2/search", true},
		{"extended", custom, "POST", "/rest/custom/query", true},
		{"replaced", only, "POST", "/rest/api/2/search", false},
		{"replacement", only, "POST", "/rest/custom/query", true},
		{"off", off, "POST", "/rest/api/2/search", false},
		{"off still reads GET", off, "GET", "/x", true},
		{"off still sees a push", off, "GET", "/r.git/info/refs?service=git-receive-pack", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, query, _ := strings.Cut(tt.target, "?")
			if got := tt.reads.Read(tt.method, NewTarget(path), query); got != tt.want {
				t.Errorf("Read(%s %s) = %v, want %v", tt.method, tt.target, got, tt.want)
			}
		})
	}
}

func TestCompileReadsErrors(t *testing.T) {
	tests := []struct {
		name  string
		posts []string
		err   string
	}{
		{"bad pattern", []string{"rest/x"}, `read_posts[0] "rest/x"`},
		{"off with patterns", []string{"off", "/x"}, `read_posts: off stands alone`},
		{"default twice", []string{"default", "default"}, `read_posts: default named twice`},
		{"empty", []string{""}, `read_posts[0] ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := CompileReads(tt.posts); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("CompileReads(%q) error = %v, want %q", tt.posts, err, tt.err)
			}
		})
	}
}

// TestScopeRead: a read-only scope takes the caller's word (Reads.Read)
// on whether a request only reads; methods still judge the method itself.
func TestScopeRead(t *testing.T) {
	tests := []struct {
		name   string
		scope  Scope
		method string
		read   bool
		want   Reason
	}{
		{"read-only, a read POST", Scope{ReadOnly: true}, "POST", true, ReasonOK},
		{"read-only, a write GET", Scope{ReadOnly: true}, "GET", false, ReasonReadOnly},
		{"methods do not take a read POST for a GET", Scope{Methods: []string{"GET"}}, "POST", true, ReasonMethodNotAllowed},
		{"no read-only: read does not matter", Scope{}, "DELETE", false, ReasonOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileScope(tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Check(tt.method, "h", "/x", tt.read); got != tt.want {
				t.Errorf("Check(%s, read %v) = %q, want %q", tt.method, tt.read, got, tt.want)
			}
		})
	}
}

func TestOverriddenMethod(t *testing.T) {
	tests := []struct{ value, want string }{
		{"DELETE", "DELETE"},
		{" delete ", "DELETE"},
		{"Patch", "PATCH"},
		{"GET, DELETE", ""},
		{"PO\u017fT", ""}, // ſ: no Unicode folding into POST
		{"", ""},
		{"\tPUT", "PUT"},
	}
	for _, tt := range tests {
		if got := OverriddenMethod(tt.value); got != tt.want {
			t.Errorf("OverriddenMethod(%q) = %q, want %q", tt.value, got, tt.want)
		}
	}
}
