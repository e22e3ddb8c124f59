package images

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Format is the kind of file [Import] takes.
type Format string

const (
	FormatTar   Format = "tar"   // a root file system tarball, plain or compressed (gzip, xz, zstd, bzip2)
	FormatQCOW2 Format = "qcow2" // a QEMU disk, converted with qemu-img
	FormatRaw   Format = "raw"   // a disk with a partition table (MBR or GPT), or one bare file system
)

// ErrDamaged is a file of a known format that cannot be read to its end.
var ErrDamaged = errors.New("the file is damaged")

// ErrUnknownFormat is a file Import cannot read.
var ErrUnknownFormat = errors.New("unknown image format: superjolt imports a root file system tarball (.tar, .tar.gz, .tar.xz, .tar.zst), a qcow2 disk or a raw disk (with a partition table, or one ext4, xfs or btrfs file system)")

// DetectFormat reads the first bytes of the file at path and says what it is.
func DetectFormat(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	head := make([]byte, 68<<10)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	head = head[:n]
	at := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic
	}
	switch {
	case at(0, "QFI\xfb"):
		return FormatQCOW2, nil
	case at(257, "ustar"),
		at(0, "\x1f\x8b"),         // gzip
		at(0, "\xfd7zXZ\x00"),     // xz
		at(0, "\x28\xb5\x2f\xfd"), // zstd
		at(0, "BZh"):              // bzip2
		return FormatTar, nil
	case at(512, "EFI PART"), at(510, "\x55\xaa"),
		fsType(head) != "":
		return FormatRaw, nil
	}
	return "", fmt.Errorf("%s: %w", path, ErrUnknownFormat)
}

// fsType names the file system whose superblock starts head ("" when none that Import reads).
func fsType(head []byte) string {
	switch {
	case len(head) >= 1082 && binary.LittleEndian.Uint16(head[1080:]) == 0xEF53:
		return "ext4"
	case len(head) >= 4 && string(head[:4]) == "XFSB":
		return "xfs"
	case len(head) >= 0x10048 && string(head[0x10040:0x10048]) == "_BHRfS_M":
		return "btrfs"
	}
	return ""
}

// ImportOptions say how [Import] works.
type ImportOptions struct {
	// Agent is a static superjolt-agent binary. Required.
	Agent string
	// Name is what messages call the file. Default: its base name.
	Name string
	// TempDir holds the unpacked tree while the image is made (it needs about twice the image's
	// size). Default: os.TempDir().
	TempDir string
	// Logf reports progress. Default: silent.
	Logf func(format string, args ...any)
}

