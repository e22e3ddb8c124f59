package images

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
	"strings"
)

// modInfo is what the loader needs from a kernel module's .modinfo section.
type modInfo struct {
	Name     string   // name=, or the file name without .ko
	Depends  []string // depends=, modules that must be loaded first
	Vermagic string   // vermagic=, starts with the kernel release
}

// readModInfo reads the .modinfo section of an uncompressed .ko: NUL-separated key=value strings.
func readModInfo(ko []byte, fileName string) (modInfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return modInfo{}, fmt.Errorf("%s: %w", fileName, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return modInfo{}, fmt.Errorf("%s: no .modinfo section", fileName)
	}
	data, err := sec.Data()
	if err != nil {
		return modInfo{}, fmt.Errorf("%s: .modinfo: %w", fileName, err)
	}
	mi := modInfo{Name: strings.TrimSuffix(fileName, ".ko")}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					mi.Depends = append(mi.Depends, d)
				}
			}
		case "vermagic":
			mi.Vermagic = v
		}
	}
	return mi, nil
}

// loadOrder orders modules so that each comes after what it depends on; among modules free to go,
// the order of the input is kept. It fails if a dependency is not in the set, or on a cycle.
func loadOrder(mods []modInfo) ([]string, error) {
	byName := map[string]modInfo{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	var missing []string
	for _, m := range mods {
		for _, d := range m.Depends {
			if _, ok := byName[d]; !ok {
				missing = append(missing, m.Name+" needs "+d)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("module dependencies not in the image: %s", strings.Join(missing, ", "))
	}
	var order []string
	state := map[string]int{} // 0 unseen, 1 on the stack, 2 done
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, name), " -> "))
		case 2:
			return nil
		}
		state[name] = 1
		for _, d := range byName[name].Depends {
			if err := visit(d, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, m := range mods {
		if err := visit(m.Name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
