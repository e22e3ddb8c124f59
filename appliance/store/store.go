package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/superjolt/superjolt/appliance/model"
)

// Options say where the store lives and where its logs go.
type Options struct {
	// Dir is the directory holding the Badger files; it is created (mode 0700)
	// if missing. Required unless InMemory is set, and must be empty then.
	Dir string
	// InMemory keeps everything in RAM and nothing on disk: for unit tests and
	// demos. Closing the store loses its contents.
	InMemory bool
	// Logger receives Badger's own warnings and errors (its info and debug
	// chatter only at slog.LevelDebug). nil means slog.Default().
	Logger *slog.Logger
}

// Store is superjolt's state: one Badger database. It is safe for concurrent
// use; every read and write goes through View or Update.
type Store struct {
	db  *badger.DB
	log *slog.Logger

	// mu is held shared by every transaction in flight and exclusively by
	// Close, so Close waits for them and nothing runs on a closed database.
	mu     sync.RWMutex
	closed bool
	// writeMu is held shared by every Update and exclusively while Maintain
	// writes the memtable out, during which Badger refuses commits; reads
	// go on meanwhile.
	writeMu sync.RWMutex
	// maintainMu makes Maintain one at a time.
	maintainMu sync.Mutex

	// newID draws a candidate id; tests replace it to force collisions.
	newID func(model.Kind) string
}

// updateTries bounds how often Update runs fn when its transaction keeps
// losing to concurrent ones.
const updateTries = 10

// maxValueSize bounds one stored value. Every value then stays inside the LSM
// tree (Badger's ValueThreshold), so nothing is written to the value log and
// no value-log garbage collection is needed.
const maxValueSize = 1 << 20

// ErrSchema is wrapped by Open's error when the state directory was written
// by a newer superjolt (or is not superjolt's at all).
var ErrSchema = errors.New("store schema not supported")

// Open opens (or creates) the store. It does not seed anything: the
// appliance puts its default tiers itself.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	switch {
	case opts.InMemory && opts.Dir != "":
		return nil, invalid("store options: Dir %q and InMemory are both set; choose one", opts.Dir)
	case !opts.InMemory && opts.Dir == "":
		return nil, invalid("store options: Dir is empty; give the state directory (or InMemory for tests)")
	}
	if !opts.InMemory {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: create state directory: %w", err)
		}
	}
	db, err := badger.Open(badgerOptions(opts, log))
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w: store %s is in use by another process; is another superjoltd running? (%v)",
				model.ErrUnavailable, opts.Dir, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", opts.Dir, err)
	}
	s := &Store{db: db, log: log, newID: model.NewID}
	if err := s.checkSchema(ctx, opts.Dir); err != nil {
		if cerr := db.Close(); cerr != nil {
			log.Warn("store: close after failed open", "err", cerr)
		}
		return nil, err
	}
	return s, nil
}

// badgerOptions sizes Badger for one small box: a few MiB of state (10,000
// VMs with 100,000 backups take 7 MiB on disk) that must not cost hundreds
// of MiB of RAM. Badger's defaults are for servers (64 MiB memtables, five of
// them, a 256 MiB block cache, 1 GiB value-log files).
func badgerOptions(opts Options, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(opts.Dir).
		WithInMemory(opts.InMemory).
		WithLogger(badgerLogger{log}).
		// Every committed state change is on disk when Update returns: the
		// appliance acts on it (deletes subvolumes, boots VMs) right after.
		WithSyncWrites(!opts.InMemory).
		WithMetricsEnabled(false).
		// A memtable's arena is allocated whole; 8 MiB holds some 30,000
		// VM-sized writes and bounds one transaction to 15% of it (1.2 MiB).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(10).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(8 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		// JSON compresses well (10,000 VMs with 100,000 backups take 7 MiB
		// on disk); decompressed blocks are cached. Measured: 8 MiB of block
		// cache and 4 of index cache cost some 6 MiB more peak RSS than 4
		// and 2 and read no faster at this size.
		WithCompression(options.Snappy).
		WithBlockCacheSize(4 << 20).
		// Table indexes and bloom filters live in this cache instead of all
		// staying on the heap; 2 MiB holds them for ten times the data above.
		WithIndexCacheSize(2 << 20).
		// Values up to 1 MiB stay in the LSM tree (see maxValueSize); the
		// value log is then only a placeholder file, so keep it small.
		WithValueThreshold(maxValueSize).
		WithValueLogFileSize(16 << 20).
		WithNumVersionsToKeep(1)
	if opts.InMemory {
		o.Dir, o.ValueDir = "", ""
	}
	return o
}

// Close closes the store after the transactions in flight end. Closing twice
// is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

var errClosed = fmt.Errorf("%w: the store is closed (superjoltd is shutting down); try again after it restarts", model.ErrUnavailable)

// Update runs fn in a read-write transaction and commits it, synced to disk.
// If the commit loses to a concurrent transaction (Badger's ErrConflict), fn
// runs again on fresh data, up to 10 times, after which Update returns an
// error wrapping model.ErrConflict. fn must therefore have no effects outside
// tx. An error from fn discards the transaction and is returned as it is.
//
// Ids from NewID, seqs and IP claims are only taken when Update returns nil;
// act on them outside the store only then.
//
// One transaction holds at most about 1.2 MiB of writes (some 1,500 VM rows):
// beyond that writes fail with an error saying to split the work. Work over
// every VM reads them with ForEachVM in a View and writes in Updates of one
// VM, or of a few hundred. fn must not call Close, which waits for it.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	var err error
	for try := range updateTries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if try > 0 {
			// A short random pause lets the winner of the last round finish
			// instead of both retrying in lockstep.
			backoff := time.Duration(rand.Int64N(int64(time.Millisecond) << min(try, 5)))
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		err = s.try(ctx, fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: the change lost to concurrent changes of the same objects %d times in a row; try again", model.ErrConflict, updateTries)
}

// try runs fn once in a fresh read-write transaction.
func (s *Store) try(ctx context.Context, fn func(tx *Tx) error) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	tx := &Tx{txn: txn, ctx: ctx, s: s, write: true}
	if err := fn(tx); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrConflict) {
			return err
		}
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// View runs fn in a read-only transaction: a consistent snapshot of the whole
// store as of its start.
func (s *Store) View(ctx context.Context, fn func(tx *Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	return fn(&Tx{txn: txn, ctx: ctx, s: s})
}

// badgerLogger sends Badger's log lines to slog: errors and warnings at their
// own level, info and debug (one line per compaction, table open, ...) at
// debug so that they stay out of the journal unless asked for.
type badgerLogger struct{ l *slog.Logger }

var _ badger.Logger = badgerLogger{}

func (b badgerLogger) Errorf(f string, v ...any)   { b.log(slog.LevelError, f, v) }
func (b badgerLogger) Warningf(f string, v ...any) { b.log(slog.LevelWarn, f, v) }
func (b badgerLogger) Infof(f string, v ...any)    { b.log(slog.LevelDebug, f, v) }
func (b badgerLogger) Debugf(f string, v ...any)   { b.log(slog.LevelDebug, f, v) }

func (b badgerLogger) log(level slog.Level, f string, v []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, v...)), "component", "badger")
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInvalid, fmt.Sprintf(format, args...))
}