// Import makes a distribution image in dir from the file at src: a root file system tarball, a
// qcow2 disk or a raw disk (see [DetectFormat]). The tree is unpacked (a disk's root partition is
// mounted read-only and copied), then [FromTree] makes the image. Nothing is left in TempDir; dir is
// the caller's to remove when Import fails.
func Import(ctx context.Context, src, dir string, opts ImportOptions) (*Image, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	name := cmp.Or(opts.Name, filepath.Base(src))
	format, err := DetectFormat(src)
	if err != nil {
		if errors.Is(err, ErrUnknownFormat) {
			err = ErrUnknownFormat
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	work, err := os.MkdirTemp(opts.TempDir, "superjolt-import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "root")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return nil, err
	}
	opts.Logf("importing %s (%s)", name, format)
	switch format {
	case FormatTar:
		err = unpackTar(ctx, src, tree, opts.Logf)
	case FormatQCOW2:
		raw := filepath.Join(work, "disk.raw")
		if err = qcow2ToRaw(ctx, src, raw, opts.Logf); err == nil {
			err = copyDiskTree(ctx, raw, work, tree, opts.Logf)
			os.Remove(raw)
		}
	case FormatRaw:
		err = copyDiskTree(ctx, src, work, tree, opts.Logf)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	img, err := FromTree(ctx, tree, dir, TreeOptions{Agent: opts.Agent, Source: name, Logf: opts.Logf})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return img, nil
}

// unpackTar unpacks a tarball as root, keeping owners, modes and extended attributes. GNU tar
// refuses members that climb out with "..", strips leading slashes, and makes symbolic links only
// after every file, so an archive cannot write through a link of its own.
func unpackTar(ctx context.Context, src, tree string, logf func(string, ...any)) error {
	logf("unpacking the tarball")
	cmd := exec.CommandContext(ctx, "tar", "--extract", "--file", src, "--directory", tree,
		"--numeric-owner", "--same-owner", "--preserve-permissions", "--xattrs", "--xattrs-include=*")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		why, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		return fmt.Errorf("%w: the tarball cannot be unpacked (truncated, or not a tar archive): %s", ErrDamaged, cmp.Or(why, err.Error()))
	}
	return nil
}

// qcow2ToRaw checks a qcow2 disk and converts it to a raw (sparse) one.
func qcow2ToRaw(ctx context.Context, src, raw string, logf func(string, ...any)) error {
	qemuImg := lookPath("qemu-img")
	if qemuImg == "" {
		return errors.New("qemu-img not found (apt-get install qemu-utils)")
	}
	logf("checking the qcow2 disk")
	if out, err := run(ctx, "", qemuImg, "check", "-q", "-f", "qcow2", src); err != nil {
		return fmt.Errorf("%w: qemu-img check finds the qcow2 disk corrupt: %v %s", ErrDamaged, err, out)
	}
	logf("converting it to a raw disk")
	cmd := exec.CommandContext(ctx, qemuImg, "convert", "-p", "-f", "qcow2", "-O", "raw", src, raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	reportProgress(out, logf)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("qemu-img convert: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// reportProgress passes on qemu-img -p's "(12.34/100%)" at every tenth.
func reportProgress(r io.Reader, logf func(string, ...any)) {
	buf := make([]byte, 256)
	last := -1
	for {
		n, err := r.Read(buf)
		for _, f := range strings.FieldsFunc(string(buf[:n]), func(r rune) bool { return r == '\r' || r == '\n' }) {
			f = strings.TrimSpace(strings.Trim(strings.TrimSpace(f), "()"))
			pct, _, ok := strings.Cut(f, "/")
			if v, err := strconv.ParseFloat(pct, 64); ok && err == nil && int(v)/10 > last {
				last = int(v) / 10
				logf("converting: %d%%", last*10)
			}
		}
		if err != nil {
			return
		}
	}
}

// partition is a stretch of a raw disk that may hold the root file system.
type partition struct {
	Number      int   // in the disk's partition table (1 for a bare file system)
	Start, Size int64 // bytes
	FS          string
}

// copyDiskTree finds the root file system on a raw disk (a bare file system, or the partition
// whose file system has an os-release), mounts it read-only through a loop device, and copies its
// files into tree.
func copyDiskTree(ctx context.Context, raw, work, tree string, logf func(string, ...any)) error {
	parts, err := diskPartitions(ctx, raw)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("%w: the disk holds no ext4, xfs or btrfs file system (is it empty, or encrypted?)", ErrNotAnOS)
	}
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return err
	}
	for _, p := range parts {
		opt := fmt.Sprintf("ro,loop,offset=%d,sizelimit=%d", p.Start, p.Size)
		if p.FS == "ext4" {
			opt += ",noload" // read a dirty journal's file system as it is, writing nothing
		}
		if _, err := run(ctx, "", "mount", "-t", p.FS, "-o", opt, raw, mnt); err != nil {
			logf("partition %d (%s) does not mount: %v", p.Number, p.FS, err)
			continue
		}
		r, err := os.OpenRoot(mnt)
		isRoot := err == nil
		if isRoot {
			_, err = readOSRelease(r)
			isRoot = err == nil
			r.Close()
		}
		if !isRoot {
			logf("partition %d (%s) has no os-release: not the root file system", p.Number, p.FS)
			run(context.WithoutCancel(ctx), "", "umount", mnt)
			continue
		}
		logf("copying the files of partition %d (%s, %d MiB)", p.Number, p.FS, p.Size>>20)
		_, cerr := run(ctx, "", "cp", "-a", "--one-file-system", mnt+"/.", tree)
		if _, err := run(context.WithoutCancel(ctx), "", "umount", mnt); err != nil {
			logf("umount %s: %v", mnt, err)
		}
		return cerr
	}
	return ErrNotAnOS
}

// diskPartitions lists the stretches of a raw disk that hold a file system Import reads: the whole
// disk when it is one, else its partitions (sfdisk reads MBR and GPT tables).
func diskPartitions(ctx context.Context, raw string) ([]partition, error) {
	f, err := os.Open(raw)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	probe := func(off int64) string {
		head := make([]byte, 0x10048)
		n, _ := f.ReadAt(head, off)
		return fsType(head[:n])
	}
	if t := probe(0); t != "" {
		return []partition{{Number: 1, Start: 0, Size: st.Size(), FS: t}}, nil
	}
	out, err := run(ctx, "", "sfdisk", "--json", raw)
	if err != nil {
		return nil, fmt.Errorf("%w: the disk's partition table cannot be read: %v", ErrDamaged, err)
	}
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node  string `json:"node"`
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(out), &table); err != nil {
		return nil, fmt.Errorf("sfdisk --json: %w", err)
	}
	sector := table.PartitionTable.SectorSize
	if sector == 0 {
		sector = 512
	}
	var parts []partition
	for i, p := range table.PartitionTable.Partitions {
		start, size := p.Start*sector, p.Size*sector
		// The node is the disk's name and the partition's number ("disk.raw3"); an MBR's empty
		// slots are not listed, so the index alone may be wrong.
		number := i + 1
		if digits := strings.TrimLeft(p.Node[len(strings.TrimRight(p.Node, "0123456789")):], "0"); digits != "" {
			if n, err := strconv.Atoi(digits); err == nil {
				number = n
			}
		}
		if start+size > st.Size() {
			return nil, fmt.Errorf("%w: a partition ends at byte %d, past the disk's end (%d): the disk is truncated", ErrDamaged, start+size, st.Size())
		}
		if t := probe(start); t != "" {
			parts = append(parts, partition{Number: number, Start: start, Size: size, FS: t})
		}
	}
	return parts, nil
}
