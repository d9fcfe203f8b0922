package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults of the api_tokens app.
const (
	DefaultValidity = 90 * 24 * time.Hour
	DefaultMaxValid = 365 * 24 * time.Hour
)

// stores holds one open token store per database file. It outlives config
// reloads: Caddy provisions the new config before it cleans up the old one,
// so the reference count never drops to zero on a reload and the database
// is opened exactly once.
var stores = caddy.NewUsagePool()

// storeHandle lets a *tokenstore.Store live in a caddy.UsagePool.
type storeHandle struct{ *tokenstore.Store }

// Destruct closes the store when its last user is cleaned up.
func (s storeHandle) Destruct() error { return s.Close() }

// App is the api_tokens app: it owns the token store and the rules for
// creating tokens. The api_token handler and the admin API
// (admin.api.api_tokens) both work through it. A config that uses the
// api_token handler without configuring this app gets it with its defaults.
//
// Caddyfile: the global option `api_tokens { … }`.
type App struct {
	// Path of the SQLite database file holding the tokens. It and its
	// directory are created if missing, readable by Caddy's user only.
	// Default: `api_tokens/tokens.db` under Caddy's data directory.
	Database string `json:"database,omitempty"`

	// Lifetime of a token whose create call names no expiry.
	// Default: 90d.
	DefaultValidity caddy.Duration `json:"default_validity,omitempty"`

	// Longest lifetime a token may be created or updated with. A create
	// call asking for more, or for no expiry at all, is refused. A
	// negative value lifts the limit and allows tokens without expiry.
	// Default: 365d.
	MaxValidity caddy.Duration `json:"max_validity,omitempty"`

	// Prefix of new tokens, so that secret scanners can recognise a leaked
	// one: 1 to 16 lowercase letters and digits, starting with a letter.
	// Tokens created with an earlier prefix keep working.
	// Default: `caddytok`.
	TokenPrefix string `json:"token_prefix,omitempty"`

	// Who may own tokens: user names and `group:<name>` entries (groups
	// are managed through the admin API). Enforced when a token is created
	// and on every use, so a user who leaves the list or the group loses
	// the use of their tokens on the next request. Default: anyone.
	Holders []string `json:"holders,omitempty"`

	// Lifetime rules per group, overriding default_validity and
	// max_validity for the group's members. A member of several such
	// groups gets the most generous one. Default: none.
	Groups map[string]*GroupRules `json:"groups,omitempty"`

	// The audit trail: which events are recorded (to the log
	// `api_tokens.audit` and the token database) and for how long.
	// Default: admin, failure and denied events, kept 90d.
	Audit *AuditConfig `json:"audit,omitempty"`

	store      *tokenstore.Store
	storeKey   string
	released   bool // Cleanup dropped the store reference
	audit      audit.Sink
	auditState *auditState
	// skipSuccess: the audit selection leaves successes out, so the gate
	// need not build their events.
	skipSuccess bool
	logger      *zap.Logger
	now         func() time.Time
	realClock   bool // now is time.Now, not a test's clock
	holders     policy.Holders
	perGroup    map[string]policy.Validity
}

