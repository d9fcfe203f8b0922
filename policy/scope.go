package policy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Reasons for scope and holder decisions.
const (
	// ReasonReadOnly: a read-only token was used for a request that does
	// not only read (see Reads).
	ReasonReadOnly Reason = "read_only"
	// ReasonMethodNotAllowed: the method is not among the token's methods.
	ReasonMethodNotAllowed Reason = "method_not_allowed"
	// ReasonPathNotAllowed: the path matches none of the token's paths.
	ReasonPathNotAllowed Reason = "path_not_allowed"
	// ReasonHostNotAllowed: the host matches none of the token's hosts.
	ReasonHostNotAllowed Reason = "host_not_allowed"
	// ReasonHolderNotAllowed: the token's owner may not hold tokens (any
	// more): neither named in holders nor a member of a group named there.
	ReasonHolderNotAllowed Reason = "holder_not_allowed"
)

// Scope restricts what a token may be used for. Empty fields mean
// unrestricted; all set fields must pass.
type Scope struct {
	// ReadOnly allows only requests that read: GET, HEAD and OPTIONS
	// (but not a git push's first step), and the POSTs that a Reads
	// names. See Reads.
	ReadOnly bool `json:"read_only,omitempty"`
	// Methods, if set, are the only methods allowed (case-insensitive).
	Methods []string `json:"methods,omitempty"`
	// Paths, if set, are path patterns in Caddy's path-matcher syntax
	// (see PathPattern); the request path as the backend resolves it
	// (Target.Resolved, the path protect sees) must match one of them,
	// case-insensitively.
	Paths []string `json:"paths,omitempty"`
	// Hosts, if set, are host names (api.example.com) or one-label
	// wildcards (*.example.com); the request's host must match one.
	Hosts []string `json:"hosts,omitempty"`
}

// IsZero reports whether the scope restricts nothing.
func (s Scope) IsZero() bool {
	return !s.ReadOnly && len(s.Methods) == 0 && len(s.Paths) == 0 && len(s.Hosts) == 0
}

// CompiledScope is a Scope parsed once, for checking on every request.
type CompiledScope struct {
	readOnly bool
	methods  []string
	paths    []PathPattern
	hosts    []string
}

// CompileScope validates and compiles s. Methods are uppercased, hosts
// lowercased; the error names the bad item and its value.
func CompileScope(s Scope) (CompiledScope, error) {
	c := CompiledScope{readOnly: s.ReadOnly}
	for _, m := range s.Methods {
		if m == "" || !isToken(m) {
			return CompiledScope{}, fmt.Errorf("method %q: not an HTTP method", m)
		}
		c.methods = append(c.methods, strings.ToUpper(m))
	}
	for _, p := range s.Paths {
		pp, err := ParsePathPattern(p)
		if err != nil {
			return CompiledScope{}, err
		}
		c.paths = append(c.paths, pp)
	}
	for _, h := range s.Hosts {
		if err := checkHostPattern(h); err != nil {
			return CompiledScope{}, err
		}
		c.hosts = append(c.hosts, strings.ToLower(h))
	}
	return c, nil
}

// ReadOnly reports whether the scope allows only requests that read.
func (c *CompiledScope) ReadOnly() bool { return c.readOnly }

// Check decides whether a request with this method, host (without port)
// and cleaned path is within the scope. read says whether the request only
// reads (Reads.Read); only a read-only scope asks, so a caller may work it
// out only if ReadOnly.
func (c *CompiledScope) Check(method, host, cleanPath string, read bool) Reason {
	if c.readOnly && !read {
		return ReasonReadOnly
	}
	if len(c.methods) > 0 && !containsFold(c.methods, method) {
		return ReasonMethodNotAllowed
	}
	if len(c.paths) > 0 {
		ok := false
		for i := range c.paths {
			if c.paths[i].Match(cleanPath) {
				ok = true
				break
			}
		}
		if !ok {
			return ReasonPathNotAllowed
		}
	}
	if len(c.hosts) > 0 {
		ok := false
		for _, h := range c.hosts {
			if matchHost(h, host) {
				ok = true
				break
			}
		}
		if !ok {
			return ReasonHostNotAllowed
		}
	}
	return ReasonOK
}

// MethodOverrideHeaders are the request headers, in canonical form, with
// which a client asks a backend to run a request as another method
// (Jersey's, Spring's and many frameworks' method override filters). A
// backend that honours one turns a GET into a DELETE, so a scope must
// judge the method each one names as well as the request's own.
var MethodOverrideHeaders = [...]string{"X-Http-Method-Override", "X-Method-Override", "X-Http-Method"}

