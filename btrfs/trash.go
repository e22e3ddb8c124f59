//go:build linux && cgo

package btrfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/btrfs/v2"
)

// trashName returns a fresh path trash/<label>.<random> and marks it busy so
// that Purge leaves it alone; release unmarks it.
func (p *Pool) trashName(label string) (path string, release func()) {
	name := label + "." + randomHex()
	p.mu.Lock()
	p.busy[name] = true
	p.mu.Unlock()
	return filepath.Join(p.trash(), name), func() {
		p.mu.Lock()
		delete(p.busy, name)
		p.mu.Unlock()
	}
}

// randomHex returns 12 random hex digits.
func randomHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return hex.EncodeToString(b[:])
}

// Purge deletes everything in trash/: subvolumes left by deletes that did not
// finish (a crash, an error), and image staging left by a crash. Entries that
// an operation of this Pool is still using are skipped, and so is what is set
// aside (see Quarantine): only PurgeQuarantine deletes that. Open calls Purge.
func (p *Pool) Purge(ctx context.Context) error {
	ents, err := os.ReadDir(p.trash())
	if err != nil {
		return fmt.Errorf("purge %s: %w", p.trash(), err)
	}
	var errs []error
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), orphanPrefix) {
			continue
		}
		p.mu.Lock()
		if p.busy[e.Name()] {
			p.mu.Unlock()
			continue
		}
		p.busy[e.Name()] = true
		p.mu.Unlock()

		path := filepath.Join(p.trash(), e.Name())
		if err := deleteTree(ctx, path); err != nil {
			errs = append(errs, err)
		} else {
			p.log.Info("btrfs: purged from trash", "subvolume", path)
		}

		p.mu.Lock()
		delete(p.busy, e.Name())
		p.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("purge %s: %w", p.trash(), err)
	}
	return nil
}

// deleteLogged deletes path with deleteTree; a failure is logged, not
// returned: it runs as the undo of a failed step or as the second half of a
// delete, and what is left in trash/ is retried by Purge.
func (p *Pool) deleteLogged(ctx context.Context, path string) {
	if err := deleteTree(ctx, path); err != nil {
		p.log.Warn("btrfs: cannot delete, leaving it in the trash for the next purge", "subvolume", path, "err", err)
	}
}

// deleteTree deletes path, whatever it is: a file, a plain directory holding
// subvolumes (backups/<vm> holds the read-only snapshots), or a subvolume
// with subvolumes nested in it. A read-only subvolume is deleted as it is
// (BTRFS_IOC_SNAP_DESTROY permits that); only when it has nested subvolumes,
// which cannot be unlinked from a read-only parent, is its flag cleared first.
func deleteTree(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return os.Remove(path)
	}
	nested, err := nestedSubvolumes(path)
	if err != nil {
		return err
	}
	isSubvol := btrfs.IsSubvolume(path) == nil
	if isSubvol && len(nested) > 0 {
		ro, err := readOnly(path)
		if err != nil {
			return err
		}
		if ro {
			if err := setReadOnly(path, false); err != nil {
				return err
			}
		}
	}
	for _, n := range nested {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := deleteTree(ctx, n); err != nil {
			return err
		}
	}
	if isSubvol {
		if err := btrfs.SubvolDelete(path); err != nil {
			return fmt.Errorf("delete subvolume %s: %w", path, err)
		}
		return nil
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("delete %s: %w", path, err)
	}
	return nil
}

// nestedSubvolumes returns the subvolumes below dir (not dir itself), without
// descending into them.
func nestedSubvolumes(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir || !d.IsDir() {
			return nil
		}
		if btrfs.IsSubvolume(p) == nil {
			out = append(out, p)
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look for subvolumes in %s: %w", dir, err)
	}
	return out, nil
}
