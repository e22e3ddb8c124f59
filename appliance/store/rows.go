package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// Lists of many objects read rows, not objects: a row is an object's JSON
// as it is stored, which is the wire form of its model type (see "Values" in
// doc.go), so the API can write it to its answer without decoding and
// encoding it again. The few fields a list orders or filters by are read
// from the row (topField), not by decoding all of it; a row whose fields
// cannot be read that way is decoded whole, so an odd row is never skipped
// or misread. Rows are copied out of the transaction into one buffer per
// call.

// VMRow is one stored VM as its row.
type VMRow struct {
	ID        string
	CreatedAt time.Time
	JSON      []byte
}

// VMRows returns the rows of the VMs that match f, ordered by id. Like VMs,
// a filter on the account or the state reads that index instead of every
// VM; the name and image filters are checked on each row read.
func (tx *Tx) VMRows(f VMFilter) ([]VMRow, error) {
	if f.AccountID != "" {
		if err := model.ValidateID(model.KindAccount, f.AccountID); err != nil {
			return nil, err
		}
	}
	if f.State != "" {
		if _, err := model.ParseVMState(string(f.State)); err != nil {
			return nil, err
		}
	}
	var (
		rows []VMRow
		mem  arena
	)
	add := func(id string, v []byte) error {
		r, ok, err := readVMRow(id, v, f)
		if err != nil || !ok {
			return err
		}
		r.JSON = mem.copy(v)
		rows = append(rows, r)
		return nil
	}
	var ids []string
	switch {
	case f.AccountID != "":
		var err error
		if ids, err = tx.suffixes(vmAccountPrefix(f.AccountID)); err != nil {
			return nil, err
		}
	case f.State != "":
		var err error
		if ids, err = tx.suffixes(vmStatePrefix(f.State)); err != nil {
			return nil, err
		}
	default:
		// Values are read one at a time (item.Value), not prefetched:
		// prefetching copies each one first.
		err := tx.scan([]byte(pVM), nil, false, func(item *badger.Item) error {
			id := string(item.Key()[len(pVM):])
			return item.Value(func(v []byte) error { return add(id, v) })
		})
		if err != nil {
			return nil, err
		}
	}
	if ids != nil {
		rows = make([]VMRow, 0, len(ids))
	}
	for _, id := range ids {
		if f.AccountID != "" && f.State != "" {
			ok, err := tx.has(vmStateKey(f.State, id))
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		item, err := tx.txn.Get(vmKey(id))
		if err != nil {
			return nil, fmt.Errorf("store: VM index names %s: %w", id, err)
		}
		if err := item.Value(func(v []byte) error { return add(id, v) }); err != nil {
			return nil, err
		}
	}
	if rows == nil {
		rows = []VMRow{}
	}
	return rows, nil
}

// readVMRow reads what VMRows needs of row v, and whether it matches f.
func readVMRow(id string, v []byte, f VMFilter) (VMRow, bool, error) {
	r := VMRow{ID: id}
	created, ok1 := topTime(v, "created_at")
	name, ok2 := topString(v, "name", f.NamePrefix != "")
	image, ok3 := topString(v, "image", f.Image != "")
	if !ok1 || !ok2 || !ok3 {
		var vm model.VM
		if err := decode(v, "VM "+id, &vm); err != nil {
			return r, false, err
		}
		created, name, image = vm.CreatedAt, vm.Name, vm.Image
	}
	r.CreatedAt = created
	if f.NamePrefix != "" && !hasPrefix(name, f.NamePrefix) || f.Image != "" && image != f.Image {
		return r, false, nil
	}
	return r, true, nil
}

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// BackupRow is one stored backup as its row; VMID, TakenAt and ID are read
// from its key.
type BackupRow struct {
	VMID    string
	TakenAt time.Time
	ID      string
	JSON    []byte
}

// BackupPos is the place of a backup in the order of ListBackups (by VM id,
// then newest first, then by backup id): a list that starts after it
// resumes where a previous one ended, whatever was added or deleted in
// between.
type BackupPos struct {
	VMID    string
	TakenAt time.Time
	ID      string
}

// BackupRows returns the rows of the backups that match f, in the order of
// ListBackups, from after f.After when set, f.Limit at most (0: all). With
// no filter it is one scan of b/; a filter on the account reads the
// account's index entries and seeks one iterator to each of its VMs'
// backups; a filter on the VM is one scan of that VM's backups, kept only
// when the VM is the account's. 10,000 VMs with 5 backups each are one
// iteration, never a transaction or an iterator per VM.
func (tx *Tx) BackupRows(f BackupFilter) ([]BackupRow, error) {
	if f.AccountID != "" {
		if err := model.ValidateID(model.KindAccount, f.AccountID); err != nil {
			return nil, err
		}
	}
	if f.VMID != "" {
		if err := model.ValidateID(model.KindVM, f.VMID); err != nil {
			return nil, err
		}
	}
	var after []byte // the first key to read
	if f.After.VMID != "" {
		if err := model.ValidateID(model.KindVM, f.After.VMID); err != nil {
			return nil, err
		}
		if err := model.ValidateID(model.KindBackup, f.After.ID); err != nil {
			return nil, err
		}
		if err := keyTime("backup position", f.After.TakenAt); err != nil {
			return nil, err
		}
		after = append(backupKey(f.After.VMID, f.After.TakenAt, f.After.ID), 0)
	}
	var vms []string // the VMs to read, in id order, unless all
	all := false
	switch {
	case f.VMID != "" && f.AccountID != "":
		ok, err := tx.has(vmAccountKey(f.AccountID, f.VMID))
		if err != nil || !ok {
			return []BackupRow{}, err
		}
		vms = []string{f.VMID}
	case f.VMID != "":
		vms = []string{f.VMID}
	case f.AccountID != "":
		ids, err := tx.suffixes(vmAccountPrefix(f.AccountID))
		if err != nil {
			return nil, err
		}
		vms = ids
	default:
		all = true
	}
	var (
		rows []BackupRow
		mem  arena
		it   *badger.Iterator
	)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(pBackup)
	// One VM's seek finds few backups: prefetching would read ahead into
	// the next VM's. A scan of all of b/ reads every value it passes.
	opts.PrefetchValues = all
	opts.PrefetchSize = 16
	it = tx.txn.NewIterator(opts)
	defer it.Close()
	full := func() bool { return f.Limit > 0 && len(rows) >= f.Limit }
	// walk reads the backups under prefix from seek on.
	walk := func(prefix, seek []byte) error {
		if bytes.Compare(seek, prefix) < 0 {
			seek = prefix
		}
		n := 0
		for it.Seek(seek); it.ValidForPrefix(prefix) && !full(); it.Next() {
			if n++; n%256 == 0 {
				if err := tx.ctx.Err(); err != nil {
					return err
				}
			}
			item := it.Item()
			r, ok := parseBackupKey(item.Key())
			if !ok {
				return fmt.Errorf("store: malformed backup key %q (the state directory is damaged; restore it from a backup)", item.Key())
			}
			err := item.Value(func(v []byte) error {
				if f.Kind != "" {
					kind, ok := topString(v, "kind", true)
					if !ok {
						var b model.Backup
						if err := decode(v, "backup "+r.ID, &b); err != nil {
							return err
						}
						kind = string(b.Kind)
					}
					if kind != string(f.Kind) {
						return nil
					}
				}
				r.JSON = mem.copy(v)
				rows = append(rows, r)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	if all {
		if err := walk([]byte(pBackup), after); err != nil {
			return nil, err
		}
	}
	for i, vm := range vms { // ordered by id: the va/ keys are
		if i%256 == 255 {
			if err := tx.ctx.Err(); err != nil {
				return nil, err
			}
		}
		if full() {
			break
		}
		if f.After.VMID != "" && vm < f.After.VMID {
			continue
		}
		if err := walk(backupPrefix(vm), after); err != nil {
			return nil, err
		}
	}
	if rows == nil {
		rows = []BackupRow{}
	}
	return rows, nil
}

// arena copies rows out of a transaction into a few large buffers instead
// of one allocation per row (or one buffer grown by doubling, which copies
// everything twice).
type arena struct{ free []byte }

const arenaChunk = 64 << 10

func (a *arena) copy(v []byte) []byte {
	if len(v) > cap(a.free)-len(a.free) {
		a.free = make([]byte, 0, max(arenaChunk, len(v)))
	}
	n := len(a.free)
	a.free = append(a.free, v...)
	return a.free[n:len(a.free):len(a.free)]
}

// parseBackupKey reads a backupKey's parts (b/<vm>/<^taken_at>/<backup>).
func parseBackupKey(k []byte) (BackupRow, bool) {
	const vmLen = 9 // "vm-" + 6
	rest := k[len(pBackup):]
	if len(rest) < vmLen+1+8+1+1 || rest[vmLen] != '/' || rest[vmLen+9] != '/' {
		return BackupRow{}, false
	}
	inv := uint64(0)
	for _, c := range rest[vmLen+1 : vmLen+9] {
		inv = inv<<8 | uint64(c)
	}
	return BackupRow{
		VMID:    string(rest[:vmLen]),
		TakenAt: time.Unix(0, int64(^inv^(1<<63))).UTC(),
		ID:      string(rest[vmLen+10:]),
	}, true
}

// topTime reads the time in the top-level string member name of the JSON
// object b, as encoding/json writes a time.Time (RFC 3339).
func topTime(b []byte, name string) (time.Time, bool) {
	v, ok := topField(b, name)
	if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return time.Time{}, false
	}
	v = v[1 : len(v)-1]
	if t, ok := parseUTC(v); ok {
		return t, true
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	return t, err == nil
}

// parseUTC parses the form time.Time's JSON has in UTC,
// 2006-01-02T15:04:05.999999999Z, without allocating; it reports false on
// anything else (another zone, a malformed time), for time.Parse to read.
func parseUTC(v []byte) (time.Time, bool) {
	if len(v) < 20 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' || v[len(v)-1] != 'Z' {
		return time.Time{}, false
	}
	num := func(b []byte) int {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	y, mo, d, h, mi, sec := num(v[0:4]), num(v[5:7]), num(v[8:10]), num(v[11:13]), num(v[14:16]), num(v[17:19])
	ns := 0
	if frac := v[19 : len(v)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		if ns = num(frac[1:]); ns < 0 {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			ns *= 10
		}
	}
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC)
	if t.Day() != d { // February 30th and the like
		return time.Time{}, false
	}
	return t, true
}

// topString reads the top-level string member name of the JSON object b
// when want is set (when it is not, it reports success and reads nothing).
// It reports false when the member is missing, is not a string or holds an
// escape: the caller then decodes the whole row.
func topString(b []byte, name string, want bool) (string, bool) {
	if !want {
		return "", true
	}
	v, ok := topField(b, name)
	if !ok || len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
		return "", false
	}
	return string(v[1 : len(v)-1]), true
}

// topField returns the raw value of the top-level member name of the JSON
// object b, walking only the object's own members (a nested object's
// members of the same name are skipped with the value that holds them). It
// reports false when b is not an object it can walk or has no such member.
func topField(b []byte, name string) ([]byte, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		end := skipString(b, i)
		if end < 0 {
			return nil, false
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		start := i
		if i = skipValue(b, i); i < 0 {
			return nil, false
		}
		if string(key) == name {
			return b[start:i], true
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ',' {
			return nil, false
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i] ('"'),
// or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return -1
		}
		i += q
		// The quote ends the string unless an odd number of backslashes
		// escapes it.
		n := 0
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
	return -1
}

// skipValue returns the index after the value that starts at b[i], or -1.
// It checks only what it needs to find the value's end.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\n', '\t', '\r':
			return i
		}
	}
	return i
}

// decodeRows decodes n rows into model objects; kind and id name a row
// that does not decode.
func decodeRows[T any](n int, kind string, row func(int) (b []byte, id string)) ([]T, error) {
	out := make([]T, n)
	for i := range out {
		b, id := row(i)
		if err := json.Unmarshal(b, &out[i]); err != nil {
			return nil, decode(b, kind+" "+id, &out[i])
		}
	}
	return out, nil
}