// OverriddenMethod returns the method a method override header value
// names, as a backend that honours it reads it: trimmed of spaces and tabs,
// in upper case. A value that is not an HTTP method (an RFC 9110 token:
// a list, a non-ASCII look-alike) gives "", which no read-only or methods
// scope allows.
func OverriddenMethod(v string) string {
	v = strings.Trim(v, " \t")
	if v == "" || !isToken(v) {
		return ""
	}
	return strings.ToUpper(v) // ASCII: a token
}

// DefaultReadPosts are the POST requests of Jira, Confluence and Bitbucket
// Data Center that only read, so that a read-only token may make them: a
// client sends a long query in a body, or git fetches over smart HTTP.
// Patterns are matched as PathSet matches them, on the path as the backend
// resolves it. Git LFS's batch API is left out: whether it reads or writes
// is in the body.
var DefaultReadPosts = []string{
	"/rest/api/*/search",              // Jira: issue search with the JQL in the body
	"/rest/api/contentbody/convert/*", // Confluence: convert a body between formats
	"/rest/search/latest/search",      // Bitbucket: code search
	"/rest/api/*/markup/preview",      // Bitbucket: render Markdown
	"*/git-upload-pack",               // git fetch and clone (smart HTTP)
}

// Keywords of a read_posts list (CompileReads).
const (
	// ReadPostsDefault stands for DefaultReadPosts.
	ReadPostsDefault = "default"
	// ReadPostsOff, alone, names no POST.
	ReadPostsOff = "off"
)

// Reads decides which requests only read, for read-only scopes: GET, HEAD
// and OPTIONS, and the POSTs it names. A GET or HEAD of git's ref
// advertisement for a push (…/info/refs?service=git-receive-pack) is a
// write: it is the first step of a push. The zero Reads names no POST.
type Reads struct {
	posts PathSet
}

// CompileReads compiles a read_posts list: path patterns of POSTs that only
// read, in which "default" stands for DefaultReadPosts; a nil or empty list
// means the defaults, and "off" alone means none. Errors name the item and
// its value.
func CompileReads(posts []string) (Reads, error) {
	if len(posts) == 0 {
		posts = []string{ReadPostsDefault}
	}
	if len(posts) == 1 && posts[0] == ReadPostsOff {
		return Reads{}, nil
	}
	var patterns []string
	defaults := false
	for i, p := range posts {
		switch p {
		case ReadPostsOff:
			return Reads{}, errors.New("read_posts: off stands alone")
		case ReadPostsDefault:
			if defaults {
				return Reads{}, errors.New("read_posts: default named twice")
			}
			defaults = true
			patterns = append(patterns, DefaultReadPosts...)
		default:
			if _, err := compilePathPattern(p); err != nil {
				return Reads{}, fmt.Errorf("read_posts[%d] %q: %w", i, p, err)
			}
			patterns = append(patterns, p)
		}
	}
	set, err := CompilePathSet("read_posts", patterns)
	return Reads{posts: set}, err
}

// gitInfoRefs matches the path of git's ref advertisement, with a
// trailing slash too: a write taken for a read is the mistake to avoid.
var gitInfoRefs, _ = CompilePathSet("git", []string{"*/info/refs", "*/info/refs/"})

// Read reports whether a request only reads: its method, its path t as the
// backend will resolve it, and its raw query.
func (r *Reads) Read(method string, t Target, rawQuery string) bool {
	switch method {
	case "GET", "HEAD":
		return rawQuery == "" || !gitInfoRefs.MatchTargetPath(t) || !gitPushService(rawQuery)
	case "OPTIONS":
		return true
	case "POST":
		return r.posts.MatchTargetPath(t)
	}
	return false
}

// gitPushService reports whether a query asks for any git service but
// git-upload-pack (a fetch), as a push's ref advertisement does
// (service=git-receive-pack); a query that cannot be read counts as one.
func gitPushService(rawQuery string) bool {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return true
	}
	for _, s := range q["service"] {
		if s != "git-upload-pack" {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if equalFoldASCII(v, s) {
			return true
		}
	}
	return false
}

// checkHostPattern accepts a host name or a one-label wildcard.
func checkHostPattern(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(h) > 253 {
		return fmt.Errorf("host %q: not a host name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q: not a host name", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q: not a host name", h)
			}
		}
	}
	return nil
}

// matchHost matches a lowercase pattern against a request host.
func matchHost(pattern, host string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		dot := strings.IndexByte(host, '.')
		return dot > 0 && equalFoldASCII(host[dot+1:], rest)
	}
	return equalFoldASCII(pattern, host)
}

// isToken reports whether s is an RFC 9110 token (methods are tokens).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
