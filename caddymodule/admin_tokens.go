package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
)

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
	// Keyed by token.Key, which is 0 for an id token.Parse refuses:
	// the id check keeps such a token from showing another's use.
	key, _ := token.Key(t.ID)
	if pending, ok := app.pendingUsage(key); ok && pending.TokenID == t.ID {
		u = audit.MergeUsage(u, pending)
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
	app.emit(eventCreated, tokenEventData(tok))
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
		app.emit(eventRevoked, tokenEventData(tok))
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
		app.emit(eventRevoked, tokenEventData(t))
	}
	now := app.now()
	out := revokeUserResponse{User: user, Revoked: len(toks), Tokens: make([]tokenJSON, 0, len(toks))}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, app.tokenJSON(t, now))
	}
	return writeJSON(w, http.StatusOK, out)
}

// adminEvent starts the audit event of a change made through the admin
// API; the store completes it (time, token, user) in the change's
// transaction.
func adminEvent(r *http.Request, typ event.Type) *event.Event {
	return &event.Event{Type: typ, Outcome: event.OutcomeSuccess, Actor: hostOnly(r.RemoteAddr), Method: r.Method, Path: r.URL.Path}
}

// tokenEventData is the payload of a token's Caddy events.
func tokenEventData(t storage.Token) map[string]any {
	return map[string]any{"token_id": t.ID, "user": t.User, "name": t.Name, "expires_at": t.ExpiresAt}
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
