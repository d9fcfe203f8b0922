package tokenstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apitoken/caddy-apitoken/tokenindex"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Defaults for Options.
const (
	DefaultBusyTimeout  = 5 * time.Second
	DefaultPollInterval = time.Second
)

// Options tune Open. The zero value is ready to use.
type Options struct {
	// Now tells the time; tests inject a fake clock. Default: time.Now.
	Now func() time.Time
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection or process. Default: 5s.
	BusyTimeout time.Duration
	// PollInterval is how often changes written by other processes sharing
	// the file are picked up. Changes made through this Store apply at
	// once regardless. A negative value disables polling. Default: 1s.
	PollInterval time.Duration
	// OnPollError, if set, is called from the poller goroutine each time
	// reading changes fails (the poller retries on its next tick; see
	// Staleness). Default: errors are dropped.
	OnPollError func(error)
	// OnPollRecovered, if set, is called from the poller goroutine when a
	// poll succeeds after failed ones, with how long the in-memory view
	// had gone without a successful poll and how many polls failed.
	// Default: none.
	OnPollRecovered func(stale time.Duration, failures int)
	// OnWritable, if set, is called once the writer, which found the file
	// read-only (see ReadOnly), has reopened it and can write again.
	// Default: none.
	OnWritable func()
}

// Store is a token store, with the groups that may hold tokens, backed by
// one SQLite file. Its methods are safe for concurrent use.
type Store struct {
	path        string
	now         func() time.Time
	busyTimeout time.Duration

	writer *sql.DB // one connection, BEGIN IMMEDIATE: every write goes here
	reader *sql.DB // query-only pool for Get, List and the poller

	index   tokenindex.Index
	members tokenindex.Members

	pruneChunkSize int // events PruneAudit deletes per transaction

	// readOnly: the writer's connection was opened read-only (see
	// probeWritable); every write reopens it first (see beginWrite), and
	// so does the poller on every tick, until it can write.
	readOnly   atomic.Bool
	onWritable func()

	polledAt     atomic.Int64  // s.now() of the last successful poll, Unix ns; 0: not polling
	pollFailures atomic.Uint64 // since Open

	stopPoll  context.CancelFunc
	pollDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens the token store at path, creating the file (mode 0600) and its
// missing parent directories (mode 0700) if needed, migrates the schema,
// loads every token and group membership into memory and starts the poller. ctx bounds the opening
// only. Close the Store when done.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if !cgoEnabled {
		return nil, fmt.Errorf("opening token store %s: %w (rebuild with CGO_ENABLED=1)", path, ErrNoCgo)
	}
	if path == "" {
		return nil, fmt.Errorf("opening token store: %w: path is required", ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening token store %s: %w", path, err)
	}
	s, err := open(ctx, abs, opts)
	if err != nil {
		return nil, fmt.Errorf("opening token store %s: %w", abs, err)
	}
	return s, nil
}

func open(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = DefaultBusyTimeout
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if err := createFile(path); err != nil {
		return nil, err
	}

	s := &Store{
		path:        path,
		now:         opts.Now,
		busyTimeout: opts.BusyTimeout,
		onWritable:  opts.OnWritable,

		pruneChunkSize: defaultPruneChunk,
	}
	defer func() {
		if err != nil {
			s.closeDBs()
		}
	}()

	busy := strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10)
	s.writer, err = openWriter(ctx, dsn(path, url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"},
		"_busy_timeout": {busy},
		"_foreign_keys": {"on"},
		"_txlock":       {"immediate"},
	}), opts.BusyTimeout)
	if err != nil {
		return nil, fmt.Errorf("opening writer: %w", err)
	}
	s.writer.SetMaxOpenConns(1)
	if err := checkJournalMode(ctx, s.writer); err != nil {
		return nil, err
	}
	if err := migrate(ctx, s.writer); err != nil {
		return nil, err
	}
	// Other errors (the lock, say) tell nothing: the next write will.
	s.readOnly.Store(isReadOnly(probeWritable(ctx, s.writer)))

	// The journal mode is a property of the file, already WAL.
	s.reader, err = openDB(ctx, dsn(path, url.Values{
		"_busy_timeout": {busy},
		"_query_only":   {"true"},
	}))
	if err != nil {
		return nil, fmt.Errorf("opening reader: %w", err)
	}
	// One connection is held by the poller.
	s.reader.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)) + 1)

	p := newPoller(s, opts)
	if err := p.poll(ctx); err != nil {
		return nil, fmt.Errorf("loading tokens: %w", err)
	}
	if opts.PollInterval < 0 {
		p.close()
		return s, nil
	}
	s.polledAt.Store(s.now().UnixNano())
	pollCtx, stop := context.WithCancel(context.Background())
	s.stopPoll, s.pollDone = stop, make(chan struct{})
	go func() {
		defer close(s.pollDone)
		p.run(pollCtx, opts.PollInterval)
	}()
	return s, nil
}

