package model

// ValidateVMNamePrefix checks the start of a VM name that a list is
// filtered by: a prefix that no VM name can have is refused rather than
// answered with an empty list.
func ValidateVMNamePrefix(s string) error {
	ok := s != "" && len(s) <= 63 && s[0] != '-'
	for i := 0; ok && i < len(s); i++ {
		ok = isAlnum(s[i]) || s[i] == '-'
	}
	if !ok {
		return invalidf("VM name prefix %q matches no VM name: names are 1-63 lowercase letters, digits and dashes, not starting with a dash", clip(s))
	}
	return nil
}

// ParseBackupKind checks a backup kind given by name.
func ParseBackupKind(s string) (BackupKind, error) {
	switch k := BackupKind(s); k {
	case Scheduled, OnDemand:
		return k, nil
	}
	return "", invalidf("unknown backup kind %q: use %s or %s", clip(s), Scheduled, OnDemand)
}
