package caddymodule

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults of the api_tokens app.
const (
	DefaultValidity = 90 * 24 * time.Hour
	DefaultMaxValid = 365 * 24 * time.Hour
	// DefaultStaleAfter is stale_after's default: thirty of the store's
	// polls.
	DefaultStaleAfter = 30 * tokenstore.DefaultPollInterval
	// MinStaleAfter is the least stale_after allowed: five polls, so that
	// a slow poll or two never refuse requests.
	MinStaleAfter = 5 * tokenstore.DefaultPollInterval
)

// App is the api_tokens app: it owns the token store and the rules for
// creating tokens. The api_token handler and the admin API
// (admin.api.api_tokens) both work through it. A config that uses the
// api_token handler without configuring this app gets it with its defaults.
//
// Caddyfile: the global option `api_tokens { … }`.
type App struct {
	// Where the tokens are kept: a module of the api_tokens.storage
	// namespace, named by its `module` key. Only one of storage and
	// database may be set. Default: `sqlite` (api_tokens.storage.sqlite)
	// with database.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=api_tokens.storage inline_key=module"`

	// Path of the SQLite database file holding the tokens: the shorthand
	// for `"storage": {"module": "sqlite", "database": …}`. It and its
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

	// How old the gate's view of the token store may grow while the store
	// cannot read changes made by other processes (another Caddy, the CLI
	// against the file, an operator's SQL): past it, every request that
	// needs a token is answered 503 until a read succeeds again, since a
	// token revoked elsewhere might otherwise still pass. The store reads
	// changes every second; at least 5s. A negative value never refuses.
	// Default: 30s.
	StaleAfter caddy.Duration `json:"stale_after,omitempty"`

	store      Storage
	release    func() error // drops this config's reference to the store
	released   bool         // Cleanup called release
	audit      audit.Sink
	auditState *auditState
	// skipSuccess: the audit selection leaves successes out, so the gate
	// need not build their events.
	skipSuccess bool
	logger      *zap.Logger
	now         func() time.Time
	realClock   bool // now is time.Now, not a test's clock
	staleAfter  time.Duration
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
		a.TokenPrefix = token.DefaultPrefix
	}
	if a.StaleAfter == 0 {
		a.StaleAfter = caddy.Duration(DefaultStaleAfter)
	}
	a.staleAfter = time.Duration(a.StaleAfter)
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

	opener, err := a.storageOpener(ctx)
	if err != nil {
		return err
	}
	if a.store, a.release, err = opener.OpenStorage(ctx); err != nil {
		return err
	}
	if err := a.provisionAudit(ctx); err != nil {
		return err
	}
	a.audit = a.auditState.recorder
	return nil
}

// storageOpener returns the storage module of the config: the one named by
// storage, or sqlite with database.
func (a *App) storageOpener(ctx caddy.Context) (StorageOpener, error) {
	if a.StorageRaw == nil {
		return &SQLiteStorage{Database: a.Database}, nil
	}
	if a.Database != "" {
		return nil, fmt.Errorf("database %q and storage are both set: database is the shorthand for the sqlite storage's, set it there", a.Database)
	}
	mod, err := ctx.LoadModule(a, "StorageRaw")
	if err != nil {
		return nil, fmt.Errorf("loading storage module: %w", err)
	}
	opener, ok := mod.(StorageOpener)
	if !ok {
		return nil, fmt.Errorf("storage module %T is not a token store (api_tokens.storage)", mod)
	}
	return opener, nil
}

// Validate checks the app's options against each other.
func (a *App) Validate() error {
	if err := token.ValidPrefix(a.TokenPrefix); err != nil {
		return fmt.Errorf("token_prefix: %w", err)
	}
	if a.DefaultValidity < 0 {
		return fmt.Errorf("default_validity %s: must be positive", time.Duration(a.DefaultValidity))
	}
	if a.MaxValidity > 0 && a.DefaultValidity > a.MaxValidity {
		return fmt.Errorf("default_validity %s exceeds max_validity %s",
			time.Duration(a.DefaultValidity), time.Duration(a.MaxValidity))
	}
	if a.StaleAfter > 0 && time.Duration(a.StaleAfter) < MinStaleAfter {
		return fmt.Errorf("stale_after %s: must be at least %s (the store reads changes every %s)",
			time.Duration(a.StaleAfter), MinStaleAfter, tokenstore.DefaultPollInterval)
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
	if a.release == nil || a.released {
		return nil
	}
	// a.store stays set: Caddy does not wait for the old config's requests
	// before cleaning it up, and they may still look tokens up. The store
	// itself stays open while the new config holds a reference.
	a.released = true
	return a.release()
}

// storeFreshness decides whether the gate may judge tokens at now on the
// store's in-memory view (see StaleAfter).
func (a *App) storeFreshness(now time.Time) policy.Reason {
	if a.staleAfter <= 0 {
		return policy.ReasonOK
	}
	return policy.CheckFreshness(a.store.Staleness(now), a.staleAfter)
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
