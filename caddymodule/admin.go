package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"

	"github.com/apitoken/caddy-apitoken/storage"
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

// Interface guards
var _ caddy.AdminRouter = (*adminAPI)(nil)
