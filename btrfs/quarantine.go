//go:build linux && cgo

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Quarantine: what the appliance finds in the pool and cannot account for
// (a VM disk or a backup that no row of its store names) is set aside, not
// deleted: a store restored from an older copy, or a bug, must never cost a
// VM's data. Set-aside things keep their data and their space until
// PurgeQuarantine deletes them, once the caller's grace period has passed.
//
// Names: a VM disk goes to trash/orphan.vms.<vm id>.<unix seconds>, a
// VM's backups directory to trash/orphan.backups.<vm id>.<unix seconds>
// (Purge leaves both alone). A single backup, a read-only snapshot, cannot
// be moved out of its directory (Btrfs refuses to rewrite its ".."), so it
// is renamed in place to backups/<vm id>/orphan.<backup id>.<unix seconds>,
// which no listing of backups returns as a backup.

const orphanPrefix = "orphan."

// Quarantined is something set aside.
type Quarantined struct {
	// Path is where it is now.
	Path string
	// Was is where it was, relative to the pool: vms/<id>, backups/<id> or
	// backups/<vm id>/<backup id>.
	Was string
	// At is when it was set aside, on the caller's clock (whole seconds).
	At time.Time
}

// QuarantineVM sets vms/<vmID> aside at time at.
func (p *Pool) QuarantineVM(ctx context.Context, vmID string, at time.Time) (Quarantined, error) {
	path, err := p.vm(vmID)
	if err != nil {
		return Quarantined{}, err
	}
	return p.quarantine(ctx, path, p.trash(), "vms."+vmID, at)
}

// QuarantineBackups sets backups/<vmID>, with every backup in it, aside at
// time at.
func (p *Pool) QuarantineBackups(ctx context.Context, vmID string, at time.Time) (Quarantined, error) {
	path, err := p.vmBackups(vmID)
	if err != nil {
		return Quarantined{}, err
	}
	return p.quarantine(ctx, path, p.trash(), "backups."+vmID, at)
}

// QuarantineBackup sets backups/<vmID>/<bkID> aside at time at, in place.
func (p *Pool) QuarantineBackup(ctx context.Context, vmID, bkID string, at time.Time) (Quarantined, error) {
	path, err := p.backup(vmID, bkID)
	if err != nil {
		return Quarantined{}, err
	}
	return p.quarantine(ctx, path, filepath.Dir(path), bkID, at)
}

func (p *Pool) quarantine(ctx context.Context, path, dir, what string, at time.Time) (Quarantined, error) {
	if err := ctx.Err(); err != nil {
		return Quarantined{}, err
	}
	dst := filepath.Join(dir, orphanPrefix+what+"."+strconv.FormatInt(at.Unix(), 10))
	if err := os.Rename(path, dst); err != nil {
		return Quarantined{}, fmt.Errorf("set %s aside: %w", path, notFound(err))
	}
	if err := p.commit(); err != nil {
		return Quarantined{}, fmt.Errorf("set %s aside: %w", path, err)
	}
	rel, _ := filepath.Rel(p.root, path)
	p.log.Warn("btrfs: set aside, not deleted", "subvolume", path, "now", dst)
	return Quarantined{Path: dst, Was: rel, At: time.Unix(at.Unix(), 0).UTC()}, nil
}

// Quarantine lists what is set aside, oldest first.
func (p *Pool) Quarantine(ctx context.Context) ([]Quarantined, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Quarantined
	add := func(dir, wasDir string) error {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), orphanPrefix)
			if !ok {
				continue
			}
			i := strings.LastIndexByte(rest, '.')
			if i < 0 {
				continue
			}
			sec, err := strconv.ParseInt(rest[i+1:], 10, 64)
			if err != nil {
				continue
			}
			was := rest[:i]
			if wasDir == "" { // trash/orphan.<vms|backups>.<id>.<t>
				kind, id, ok := strings.Cut(was, ".")
				if !ok {
					continue
				}
				was = kind + "/" + id
			} else {
				was = wasDir + "/" + was
			}
			out = append(out, Quarantined{Path: filepath.Join(dir, e.Name()), Was: was, At: time.Unix(sec, 0).UTC()})
		}
		return nil
	}
	if err := add(p.trash(), ""); err != nil {
		return nil, err
	}
	vms, err := p.BackupVMs(ctx)
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if err := add(filepath.Join(p.root, backupsDir, vm), backupsDir+"/"+vm); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// PurgeQuarantine deletes what was set aside before before, and returns
// what it deleted.
func (p *Pool) PurgeQuarantine(ctx context.Context, before time.Time) ([]Quarantined, error) {
	q, err := p.Quarantine(ctx)
	if err != nil {
		return nil, err
	}
	var done []Quarantined
	var errs []error
	for _, x := range q {
		if !x.At.Before(before) {
			continue
		}
		if err := deleteTree(ctx, x.Path); err != nil {
			errs = append(errs, err)
			continue
		}
		p.log.Info("btrfs: deleted what was set aside", "subvolume", x.Path, "was", x.Was, "set_aside_at", x.At)
		done = append(done, x)
	}
	if len(done) > 0 {
		if err := p.commit(); err != nil {
			errs = append(errs, err)
		}
	}
	return done, errors.Join(errs...)
}
