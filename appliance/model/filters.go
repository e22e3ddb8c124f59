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

// ValidateVMFilter checks what a VM list is filtered by, each when set: the
// account's id, the state, the start of the name and the image's name. The
// API's client and the appliance both check with it.
func ValidateVMFilter(account string, state VMState, namePrefix, image string) error {
	if account != "" {
		if err := ValidateID(KindAccount, account); err != nil {
			return err
		}
	}
	if state != "" {
		if _, err := ParseVMState(string(state)); err != nil {
			return err
		}
	}
	if namePrefix != "" {
		if err := ValidateVMNamePrefix(namePrefix); err != nil {
			return err
		}
	}
	if image != "" {
		if err := ValidateImageName(image); err != nil {
			return err
		}
	}
	return nil
}

// ValidateBackupFilter checks what a backup list is filtered by, each when
// set: the account's and the VM's ids and the kind.
func ValidateBackupFilter(account, vm string, kind BackupKind) error {
	if account != "" {
		if err := ValidateID(KindAccount, account); err != nil {
			return err
		}
	}
	if vm != "" {
		if err := ValidateID(KindVM, vm); err != nil {
			return err
		}
	}
	if kind != "" {
		if _, err := ParseBackupKind(string(kind)); err != nil {
			return err
		}
	}
	return nil
}
