package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// File type bits of the newc mode field (from <sys/stat.h>).
const (
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
)

const (
	magic   = "070701"
	trailer = "TRAILER!!!"
)

// Writer writes a newc archive. Call Close to write the trailer; it does not close the underlying writer.
type Writer struct {
	w      io.Writer
	ino    uint32
	names  map[string]bool
	err    error
	closed bool

	rdevMajor, rdevMinor uint32 // for the record being added by CharDev
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, ino: 1, names: map[string]bool{}}
}

// Dir adds a directory with permission bits perm.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.add(name, typeDir, nil, perm)
}

// File adds a regular file holding data, with permission bits perm.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.add(name, typeRegular, data, perm)
}

// Symlink adds a symbolic link name pointing to target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return fmt.Errorf("cpio: symlink %s has an empty target", name)
	}
	return w.add(name, typeSymlink, []byte(target), 0o777)
}

// CharDev adds a character device node (such as dev/console, 5:1, which the kernel opens for init's
// standard streams before any devtmpfs is mounted).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	w.rdevMajor, w.rdevMinor = major, minor
	defer func() { w.rdevMajor, w.rdevMinor = 0, 0 }()
	return w.add(name, typeChar, nil, perm)
}

// modeBits turns Go's permission and special bits into the Unix mode bits.
func modeBits(perm fs.FileMode) uint32 {
	m := uint32(perm & fs.ModePerm)
	if perm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if perm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if perm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

func (w *Writer) add(name string, typ uint32, data []byte, perm fs.FileMode) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("cpio: write after Close")
	}
	clean, err := cleanName(name)
	if err != nil {
		return err
	}
	if w.names[clean] {
		return fmt.Errorf("cpio: %s added twice", clean)
	}
	w.names[clean] = true
	nlink := uint32(1)
	if typ == typeDir {
		nlink = 2
	}
	w.ino++
	w.err = w.record(clean, w.ino, typ|modeBits(perm), nlink, data, w.rdevMajor, w.rdevMinor)
	return w.err
}

// cleanName makes an archive path: relative, cleaned, no "..".
func cleanName(name string) (string, error) {
	rel := strings.TrimPrefix(name, "/")
	for _, elem := range strings.Split(rel, "/") {
		if elem == ".." {
			return "", fmt.Errorf("cpio: name %q leaves the archive", name)
		}
	}
	clean := path.Clean(rel)
	if clean == "." || clean == "" {
		return "", fmt.Errorf("cpio: bad name %q", name)
	}
	if clean == trailer {
		return "", fmt.Errorf("cpio: %q is reserved", name)
	}
	return clean, nil
}

func (w *Writer) record(name string, ino, mode, nlink uint32, data []byte, rdevMajor, rdevMinor uint32) error {
	// Header: magic and 13 eight-digit hex fields: ino, mode, uid, gid, nlink, mtime, filesize,
	// devmajor, devminor, rdevmajor, rdevminor, namesize (with its NUL), check (0 without CRC).
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		magic, ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+4+len(data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, err := w.w.Write(buf)
	return err
}

// pad4 pads b with NULs to a multiple of 4 bytes. Every record starts 4-aligned, so padding the record
// buffer is the same as padding the archive.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// Close writes the trailer record.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	w.closed = true
	w.err = w.record(trailer, 0, 0, 1, nil, 0, 0)
	return w.err
}