// Close stops the poller and closes the database. It is safe to call more
// than once; later calls return the first call's result. Lookup keeps
// answering from memory after Close; the other methods fail.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stopPoll != nil {
			s.stopPoll()
			<-s.pollDone
		}
		if err := s.closeDBs(); err != nil {
			s.closeErr = fmt.Errorf("closing token store %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	if s.writer != nil {
		errs = append(errs, s.writer.Close())
	}
	return errors.Join(errs...)
}

// beginWrite begins a write transaction on the writer connection: BEGIN
// IMMEDIATE, which waits up to the busy timeout for the database's write
// lock. If another connection or process holds it for longer, the error
// wraps ErrBusy.
//
// If the writer found the file read-only, it reopens it first (see
// reopenWriter); if the file still can't be written, the error is SQLite's
// SQLITE_READONLY (see Unavailable) and nothing is begun.
func (s *Store) beginWrite(ctx context.Context) (*sql.Tx, error) {
	var tx *sql.Tx
	var err error
	if s.readOnly.Load() {
		err = s.reopenWriter(ctx)
	}
	if err == nil {
		tx, err = s.writer.BeginTx(ctx, nil)
	}
	if err != nil && isBusy(err) {
		return nil, fmt.Errorf("%w (waited %s): %w", ErrBusy, s.busyTimeout, err)
	}
	return tx, err
}

// ReadOnly reports whether the database file could not be opened for
// writing when the store last tried: a read-only mount, an immutable file,
// or permissions. Lookup and the reads work; writes fail with SQLITE_READONLY
// (see Unavailable) until the file can be written. The store notices that by
// itself: every write, and the poller on every tick, reopen the file first
// while ReadOnly holds (see Options.OnWritable).
func (s *Store) ReadOnly() bool { return s.readOnly.Load() }

// reopenWriter replaces the writer's connection, which SQLite opened
// read-only because the file could not be written then, and checks whether
// the new one can write. A connection keeps the file descriptor it was
// opened with, so it stays read-only after the file becomes writable; the
// pool opens a new one on the next use. It returns nil once the store can
// write, and otherwise probeWritable's error.
func (s *Store) reopenWriter(ctx context.Context) error {
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return err
	}
	// ErrBadConn from Raw makes the pool close the connection rather than
	// keep it.
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
	if err := probeWritable(ctx, s.writer); err != nil {
		return err
	}
	if s.readOnly.CompareAndSwap(true, false) && s.onWritable != nil {
		s.onWritable()
	}
	return nil
}

// probeWritable tries a write on db and rolls it back: SQLite opens a
// file it cannot open for writing read-only, without an error, and only a
// write tells. The write sets the schema version to its own value, and the
// rollback keeps it from reaching the file.
func probeWritable(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	// A PRAGMA takes no bound parameters: v is a number SQLite gave.
	if _, err := tx.ExecContext(ctx, `PRAGMA user_version = `+strconv.Itoa(v)); err != nil {
		return fmt.Errorf("trying a write: %w", err)
	}
	return nil
}

// createFile creates the missing parent directories of path with mode 0700
// and an empty database file with mode 0600, so that SQLite, which gives the
// -wal and -shm files the mode of the database file, never creates anything
// readable by others. An existing file is left as it is.
func createFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating database file: %w", err)
	}
	return f.Close()
}

// dsn returns a go-sqlite3 data source name for the absolute path: a file:
// URI, so that characters such as '?', '#' and '%' in the path are escaped,
// with params, which go-sqlite3 applies to every new connection.
func dsn(path string, params url.Values) string {
	p := filepath.ToSlash(path)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows volume: file:///C:/...
	}
	u := url.URL{Scheme: "file", Path: p, RawQuery: params.Encode()}
	return u.String()
}

// openDB opens a pool and pings it: sql.Open alone connects to nothing, and
// a failure would otherwise surface on the first request.
func openDB(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting: %w", err)
	}
	return db, nil
}

// openWriter is openDB for the writer, whose DSN switches the file to WAL
// mode. On a new file that takes an exclusive lock, and when two connections
// (two processes opening the file at once) both hold a shared lock and ask
// for it, SQLite fails one of them at once with SQLITE_BUSY instead of
// calling the busy handler, since waiting could deadlock. That attempt is
// retried until the busy timeout has passed.
func openWriter(ctx context.Context, dsn string, busyTimeout time.Duration) (*sql.DB, error) {
	deadline := time.Now().Add(busyTimeout)
	for {
		db, err := openDB(ctx, dsn)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return db, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// checkJournalMode makes sure the file really is in WAL mode, which the
// single-writer, many-readers design depends on: SQLite keeps the old mode
// silently when it can't switch (e.g. on some network file systems).
func checkJournalMode(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("reading journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want \"wal\"", mode)
	}
	return nil
}
