package caddymodule

import (
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

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
