package main

import (
	"fmt"
	"io"
	"os"

	"github.com/superjolt/superjolt/appliance/model"
)

// maxSSHKeyFile bounds what is read of one --ssh-key FILE: more than
// MaxSSHKeys lines of the longest length is no key file.
const maxSSHKeyFile = (model.MaxSSHKeys + 1) * (model.MaxSSHKeyLine + 1)

// readSSHKeys reads the OpenSSH public keys in files ("-" is stdin, read
// once), one key a line, checked with model.ParseSSHKeys so that a wrong
// file is named in the error; the daemon checks them again.
func (o *globalOptions) readSSHKeys(files []string) ([]string, error) {
	var lists [][]string
	stdin := false
	for _, f := range files {
		var (
			b    []byte
			err  error
			name = f
		)
		if f == "-" {
			if stdin {
				return nil, fmt.Errorf("%w: --ssh-key - (stdin) given twice", model.ErrInvalid)
			}
			stdin, name = true, "stdin"
			b, err = io.ReadAll(io.LimitReader(o.stdin, maxSSHKeyFile+1))
		} else {
			b, err = readLimited(f)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: --ssh-key %s: %v", model.ErrInvalid, f, err)
		}
		if len(b) > maxSSHKeyFile {
			return nil, fmt.Errorf("%w: --ssh-key %s is larger than %d bytes: pass a .pub file", model.ErrInvalid, f, maxSSHKeyFile)
		}
		keys, err := model.ParseSSHKeys(name, string(b))
		if err != nil {
			return nil, err
		}
		lists = append(lists, keys)
	}
	return model.MergeSSHKeys(lists...)
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSSHKeyFile+1))
}