// GroupRules are a group's own lifetime rules.
type GroupRules struct {
	// Lifetime of a member's token whose create call names no expiry.
	// Default: the app's default_validity (cut to this group's
	// max_validity).
	DefaultValidity caddy.Duration `json:"default_validity,omitempty"`
	// Longest lifetime of a member's token; negative for unlimited.
	// Default: the app's max_validity.
	MaxValidity caddy.Duration `json:"max_validity,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "api_tokens",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision applies defaults and takes a reference to the token store.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if a.now == nil {
		a.now, a.realClock = time.Now, true
	}
	if a.DefaultValidity == 0 {
		a.DefaultValidity = caddy.Duration(DefaultValidity)
	}
	if a.MaxValidity == 0 {
		a.MaxValidity = caddy.Duration(DefaultMaxValid)
	}
	if a.TokenPrefix == "" {
		a.TokenPrefix = tokenstore.DefaultPrefix
	}
	var err error
	if a.holders, err = policy.ParseHolders(a.Holders); err != nil {
		return err
	}
	a.perGroup = make(map[string]policy.Validity, len(a.Groups))
	for name, g := range a.Groups {
		if err := policy.ValidGroupName(name); err != nil {
			return fmt.Errorf("groups: %w", err)
		}
		if g == nil {
			return fmt.Errorf("groups: group %q has no rules", name)
		}
		a.perGroup[name] = policy.Validity{Default: time.Duration(g.DefaultValidity), Max: time.Duration(g.MaxValidity)}
	}

	path := a.Database
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "api_tokens", "tokens.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("database %q: %w", path, err)
	}
	v, _, err := stores.LoadOrNew(abs, func() (caddy.Destructor, error) {
		s, err := tokenstore.Open(context.Background(), abs, tokenstore.Options{})
		if errors.Is(err, tokenstore.ErrNoCgo) {
			return nil, errNoCgo
		}
		return storeHandle{s}, err
	})
	if err != nil {
		return err // LoadOrNew removed the failed entry: no Delete
	}
	a.store = v.(storeHandle).Store
	a.storeKey = abs
	if err := a.provisionAudit(ctx); err != nil {
		return err
	}
	a.audit = a.auditState.recorder
	return nil
}

// Validate checks the app's options against each other.
func (a *App) Validate() error {
	if err := tokenstore.ValidPrefix(a.TokenPrefix); err != nil {
		return fmt.Errorf("token_prefix: %w", err)
	}
	if a.DefaultValidity < 0 {
		return fmt.Errorf("default_validity %s: must be positive", time.Duration(a.DefaultValidity))
	}
	if a.MaxValidity > 0 && a.DefaultValidity > a.MaxValidity {
		return fmt.Errorf("default_validity %s exceeds max_validity %s",
			time.Duration(a.DefaultValidity), time.Duration(a.MaxValidity))
	}
	for name, g := range a.Groups {
		if g.DefaultValidity < 0 {
			return fmt.Errorf("group %q: default_validity %s: must be positive", name, time.Duration(g.DefaultValidity))
		}
		if g.MaxValidity > 0 && g.DefaultValidity > g.MaxValidity {
			return fmt.Errorf("group %q: default_validity %s exceeds max_validity %s",
				name, time.Duration(g.DefaultValidity), time.Duration(g.MaxValidity))
		}
	}
	return nil
}

// errNoCgo explains how to rebuild when the SQLite driver is a stub.
var errNoCgo = errors.New("api_tokens needs a cgo build for its SQLite store (github.com/mattn/go-sqlite3), " +
	"but this Caddy was built with CGO_ENABLED=0: rebuild it with a C compiler installed and " +
	"`CGO_ENABLED=1 xcaddy build --with github.com/apitoken/caddy-apitoken/caddymodule`")

// Start runs the app's background work: the audit queue's writer, usage
// flushes, audit retention and the expiry sweep.
func (a *App) Start() error {
	a.startAudit()
	running.Store(a)
	return nil
}

// Stop ends the background work, writing out queued audit events and
// pending usage first. The store is released in Cleanup.
func (a *App) Stop() error {
	running.CompareAndSwap(a, nil) // unless a newer config's app took over
	a.stopAudit()
	return nil
}

// running is the api_tokens app of the running config, for the admin API.
// Caddy builds a new admin endpoint for every config before it provisions
// the apps, so an admin request must not look the app up through the
// config: during a reload it could find one still being provisioned. Start
// publishes a fully provisioned app; Stop withdraws it unless the next
// config's app has already replaced it (Caddy starts the new config before
// it stops the old one).
var running atomic.Pointer[App]

// Cleanup drops this config's reference to the token store. The store is
// closed when no config uses it any more.
func (a *App) Cleanup() error {
	a.stopAudit() // in case Start ran but Stop did not
	if a.store == nil || a.released {
		return nil
	}
	// a.store stays set: Caddy does not wait for the old config's requests
	// before cleaning it up, and they may still look tokens up. The store
	// itself stays open while the new config holds a reference.
	a.released = true
	_, err := stores.Delete(a.storeKey)
	return err
}

// validity returns the lifetime rules for a user's tokens: the app's,
// or those of the user's most generous group that has its own.
func (a *App) validity(user string) policy.Validity {
	global := policy.Validity{Default: time.Duration(a.DefaultValidity), Max: time.Duration(a.MaxValidity)}
	if len(a.perGroup) == 0 {
		return global
	}
	return policy.ValidityFor(global, a.store.GroupsOf(strings.ToLower(user)), a.perGroup)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
