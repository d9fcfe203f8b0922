package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the token management routes under /api_tokens/ on
// Caddy's admin endpoint. Caddy builds a new one for every config load and
// never cleans it up, so it owns nothing: it uses the api_tokens app that
// is running when a request comes (see running).
//
//	POST   /api_tokens/tokens                 create; 201 with the secret in "token"
//	GET    /api_tokens/tokens[?user=&state=]  list
//	GET    /api_tokens/tokens/{id}            show one
//	PATCH  /api_tokens/tokens/{id}            change name, description, expiry
//	DELETE /api_tokens/tokens/{id}            revoke (the record is kept)
//	POST   /api_tokens/tokens/{id}/rotate     new secret; 201 with it in "token"
//	DELETE /api_tokens/users/{user}/tokens    revoke all of a user's tokens
//	GET    /api_tokens/groups                 groups with their member counts
//	GET    /api_tokens/groups/{group}/members list a group's members
//	PUT    /api_tokens/groups/{group}/members/{user}  add a member
//	DELETE /api_tokens/groups/{group}/members/{user}  remove a member
//	GET    /api_tokens/audit[?type=&outcome=&user=&token=&client_ip=&since=&until=&cursor=&limit=]
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.api_tokens",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes of the api_tokens app.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/api_tokens/",
		Handler: caddy.AdminHandlerFunc(a.serve),
	}}
}

// maxBodyBytes bounds admin request bodies.
const maxBodyBytes = 64 << 10

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	app, err := a.app()
	if err != nil {
		return err
	}
	parts, err := pathParts(r, "/api_tokens/")
	if err != nil {
		return err
	}
	switch {
	case len(parts) == 1 && parts[0] == "tokens":
		switch r.Method {
		case http.MethodPost:
			return a.create(w, r, app)
		case http.MethodGet:
			return a.list(w, r, app)
		}
		return methodNotAllowed(w, r, "GET, POST")
	case len(parts) == 2 && parts[0] == "tokens":
		switch r.Method {
		case http.MethodGet:
			return a.show(w, r, app, parts[1])
		case http.MethodPatch:
			return a.update(w, r, app, parts[1])
		case http.MethodDelete:
			return a.revoke(w, r, app, parts[1])
		}
		return methodNotAllowed(w, r, "GET, PATCH, DELETE")
	case len(parts) == 3 && parts[0] == "tokens" && parts[2] == "rotate":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, r, "POST")
		}
		return a.rotate(w, r, app, parts[1])
	case len(parts) == 3 && parts[0] == "users" && parts[2] == "tokens":
		if r.Method != http.MethodDelete {
			return methodNotAllowed(w, r, "DELETE")
		}
		return a.revokeUser(w, r, app, parts[1])
	case len(parts) == 1 && parts[0] == "audit":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, "GET")
		}
		return a.queryAudit(w, r, app)
	case len(parts) == 1 && parts[0] == "groups":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, "GET")
		}
		return a.listGroups(w, r, app)
	case len(parts) == 3 && parts[0] == "groups" && parts[2] == "members":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, "GET")
		}
		return a.listMembers(w, r, app, parts[1])
	case len(parts) == 4 && parts[0] == "groups" && parts[2] == "members":
		switch r.Method {
		case http.MethodPut:
			return a.addMember(w, r, app, parts[1], parts[3])
		case http.MethodDelete:
			return a.removeMember(w, r, app, parts[1], parts[3])
		}
		return methodNotAllowed(w, r, "PUT, DELETE")
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: %s", r.URL.Path)}
}

// app returns the running api_tokens app, or a 503.
func (a *adminAPI) app() (*App, error) {
	app := running.Load()
	if app == nil {
		return nil, caddy.APIError{
			HTTPStatus: http.StatusServiceUnavailable,
			Err:        errors.New("no token store configured: use the api_token handler or the api_tokens global option in the config"),
		}
	}
	return app, nil
}

