package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/apitoken/caddy-apitoken/event"
)

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
