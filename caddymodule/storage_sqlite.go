package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/apitoken/caddy-apitoken/tokenstore"
)

func init() {
	caddy.RegisterModule(SQLiteStorage{})
}

// SQLiteStorage keeps the tokens in a SQLite database file (package
// tokenstore): the api_tokens app's default storage. The database is
// opened once and shared by every config that names the same file, so it
// stays open across config reloads.
//
// Caddyfile, in the global option `api_tokens`:
//
//	storage sqlite {
//	    database <path>
//	}
//
// The app's `database` option is the shorthand for it.
type SQLiteStorage struct {
	// Path of the SQLite database file holding the tokens. It and its
	// directory are created if missing, readable by Caddy's user only.
	// Default: `api_tokens/tokens.db` under Caddy's data directory.
	Database string `json:"database,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (SQLiteStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "api_tokens.storage.sqlite",
		New: func() caddy.Module { return new(SQLiteStorage) },
	}
}

// OpenStorage opens the database, or takes a reference to it if another
// config has it open, and warns if it can only be read.
func (s *SQLiteStorage) OpenStorage(ctx caddy.Context) (Storage, func() error, error) {
	path := s.Database
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "api_tokens", "tokens.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, fmt.Errorf("database %q: %w", path, err)
	}
	v, _, err := stores.LoadOrNew(abs, func() (caddy.Destructor, error) {
		s, err := openStore(abs)
		if errors.Is(err, tokenstore.ErrNoCgo) {
			return nil, errNoCgo
		}
		return storeHandle{s}, err
	})
	if err != nil {
		return nil, nil, err // LoadOrNew removed the failed entry: no Delete
	}
	store := v.(storeHandle).Store
	if store.ReadOnly() {
		ctx.Logger().Warn("token store opened read-only: tokens are checked, but creating, revoking and changing them fails "+
			"until Caddy's user can write the database file, its -wal and -shm files and its directory "+
			"(look for a read-only mount or an immutable file: lsattr, chattr -i); it is reopened by itself once it can",
			zap.String("database", abs))
	}
	release := func() error {
		_, err := stores.Delete(abs)
		return err
	}
	return store, release, nil
}

// UnmarshalCaddyfile sets up the storage from Caddyfile tokens: the module
// name, then a block. Syntax:
//
//	sqlite {
//	    database <path>
//	}
func (s *SQLiteStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "database":
			if s.Database != "" {
				return d.Errf("duplicate option %q", opt)
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			s.Database = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown storage sqlite option %q", opt)
		}
	}
	return nil
}

// errNoCgo explains how to rebuild when the SQLite driver is a stub.
var errNoCgo = errors.New("api_tokens needs a cgo build for its SQLite store (github.com/mattn/go-sqlite3), " +
	"but this Caddy was built with CGO_ENABLED=0: rebuild it with a C compiler installed and " +
	"`CGO_ENABLED=1 xcaddy build --with github.com/apitoken/caddy-apitoken/caddymodule`")

// stores holds one open token store per database file. It outlives config
// reloads: Caddy provisions the new config before it cleans up the old one,
// so the reference count never drops to zero on a reload and the database
// is opened exactly once.
var stores = caddy.NewUsagePool()

// storeHandle lets a *tokenstore.Store live in a caddy.UsagePool.
type storeHandle struct{ *tokenstore.Store }

// Destruct closes the store when its last user is cleaned up.
func (s storeHandle) Destruct() error { return s.Close() }

// openStore opens the token store at the absolute path abs, with its
// background trouble reported to the log (see storeReporter).
func openStore(abs string) (*tokenstore.Store, error) {
	rep := &storeReporter{database: abs, now: time.Now, logger: storeLogger}
	return tokenstore.Open(context.Background(), abs, tokenstore.Options{
		OnPollError:     rep.pollFailed,
		OnPollRecovered: rep.pollRecovered,
		OnWritable:      rep.writable,
	})
}

// storeLogger is the logger of the store's background trouble: the
// running config's, as the store outlives the config that opened it.
func storeLogger() *zap.Logger {
	if a := running.Load(); a != nil && a.logger != nil {
		return a.logger
	}
	return caddy.Log().Named("api_tokens")
}

// pollLogEvery is how often, at most, a poller that keeps failing is
// logged after its first failure.
const pollLogEvery = time.Minute

// storeReporter logs a token store's background trouble: a poller that
// cannot read the database (its first failure at once, then at most once
// every pollLogEvery, with the count so far and the error), its recovery, and
// a writer that can write again after finding the file read-only.
type storeReporter struct {
	database string
	now      func() time.Time
	logger   func() *zap.Logger

	mu       sync.Mutex
	since    time.Time // the first failure of the current run; zero when polls succeed
	failures int       // in the current run
	lastLog  time.Time
}

func (r *storeReporter) pollFailed(err error) {
	r.mu.Lock()
	now := r.now()
	r.failures++
	if r.since.IsZero() {
		r.since = now
	} else if now.Sub(r.lastLog) < pollLogEvery {
		r.mu.Unlock()
		return
	}
	failures, since := r.failures, r.since
	r.lastLog = now
	r.mu.Unlock()
	r.logger().Error("cannot read the token store: changes made by other processes are not applied",
		zap.String("database", r.database),
		zap.Int("failures", failures),
		zap.Duration("failing_for", now.Sub(since)),
		zap.Error(err))
}

func (r *storeReporter) pollRecovered(stale time.Duration, failures int) {
	r.mu.Lock()
	r.since, r.failures, r.lastLog = time.Time{}, 0, time.Time{}
	r.mu.Unlock()
	r.logger().Info("token store readable again: changes made by other processes apply",
		zap.String("database", r.database),
		zap.Duration("stale_for", stale),
		zap.Int("failures", failures))
}

func (r *storeReporter) writable() {
	r.logger().Info("token store writable again", zap.String("database", r.database))
}

// Interface guards
var (
	_ StorageOpener         = (*SQLiteStorage)(nil)
	_ caddyfile.Unmarshaler = (*SQLiteStorage)(nil)
	_ Storage               = (*tokenstore.Store)(nil)
)