// tokenJSON is a token as the admin API shows it. Token holds the secret
// and is only ever set in the answer to a create or rotate call.
type tokenJSON struct {
	ID          string         `json:"id"`
	User        string         `json:"user"`
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Hint        string         `json:"hint"`
	State       string         `json:"state"`
	CreatedAt   time.Time      `json:"created_at"`
	UpdatedAt   time.Time      `json:"updated_at"`
	ExpiresAt   *time.Time     `json:"expires_at"` // null: never expires
	RevokedAt   *time.Time     `json:"revoked_at,omitempty"`
	RotatedAt   *time.Time     `json:"rotated_at,omitempty"`
	AllowedIPs  []string       `json:"allowed_ips,omitempty"`
	ReadOnly    bool           `json:"read_only,omitempty"`
	Methods     []string       `json:"methods,omitempty"`
	Paths       []string       `json:"paths,omitempty"`
	Hosts       []string       `json:"hosts,omitempty"`
	RateLimit   string         `json:"rate_limit,omitempty"`
	LastUsedAt  *time.Time     `json:"last_used_at"` // null: never used
	LastUsedIP  string         `json:"last_used_ip,omitempty"`
	UseCount    int64          `json:"use_count"`
	RecentIPs   []event.IPSeen `json:"recent_ips,omitempty"`
	Token       string         `json:"token,omitempty"`
}

// tokenJSON shows a token with its usage: what the store has, plus what
// the app has counted since the last flush.
func (app *App) tokenJSON(t storage.Token, now time.Time) tokenJSON {
	out := toJSON(t, now)
	u := event.Usage{TokenID: t.ID, LastUsedAt: t.LastUsedAt, LastIP: t.LastUsedIP, Count: t.UseCount, RecentIPs: t.RecentIPs}
	if app.auditState != nil {
		// Keyed by token.Key, which is 0 for an id token.Parse refuses:
		// the id check keeps such a token from showing another's use.
		key, _ := token.Key(t.ID)
		if pending, ok := app.auditState.usage.Pending(key); ok && pending.TokenID == t.ID {
			u = audit.MergeUsage(u, pending)
		}
	}
	if !u.LastUsedAt.IsZero() {
		last := u.LastUsedAt.UTC()
		out.LastUsedAt = &last
	}
	out.LastUsedIP, out.UseCount, out.RecentIPs = u.LastIP, u.Count, u.RecentIPs
	return out
}

func toJSON(t storage.Token, now time.Time) tokenJSON {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	return tokenJSON{
		ID:          t.ID,
		User:        t.User,
		Name:        t.Name,
		Description: t.Description,
		Hint:        t.Hint,
		State:       string(t.State(now)),
		CreatedAt:   t.CreatedAt.UTC(),
		UpdatedAt:   t.UpdatedAt.UTC(),
		ExpiresAt:   opt(t.ExpiresAt),
		RevokedAt:   opt(t.RevokedAt),
		RotatedAt:   opt(t.RotatedAt),
		AllowedIPs:  t.AllowedIPs,
		ReadOnly:    t.Scope.ReadOnly,
		Methods:     t.Scope.Methods,
		Paths:       t.Scope.Paths,
		Hosts:       t.Scope.Hosts,
		RateLimit:   t.RateLimit,
	}
}

// expiryJSON is how create and update calls ask for an expiry: expires_in
// is a duration in Caddy's syntax (90d, 12h) or "never"; expires_at an RFC
// 3339 time. At most one of them.
type expiryJSON struct {
	ExpiresIn *string `json:"expires_in"`
	ExpiresAt *string `json:"expires_at"`
}

func (e expiryJSON) given() bool { return e.ExpiresIn != nil || e.ExpiresAt != nil }

// request turns the JSON fields into a policy request, or a 400.
func (e expiryJSON) request() (policy.ExpiryRequest, error) {
	var req policy.ExpiryRequest
	if e.ExpiresIn != nil {
		if *e.ExpiresIn == "never" {
			req.Never = true
		} else {
			d, err := caddy.ParseDuration(*e.ExpiresIn)
			if err != nil {
				return req, badRequest(fmt.Errorf("expires_in %q: not a duration (use e.g. 30d, 12h or never)", *e.ExpiresIn))
			}
			if d <= 0 {
				return req, badRequest(fmt.Errorf("expires_in %q: must be positive", *e.ExpiresIn))
			}
			req.In = d
		}
	}
	if e.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339, *e.ExpiresAt)
		if err != nil {
			return req, badRequest(fmt.Errorf("expires_at %q: not an RFC 3339 time such as 2027-01-31T00:00:00Z", *e.ExpiresAt))
		}
		req.At = t
	}
	return req, nil
}

