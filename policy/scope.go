package policy

import (
	"fmt"
	"strings"
)

// Reasons for scope and holder decisions.
const (
	// ReasonReadOnly: a read-only token was used with a method other than
	// GET, HEAD or OPTIONS.
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
	// ReadOnly allows only GET, HEAD and OPTIONS.
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

// Check decides whether a request with this method, host (without port)
// and cleaned path is within the scope.
func (c *CompiledScope) Check(method, host, cleanPath string) Reason {
	if c.readOnly && method != "GET" && method != "HEAD" && method != "OPTIONS" {
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

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
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
		return dot > 0 && strings.EqualFold(host[dot+1:], rest)
	}
	return strings.EqualFold(pattern, host)
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