// resolveExpiry applies the user's validity rules to an expiry request.
func (app *App) resolveExpiry(now time.Time, user string, e expiryJSON) (time.Time, error) {
	req, err := e.request()
	if err != nil {
		return time.Time{}, err
	}
	v := app.validity(user)
	exp, reason := policy.ResolveExpiry(now, req, v)
	switch reason {
	case policy.ReasonOK:
		return exp, nil
	case policy.ReasonExpiryConflict:
		return exp, badRequest(errors.New("give either expires_in or expires_at, not both"))
	case policy.ReasonExpiryInPast:
		return exp, badRequest(errors.New("the expiry must be in the future"))
	case policy.ReasonExpiryTooLong:
		return exp, badRequest(fmt.Errorf("the expiry is beyond max_validity (%s)", formatDuration(v.Max)))
	case policy.ReasonNoExpiryNotAllowed:
		return exp, badRequest(fmt.Errorf("tokens without expiry are not allowed (max_validity is %s)", formatDuration(v.Max)))
	}
	return exp, badRequest(fmt.Errorf("expiry refused: %s", reason))
}

type createRequest struct {
	User        string   `json:"user"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	AllowedIPs  []string `json:"allowed_ips"`
	ReadOnly    bool     `json:"read_only"`
	Methods     []string `json:"methods"`
	Paths       []string `json:"paths"`
	Hosts       []string `json:"hosts"`
	RateLimit   string   `json:"rate_limit"`
	expiryJSON
}

// checkHolder refuses with 403 a user who may not hold tokens.
func (app *App) checkHolder(user string) error {
	key := strings.ToLower(user)
	if app.holders.Check(key, app.store.GroupsOf(key)) != policy.ReasonOK {
		return caddy.APIError{
			HTTPStatus: http.StatusForbidden,
			Err:        fmt.Errorf("user %q may not hold tokens: not among the holders (%s)", user, strings.Join(app.Holders, ", ")),
		}
	}
	return nil
}

func (a *adminAPI) create(w http.ResponseWriter, r *http.Request, app *App) error {
	var req createRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := checkDescription(req.Description); err != nil {
		return err
	}
	if req.User != "" {
		if err := app.checkHolder(req.User); err != nil {
			return err
		}
	}
	now := app.now()
	exp, err := app.resolveExpiry(now, req.User, req.expiryJSON)
	if err != nil {
		return err
	}
	ev := adminEvent(r, event.TypeTokenCreated)
	tok, secret, err := app.store.Create(r.Context(), storage.NewToken{
		Prefix:      app.TokenPrefix,
		User:        req.User,
		Name:        req.Name,
		Description: req.Description,
		ExpiresAt:   exp,
		AllowedIPs:  req.AllowedIPs,
		Scope:       policy.Scope{ReadOnly: req.ReadOnly, Methods: req.Methods, Paths: req.Paths, Hosts: req.Hosts},
		RateLimit:   req.RateLimit,
	}, app.inTx(ev))
	if err != nil {
		return storeError("creating token", err)
	}
	app.adminDone(ev, tok)
	app.auditState.emit(app.auditState.ctx, eventCreated, tokenEventData(tok))
	app.sweepExpiringOnce(r.Context()) // a short-lived token warns at once
	out := app.tokenJSON(tok, now)
	out.Token = secret
	return writeJSON(w, http.StatusCreated, out)
}

func (a *adminAPI) list(w http.ResponseWriter, r *http.Request, app *App) error {
	q, err := queryValues(r)
	if err != nil {
		return err
	}
	for key := range q {
		if key != "user" && key != "state" {
			return badRequest(fmt.Errorf("unknown query parameter %q (filters are user and state)", key))
		}
	}
	f := storage.Filter{User: q.Get("user"), State: storage.State(q.Get("state"))}
	switch f.State {
	case "", storage.StateActive, storage.StateExpired, storage.StateRevoked:
	default:
		return badRequest(fmt.Errorf("state %q: must be active, expired or revoked", f.State))
	}
	toks, err := app.store.List(r.Context(), f)
	if err != nil {
		return storeError("listing tokens", err)
	}
	now := app.now()
	out := make([]tokenJSON, 0, len(toks))
	for _, t := range toks {
		out = append(out, app.tokenJSON(t, now))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *adminAPI) show(w http.ResponseWriter, r *http.Request, app *App, id string) error {
	tok, err := app.store.Get(r.Context(), id)
	if err != nil {
		return storeError("getting token", err)
	}
	return writeJSON(w, http.StatusOK, app.tokenJSON(tok, app.now()))
}

type updateRequest struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	AllowedIPs  *[]string `json:"allowed_ips"`
	ReadOnly    *bool     `json:"read_only"`
	Methods     *[]string `json:"methods"`
	Paths       *[]string `json:"paths"`
	Hosts       *[]string `json:"hosts"`
	RateLimit   *string   `json:"rate_limit"`
	expiryJSON
}

func (a *adminAPI) update(w http.ResponseWriter, r *http.Request, app *App, id string) error {
	var req updateRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Description != nil {
		if err := checkDescription(*req.Description); err != nil {
			return err
		}
	}
	// The patch carries only the fields the client sent; the store applies
	// them to the token as it reads it inside its write transaction. Read
	// here and written back, a field could undo a concurrent PATCH.
	p := storage.Patch{
		Name: req.Name, Description: req.Description, AllowedIPs: req.AllowedIPs, RateLimit: req.RateLimit,
		ReadOnly: req.ReadOnly, Methods: req.Methods, Paths: req.Paths, Hosts: req.Hosts,
	}
	var changed []string
	note := func(given bool, field string) bool {
		if given {
			changed = append(changed, field)
		}
		return given
	}
	note(req.Name != nil, "name")
	note(req.Description != nil, "description")
	note(req.AllowedIPs != nil, "allowed_ips")
	note(req.RateLimit != nil, "rate_limit")
	note(req.ReadOnly != nil, "read_only")
	note(req.Methods != nil, "methods")
	note(req.Paths != nil, "paths")
	note(req.Hosts != nil, "hosts")
	now := app.now()
	if note(req.given(), "expires_at") {
		// The owner's max_validity applies; a token's user never changes.
		cur, err := app.store.Get(r.Context(), id)
		if err != nil {
			return storeError("updating token", err)
		}
		exp, err := app.resolveExpiry(now, cur.User, req.expiryJSON)
		if err != nil {
			return err
		}
		p.ExpiresAt = &exp
	}
	if len(changed) == 0 {
		return badRequest(errors.New("nothing to update: give name, description, expires_in, expires_at, allowed_ips, read_only, methods, paths, hosts or rate_limit"))
	}
	ev := adminEvent(r, event.TypeTokenUpdated)
	ev.Changed = changed
	tok, err := app.store.Update(r.Context(), id, p, app.inTx(ev))
	if err != nil {
		return storeError("updating token", err)
	}
	app.adminDone(ev, tok)
	if p.ExpiresAt != nil {
		app.sweepExpiringOnce(r.Context())
	}
	return writeJSON(w, http.StatusOK, app.tokenJSON(tok, now))
}

func (a *adminAPI) revoke(w http.ResponseWriter, r *http.Request, app *App, id string) error {
	ev := adminEvent(r, event.TypeTokenRevoked)
	tok, revoked, err := app.store.Revoke(r.Context(), id, app.inTx(ev))
	if err != nil {
		return storeError("revoking token", err)
	}
	if revoked { // revoking twice changes nothing and records nothing
		app.adminDone(ev, tok)
		app.auditState.emit(app.auditState.ctx, eventRevoked, tokenEventData(tok))
	}
	return writeJSON(w, http.StatusOK, app.tokenJSON(tok, app.now()))
}

func (a *adminAPI) rotate(w http.ResponseWriter, r *http.Request, app *App, id string) error {
	if err := decodeEmptyBody(w, r); err != nil {
		return err
	}
	cur, err := app.store.Get(r.Context(), id)
	if err != nil {
		return storeError("rotating token", err)
	}
	if err := app.checkHolder(cur.User); err != nil {
		return err
	}
	ev := adminEvent(r, event.TypeTokenRotated)
	tok, secret, err := app.store.Rotate(r.Context(), id, app.TokenPrefix, app.inTx(ev))
	if err != nil {
		return storeError("rotating token", err)
	}
	app.adminDone(ev, tok)
	out := app.tokenJSON(tok, app.now())
	out.Token = secret
	return writeJSON(w, http.StatusCreated, out)
}

// revokeUserResponse answers DELETE /api_tokens/users/{user}/tokens.
type revokeUserResponse struct {
	User    string      `json:"user"`
	Revoked int         `json:"revoked"`
	Tokens  []tokenJSON `json:"tokens"`
}

func (a *adminAPI) revokeUser(w http.ResponseWriter, r *http.Request, app *App, user string) error {
	ev := adminEvent(r, event.TypeUserTokensRevoked)
	toks, err := app.store.RevokeUser(r.Context(), user, app.inTx(ev))
	if err != nil {
		return storeError("revoking tokens of user", err)
	}
	ev.User, ev.Count = user, len(toks)
	app.adminDone(ev, storage.Token{})
	for _, t := range toks {
		app.auditState.emit(app.auditState.ctx, eventRevoked, tokenEventData(t))
	}
	now := app.now()
	out := revokeUserResponse{User: user, Revoked: len(toks), Tokens: make([]tokenJSON, 0, len(toks))}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, app.tokenJSON(t, now))
	}
	return writeJSON(w, http.StatusOK, out)
}

// memberJSON is a group membership as the admin API shows it.
type memberJSON struct {
	Group   string    `json:"group"`
	User    string    `json:"user"`
	AddedAt time.Time `json:"added_at"`
}

// groupJSON is a group as the admin API lists it.
type groupJSON struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
}

func (a *adminAPI) listGroups(w http.ResponseWriter, r *http.Request, app *App) error {
	groups, err := app.store.Groups(r.Context())
	if err != nil {
		return storeError("listing groups", err)
	}
	out := make([]groupJSON, 0, len(groups))
	for _, g := range groups {
		out = append(out, groupJSON{Name: g.Name, Members: g.Members})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *adminAPI) listMembers(w http.ResponseWriter, r *http.Request, app *App, group string) error {
	if err := policy.ValidGroupName(group); err != nil {
		return badRequest(err)
	}
	members, err := app.store.Members(r.Context(), group)
	if err != nil {
		return storeError("listing group members", err)
	}
	out := make([]memberJSON, 0, len(members))
	for _, m := range members {
		out = append(out, memberJSON{Group: m.Group, User: m.User, AddedAt: m.AddedAt.UTC()})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *adminAPI) addMember(w http.ResponseWriter, r *http.Request, app *App, group, user string) error {
	if err := decodeEmptyBody(w, r); err != nil {
		return err
	}
	ev := adminEvent(r, event.TypeGroupMemberAdded)
	m, added, err := app.store.AddMember(r.Context(), group, user, app.inTx(ev))
	if err != nil {
		return storeError("adding group member", err)
	}
	status := http.StatusOK
	if added {
		status = http.StatusCreated
		ev.User, ev.Group = m.User, m.Group
		app.adminDone(ev, storage.Token{})
	}
	return writeJSON(w, status, memberJSON{Group: m.Group, User: m.User, AddedAt: m.AddedAt.UTC()})
}

func (a *adminAPI) removeMember(w http.ResponseWriter, r *http.Request, app *App, group, user string) error {
	if err := policy.ValidGroupName(group); err != nil {
		return badRequest(err)
	}
	ev := adminEvent(r, event.TypeGroupMemberRemoved)
	removed, err := app.store.RemoveMember(r.Context(), group, user, app.inTx(ev))
	if err != nil {
		return storeError("removing group member", err)
	}
	if !removed {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("user %q is not a member of group %q", user, group)}
	}
	ev.User, ev.Group = user, group
	app.adminDone(ev, storage.Token{})
	return writeJSON(w, http.StatusOK, struct {
		Group   string `json:"group"`
		User    string `json:"user"`
		Removed bool   `json:"removed"`
	}{group, user, true})
}

// adminEvent starts the audit event of a change made through the admin
// API; the store completes it (time, token, user) in the change's
// transaction.
func adminEvent(r *http.Request, typ event.Type) *event.Event {
	return &event.Event{Type: typ, Outcome: event.OutcomeSuccess, Actor: hostOnly(r.RemoteAddr), Method: r.Method, Path: r.URL.Path}
}

// inTx returns ev for the store to write in the change's transaction, or
// nil if admin events are not stored.
func (app *App) inTx(ev *event.Event) *event.Event {
	if app.auditState.recorder.StoresAdmin() {
		return ev
	}
	return nil
}

// adminDone logs a completed admin change (the store has already written
// it, if it is stored), filling in what the store would have.
func (app *App) adminDone(ev *event.Event, tok storage.Token) {
	if ev.Time.IsZero() {
		ev.Time = app.now()
	}
	if ev.TokenID == "" {
		ev.TokenID = tok.ID
	}
	if ev.User == "" {
		ev.User = tok.User
	}
	app.auditState.recorder.Admin(*ev)
}

// tokenEventData is the payload of a token's Caddy events.
func tokenEventData(t storage.Token) map[string]any {
	return map[string]any{"token_id": t.ID, "user": t.User, "name": t.Name, "expires_at": t.ExpiresAt}
}

// pathParts splits the request path below prefix into unescaped segments.
func pathParts(r *http.Request, prefix string) ([]string, error) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), prefix)
	rest = strings.TrimSuffix(rest, "/")
	if rest == "" {
		return nil, nil
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return nil, caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("resource not found: %s", r.URL.Path)}
		}
		parts[i] = u
	}
	return parts, nil
}

// decodeBody reads one JSON object into v, strictly. The body is read
// whole first, so that its size is judged before its content: over
// maxBodyBytes is 413, however it starts. Then it is decoded by
// go-json-experiment/json (the proposed encoding/json/v2), whose defaults
// already refuse what encoding/json lets through: invalid UTF-8 and lone
// surrogate escapes (v1 turns them into U+FFFD silently), a key that is
// not exactly a field's name (v1 also takes "User" or "uſer" for
// "user"), a key given twice (v1 takes the last), and data after the
// object. RejectUnknownMembers refuses unknown fields. What it lacks is
// added here: an empty body and a byte order mark get their own message,
// and a null anywhere is refused (refuseNull). Each problem is a 400
// naming the field and the byte offset (bodyError).
//
// Duplicate keys are refused, although Caddy's own admin API takes the
// last one: a proxy, log or review tool that reads the first would see
// another request than the one applied, e.g. another owner for the
// token. Nulls are refused because in a PATCH they would read as "leave
// unchanged" to the decoder and as "clear" to many clients: omit a field
// to leave it, give [] or "" to clear it.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(err)
	}
	if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
		return badRequest(errors.New("request body is empty: a JSON object is required"))
	}
	if bytes.HasPrefix(body, []byte("\xef\xbb\xbf")) {
		return badRequest(errors.New("request body starts with a UTF-8 byte order mark: send the JSON without it"))
	}
	if err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true), refuseNull); err != nil {
		return bodyError(err)
	}
	return nil
}

// errNull is the error refuseNull reports for a JSON null.
var errNull = errors.New("null is not allowed")

// refuseNull makes the decoder refuse a JSON null wherever it appears
// (the library would store a zero value); every other value is left to
// the default decoding.
var refuseNull = jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, _ any) error {
	if dec.PeekKind() == 'n' {
		return errNull
	}
	return errors.ErrUnsupported
}))

// jsonKinds names the kinds of JSON value.
var jsonKinds = map[jsontext.Kind]string{
	'n': "null", 'f': "boolean", 't': "boolean", '"': "string", '0': "number", '{': "object", '[': "array",
}

// checkDescription refuses control characters in a description, but for
// tab and line breaks: the CLI prints descriptions to a terminal, where an
// escape sequence would be obeyed.
func checkDescription(desc string) error {
	for _, r := range desc {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return badRequest(fmt.Errorf("description must not contain control characters other than tab and line breaks (found %U)", r))
		}
	}
	return nil
}

// decodeEmptyBody accepts an empty body or an empty JSON object.
func decodeEmptyBody(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(err)
	}
	if s := strings.TrimSpace(string(b)); s != "" && s != "{}" {
		return badRequest(errors.New("this call takes no request body"))
	}
	return nil
}

// bodyError turns an error reading or decoding a body into a 400 (or 413)
// naming what is wrong and where: the field (the first token of the
// error's JSON pointer, with the full pointer if the problem is deeper)
// and the byte offset.
func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	var semErr *jsonv2.SemanticError
	var synErr *jsontext.SyntacticError
	switch {
	case errors.As(err, &maxErr):
		return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge,
			Err: fmt.Errorf("request body larger than %d bytes", maxErr.Limit)}
	case errors.As(err, &semErr):
		field := jsonField(semErr.JSONPointer)
		switch {
		case semErr.Err == jsonv2.ErrUnknownName:
			return badRequest(fmt.Errorf("unknown field %.64q", semErr.JSONPointer.LastToken()))
		case semErr.JSONPointer == "" && semErr.Err == errNull:
			return badRequest(errors.New("request body must be a JSON object, got null"))
		case semErr.JSONPointer == "":
			return badRequest(fmt.Errorf("request body must be a JSON object, got %s", article(jsonKinds[semErr.JSONKind])))
		case semErr.Err == errNull:
			return badRequest(fmt.Errorf("field %s: null is not allowed (omit the field to leave it unset, or give [] or \"\" to clear it)", field))
		case semErr.GoType != nil && semErr.Err == nil:
			return badRequest(fmt.Errorf("field %s: expected %s, got JSON %s", field, semErr.GoType, jsonKinds[semErr.JSONKind]))
		}
		return badRequest(fmt.Errorf("field %s: %v", field, semErr.Err))
	case errors.As(err, &synErr):
		switch {
		case synErr.Err == jsontext.ErrDuplicateName:
			return badRequest(fmt.Errorf("duplicate key %.64q: give each field once", synErr.JSONPointer.LastToken()))
		case errors.Is(synErr.Err, io.ErrUnexpectedEOF):
			return badRequest(errors.New("malformed JSON: unexpected end of input"))
		case synErr.JSONPointer != "":
			return badRequest(fmt.Errorf("malformed JSON in field %s: %v (at byte %d)", jsonField(synErr.JSONPointer), synErr.Err, synErr.ByteOffset))
		}
		return badRequest(fmt.Errorf("malformed JSON at byte %d: %v", synErr.ByteOffset, synErr.Err))
	}
	return badRequest(fmt.Errorf("malformed JSON: %v", err))
}

// jsonField names the top-level field a JSON pointer is in, quoted, with
// the whole pointer (cut to 64 bytes) when it points deeper.
func jsonField(p jsontext.Pointer) string {
	top, rest := "", ""
	for tok := range p.Tokens() {
		if top == "" {
			top = tok
		} else {
			rest = string(p)
			break
		}
	}
	if rest == "" {
		return fmt.Sprintf("%.64q", top)
	}
	return fmt.Sprintf("%.64q (at %.64q)", top, rest)
}

// article puts "a" or "an" before a noun.
func article(noun string) string {
	if noun == "null" {
		return noun
	}
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

// storeError maps the store's sentinel errors onto admin API errors.
func storeError(op string, err error) error {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: err}
	case errors.Is(err, storage.ErrInvalid):
		return badRequest(err)
	case errors.Is(err, storage.ErrConflict):
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: err}
	case errors.Is(err, storage.ErrBusy): // transient: the change can be tried again
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	if reason, ok := storage.Unavailable(err); ok {
		return caddy.APIError{
			HTTPStatus: http.StatusServiceUnavailable,
			Err:        fmt.Errorf("%s: the token store cannot write (%s); issued tokens keep working: %w", op, reason, err),
		}
	}
	return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err} // store errors name their operation
}

// queryValues parses the request's query string, refusing one that does
// not parse: r.URL.Query() drops a pair it can't decode (a bad %-escape, a
// semicolon) without a word, which would quietly widen the filter the
// caller asked for.
func queryValues(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest(fmt.Errorf("malformed query string: %v", err))
	}
	return q, nil
}

// badRequest answers 400 with err's message, clipped to maxErrorLen: the
// store's messages quote the values at fault, which may be long (a 60 KB
// "CIDR").
func badRequest(err error) error {
	return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: clipError(err)}
}

// maxErrorLen bounds the message of a 400 answer, in bytes.
const maxErrorLen = 512

// clippedError is an error whose message was cut to maxErrorLen; it
// unwraps to the original.
type clippedError struct {
	msg string
	err error
}

func (e clippedError) Error() string { return e.msg }
func (e clippedError) Unwrap() error { return e.err }

// clipError cuts err's message to maxErrorLen bytes, on a character
// boundary, marking the cut.
func clipError(err error) error {
	msg := err.Error()
	if len(msg) <= maxErrorLen {
		return err
	}
	cut := maxErrorLen - len("… (cut)")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return clippedError{msg: msg[:cut] + "… (cut)", err: err}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) error {
	w.Header().Set("Allow", allow)
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed here", r.Method)}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// formatDuration prints a lifetime in days when it is a whole number of
// days, as the Caddyfile would say it.
func formatDuration(d time.Duration) string {
	if d < 0 {
		return "unlimited"
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// Interface guards
var _ caddy.AdminRouter = (*adminAPI)(nil)

// eventJSON is an audit event as the admin API shows it. A summary of
// refusals beyond the detail limit is a request event with a count and
// the top lists.
type eventJSON struct {
	ID       int64     `json:"id"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Outcome  string    `json:"outcome"`
	Reason   string    `json:"reason,omitempty"`
	User     string    `json:"user,omitempty"`
	TokenID  string    `json:"token_id,omitempty"`
	Scheme   string    `json:"scheme,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
	Method   string    `json:"method,omitempty"`
	Host     string    `json:"host,omitempty"`
	Path     string    `json:"path,omitempty"`
	Status   int       `json:"status,omitempty"`
	Actor    string    `json:"actor,omitempty"`
	Changed  []string  `json:"changed,omitempty"`
	Count    int       `json:"count,omitempty"`
	Group    string    `json:"group,omitempty"`
	Rule     string    `json:"rule,omitempty"`

	TopClients []event.Tally `json:"top_clients,omitempty"`
	TopUsers   []event.Tally `json:"top_users,omitempty"`

	// ClaimedUser is the name presented with another user's token (User
	// is the token's owner).
	ClaimedUser string `json:"claimed_user,omitempty"`
}

// auditPageJSON answers GET /api_tokens/audit.
type auditPageJSON struct {
	Events     []eventJSON `json:"events"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// auditFilters are the query parameters of GET /api_tokens/audit.
var auditFilters = map[string]bool{
	"type": true, "outcome": true, "user": true, "token": true, "client_ip": true,
	"since": true, "until": true, "cursor": true, "limit": true,
}

func (a *adminAPI) queryAudit(w http.ResponseWriter, r *http.Request, app *App) error {
	q, err := queryValues(r)
	if err != nil {
		return err
	}
	for key, vals := range q {
		if !auditFilters[key] {
			return badRequest(fmt.Errorf("unknown query parameter %q (filters are type, outcome, user, token, client_ip, since, until, cursor, limit)", key))
		}
		if len(vals) > 1 && key != "type" {
			return badRequest(fmt.Errorf("query parameter %q given %d times", key, len(vals)))
		}
	}
	query := event.Query{
		Outcome:  event.Outcome(q.Get("outcome")),
		User:     q.Get("user"),
		TokenID:  q.Get("token"),
		ClientIP: q.Get("client_ip"),
		Cursor:   q.Get("cursor"),
	}
	for _, v := range q["type"] {
		for t := range strings.SplitSeq(v, ",") {
			typ := event.Type(strings.TrimSpace(t))
			if typ.Class() == "" {
				return badRequest(fmt.Errorf("type %q: not an audit event type", t))
			}
			query.Types = append(query.Types, typ)
		}
	}
	switch query.Outcome {
	case "", event.OutcomeSuccess, event.OutcomeFailure, event.OutcomeDenied, event.OutcomePassed, event.OutcomeReported:
	default:
		return badRequest(fmt.Errorf("outcome %q: must be success, failure, denied, passed or reported", query.Outcome))
	}
	for name, dst := range map[string]*time.Time{"since": &query.Since, "until": &query.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return badRequest(fmt.Errorf("%s %q: not an RFC 3339 time such as 2026-11-01T00:00:00Z", name, v))
			}
			*dst = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > event.MaxQueryLimit {
			return badRequest(fmt.Errorf("limit %q: must be a whole number from 1 to %d", v, event.MaxQueryLimit))
		}
		query.Limit = n
	}
	page, err := app.store.QueryAudit(r.Context(), query)
	if err != nil {
		return storeError("querying audit events", err)
	}
	out := auditPageJSON{Events: make([]eventJSON, 0, len(page.Events)), NextCursor: page.NextCursor}
	for _, e := range page.Events {
		out.Events = append(out.Events, eventJSON{
			ID: e.ID, Time: e.Time.UTC(), Type: string(e.Type), Outcome: string(e.Outcome), Reason: e.Reason,
			User: e.User, TokenID: e.TokenID, Scheme: e.Scheme, ClientIP: e.ClientIP, Method: e.Method,
			Host: e.Host, Path: e.Path, Status: e.Status, Actor: e.Actor, Changed: e.Changed,
			Count: e.Count, Group: e.Group, Rule: e.Rule, TopClients: e.TopClients, TopUsers: e.TopUsers,
			ClaimedUser: e.ClaimedUser,
		})
	}
	return writeJSON(w, http.StatusOK, out)
}
