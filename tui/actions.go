package tui

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// Every action of the CLI is a key away; this file is what each key does.
// Checks that the console can make (a name's form, an amount, a port that
// exists) happen before anything is sent; everything else is the daemon's
// to decide, and its answer is shown where the action was asked.

// young is the age under which a destroyed VM is reclaimed at once
// (the product page: destroyed within its first hour, no graveyard).
const young = time.Hour

// acted shows an action's answer: in its dialog when one waits for it,
// else on the message line.
func (m *Model) acted(msg actionMsg) tea.Cmd {
	// The answer is the open dialog's only if that dialog sent something
	// (an earlier action may answer while another dialog is being filled).
	if w, ok := m.dialog.(waiting); ok && w.sent() {
		if !w.done(msg.err) {
			return nil
		}
		m.dialog = nil
	}
	if msg.err != nil {
		m.fail(msg.err)
		return nil
	}
	if msg.then != nil {
		return msg.then(m)
	}
	if msg.op.ID != "" {
		if _, known := m.d.ops[msg.op.ID]; !known {
			m.d.putOp(msg.op) // its events may have come first
		}
		m.follow(msg.what, msg.op)
	} else {
		m.say("%s: done", msg.what)
	}
	return nil
}

// vmAction handles the keys that act on one VM, in any view that has one
// under its cursor.
func (m *Model) vmAction(msg tea.KeyMsg, id string) (tea.Cmd, bool) {
	vm, ok := m.d.vms[id]
	if !ok {
		return nil, false
	}
	k := m.keys
	switch {
	case key.Matches(msg, k.Backup):
		return m.act("backup of "+id, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.CreateBackup(ctx, id)
		}), true
	case key.Matches(msg, k.Restore):
		return m.restorePicker(id, ""), true
	case key.Matches(msg, k.StopStart):
		return m.stopStart(vm), true
	case key.Matches(msg, k.Destroy):
		return m.destroy(vm), true
	case key.Matches(msg, k.Resume):
		return m.resume(id), true
	case key.Matches(msg, k.TopUp):
		return m.topUpForm(vm.AccountID), true
	case key.Matches(msg, k.AddPort):
		return m.portForm(vm, true), true
	case key.Matches(msg, k.RemovePort):
		return m.portForm(vm, false), true
	case key.Matches(msg, k.AddDomain):
		return m.domainForm(vm, true), true
	case key.Matches(msg, k.RemoveDomain):
		return m.domainForm(vm, false), true
	}
	return nil, false
}

func (m *Model) stopStart(vm model.VM) tea.Cmd {
	switch vm.State {
	case model.StateRunning:
		return m.act("stop of "+vm.ID, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.StopVM(ctx, vm.ID)
		})
	case model.StateStopped:
		return m.act("start of "+vm.ID, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.StartVM(ctx, vm.ID)
		})
	}
	m.fail(fmt.Errorf("%s is %s: s stops a running VM or starts a stopped one", vm.ID, vm.State))
	return nil
}

func (m *Model) resume(id string) tea.Cmd {
	vm := m.d.vms[id]
	if vm.State.Live() {
		m.fail(fmt.Errorf("%s is %s: u resumes a VM from the graveyard or the archive", id, vm.State))
		return nil
	}
	return m.act("resume of "+id, func(ctx context.Context, c *api.Client) (model.Operation, error) {
		return c.ResumeVM(ctx, id)
	})
}

func (m *Model) cancelOp(id string) tea.Cmd {
	return m.act("cancel of "+id, func(ctx context.Context, c *api.Client) (model.Operation, error) {
		return c.CancelOperation(ctx, id)
	})
}

// confirmWord is what must be typed to confirm a destructive action on vm:
// its name, or its id when it has none.
func confirmWord(vm model.VM) string {
	if vm.Name != "" {
		return vm.Name
	}
	return vm.ID
}

func (m *Model) destroy(vm model.VM) tea.Cmd {
	if !vm.State.Live() {
		m.fail(fmt.Errorf("%s is already %s: it is reclaimed by itself, or u resumes it", vm.ID, vm.State))
		return nil
	}
	now := m.now()
	nb := len(m.d.backups[vm.ID])
	var lines []string
	if age := now.Sub(vm.CreatedAt); age < young {
		lines = []string{
			fmt.Sprintf("%s (%s) is under an hour old (created %s ago): it has no graveyard.", vm.ID, confirmWord(vm), span(age)),
			fmt.Sprintf("Lost at once and for good: its disk, %s, its IP, ports and domains.", model.Count(nb, "backup")),
		}
	} else {
		lines = []string{
			fmt.Sprintf("%s (%s) stops and goes to the graveyard.", vm.ID, confirmWord(vm)),
			fmt.Sprintf("Its disk and %s are kept for 24 h: u (resume) brings it back with the same IP, ports and domains until %s. After that they are gone.",
				model.Count(nb, "backup"), stamp(now, now.Add(24*time.Hour), m.loc)+" "+model.ZoneName(m.loc, now)),
		}
	}
	m.dialog = newConfirm("Destroy "+vm.ID+"?", lines, confirmWord(vm), "Destroy", func(m *Model) tea.Cmd {
		return m.act("destroy of "+vm.ID, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.DestroyVM(ctx, vm.ID)
		})
	})
	return nil
}

// restorePicker lists what a VM can be restored from: "yesterday" (the
// daemon picks) and each backup, newest first; selected starts the cursor
// on one backup.
func (m *Model) restorePicker(vmID, selected string) tea.Cmd {
	vm := m.d.vms[vmID]
	bks := m.d.backups[vmID]
	if len(bks) == 0 {
		m.fail(fmt.Errorf("%s has no backups to restore from: b takes one now", vmID))
		return nil
	}
	now := m.now()
	p := &picker{title: "Restore " + vmID + " from…", note: "Its disk goes back to the backup; id, IP, ports and domains stay."}
	p.choices = append(p.choices, choice{
		label: "yesterday: the last backup taken yesterday (" + model.ZoneName(m.loc, now) + ")",
		pick: func(m *Model) (dialog, tea.Cmd) {
			tz := m.loc.String()
			if tz == "Local" {
				tz = ""
			}
			return p, m.io(func() tea.Msg {
				ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
				defer cancel()
				b, err := m.client.ResolveBackup(ctx, vmID, "yesterday", tz)
				return actionMsg{what: "restore", err: err, then: func(m *Model) tea.Cmd {
					m.dialog = m.restoreConfirm(vm, b)
					return nil
				}}
			})
		},
	})
	for i, b := range bks {
		label := fmt.Sprintf("%s  %-9s %s (%s)  %s  %s", b.ID, b.Kind, stamp(now, b.TakenAt, m.loc), ago(now, b.TakenAt), b.Consistency, fmtBytes(b.SizeBytes))
		p.choices = append(p.choices, choice{label: label, pick: func(m *Model) (dialog, tea.Cmd) {
			return m.restoreConfirm(vm, b), nil
		}})
		if b.ID == selected {
			p.cursor = i + 1
		}
	}
	m.dialog = p
	return nil
}

func (m *Model) restoreConfirm(vm model.VM, b model.Backup) dialog {
	now := m.now()
	lines := []string{
		fmt.Sprintf("%s's disk goes back to %s, a %s backup taken %s (%s ago, %s).", vm.ID, b.ID, b.Kind, stamp(now, b.TakenAt, m.loc), span(now.Sub(b.TakenAt)), b.Consistency),
		fmt.Sprintf("Lost: everything written to it since then. Kept: its id, IP, ports, domains and every backup; it reboots if it ran."),
		"To keep a way back to now, Esc and take a backup first (b).",
	}
	return newConfirm("Restore "+vm.ID+"?", lines, confirmWord(vm), "Restore", func(m *Model) tea.Cmd {
		return m.act("restore of "+vm.ID+" from "+b.ID, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.RestoreVM(ctx, vm.ID, b.ID)
		})
	})
}

func (m *Model) deleteBackup(vmID, bkID string) tea.Cmd {
	vm := m.d.vms[vmID]
	var b model.Backup
	for _, x := range m.d.backups[vmID] {
		if x.ID == bkID {
			b = x
		}
	}
	if b.ID == "" {
		m.fail(fmt.Errorf("no backup under the cursor: pick one in the list (↑/↓)"))
		return nil
	}
	if b.Kind != model.OnDemand {
		keep := m.d.accounts[vm.AccountID].Entitlements.BackupRetention
		m.fail(fmt.Errorf("%s is a scheduled backup: retention rolls it off (the account keeps %d); only on-demand backups can be deleted", b.ID, keep))
		return nil
	}
	now := m.now()
	lines := []string{
		fmt.Sprintf("On-demand backup %s of %s, taken %s (%s ago), is deleted and its %s freed.", b.ID, vmID, stamp(now, b.TakenAt, m.loc), span(now.Sub(b.TakenAt)), fmtBytes(b.SizeBytes)),
		"This cannot be undone; the VM and its other backups are not touched.",
	}
	m.dialog = newConfirm("Delete backup "+b.ID+"?", lines, confirmWord(vm), "Delete", func(m *Model) tea.Cmd {
		return m.act("delete of "+b.ID, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.DeleteBackup(ctx, b.ID)
		})
	})
	return nil
}

// createForm is the form of a new VM; account preselects one.
func (m *Model) createForm(account string) tea.Cmd {
	if account == "" && len(m.d.accounts) == 1 {
		for id := range m.d.accounts {
			account = id
		}
	}
	tiers := make([]string, 0, len(m.d.tiers))
	for n := range m.d.tiers {
		tiers = append(tiers, n)
	}
	slices.SortFunc(tiers, func(a, b string) int { return int(m.d.tiers[a].RatePerHour - m.d.tiers[b].RatePerHour) })
	var images []string
	builtin := ""
	for _, im := range m.d.images {
		images = append(images, im.Name)
		if im.Builtin {
			builtin = im.Name
		}
	}
	acct := &field{label: "Account", hint: "an account's id or name", input: newInput("id or name"), check: func(s string) error {
		_, err := m.findAccount(s)
		return err
	}}
	acct.input.SetValue(m.d.accountName(account))
	if account == "" {
		acct.input.SetValue("")
	}
	tier := &field{label: "Tier", hint: "one of " + strings.Join(tiers, ", "), input: newInput(strings.Join(tiers, "|")), check: func(s string) error {
		if _, ok := m.d.tiers[s]; !ok {
			return fmt.Errorf("no tier %q: use one of %s", s, strings.Join(tiers, ", "))
		}
		return nil
	}}
	if len(tiers) > 0 {
		tier.input.SetValue(tiers[0])
		if _, ok := m.d.tiers["nano"]; ok {
			tier.input.SetValue("nano")
		}
	}
	name := &field{label: "Name", hint: "its hostname: lowercase letters, digits, dashes (empty: one is picked)", input: newInput("web-1"), check: func(s string) error {
		if s == "" {
			return nil
		}
		return model.ValidateVMName(s)
	}}
	image := &field{label: "Image", hint: "one of " + strings.Join(images, ", "), input: newInput(builtin), check: func(s string) error {
		if s == "" || slices.Contains(images, s) {
			return nil
		}
		return fmt.Errorf("no image %q: use one of %s", s, strings.Join(images, ", "))
	}}
	image.input.SetValue(builtin)
	f := &form{title: "Create a VM", fields: []*field{acct, tier, name, image}, submit: "Create"}
	f.send = func(m *Model, v []string) tea.Cmd {
		a, _ := m.findAccount(v[0])
		req := api.CreateVMRequest{AccountID: a.ID, Tier: v[1], Name: v[2], Image: v[3]}
		return m.act("create of "+or(v[2], "a VM"), func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return c.CreateVM(ctx, req)
		})
	}
	m.dialog = f
	return f.setFocus(0)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// findAccount finds an account by id or name.
func (m *Model) findAccount(s string) (model.Account, error) {
	if a, ok := m.d.accounts[s]; ok {
		return a, nil
	}
	for _, a := range m.d.accounts {
		if a.Name == s && s != "" {
			return a, nil
		}
	}
	if s == "" {
		return model.Account{}, errors.New("an account is needed: type its id or name (the Accounts view lists them)")
	}
	return model.Account{}, fmt.Errorf("no account %q: type an account's id or name (the Accounts view lists them)", s)
}

func (m *Model) topUpForm(accountID string) tea.Cmd {
	a, ok := m.d.accounts[accountID]
	if !ok {
		m.fail(fmt.Errorf("no account under the cursor"))
		return nil
	}
	amount := &field{label: "Credits", hint: "a positive amount, up to 6 decimals (like 25 or 2.5)", input: newInput("25"), check: func(s string) error {
		c, err := model.ParseCredits(s)
		if err != nil {
			return err
		}
		return model.ValidateAmount(c)
	}}
	f := &form{title: fmt.Sprintf("Top up %s (%s), balance %s", a.ID, a.Name, a.Balance), fields: []*field{amount}, submit: "Top up"}
	f.send = func(m *Model, v []string) tea.Cmd {
		c, _ := model.ParseCredits(v[0])
		return m.act("top-up of "+a.ID, func(ctx context.Context, cl *api.Client) (model.Operation, error) {
			_, err := cl.TopUp(ctx, a.ID, c)
			return model.Operation{}, err
		})
	}
	m.dialog = f
	return f.setFocus(0)
}

// edit is what the add and remove forms of a VM's ports or domains need.
type edit struct {
	noun    string   // "port"
	items   []string // the VM's, by identity (a port: its host port)
	shown   []string // the VM's, as they are written
	example string   // the placeholder
	addHint string   // what an added one may be
	addKey  string   // the key that adds one, for "has none" errors
	addVerb string   // "open on", "attach to"
	remVerb string   // "remove from", "detach from"
	hasVerb string   // "open on", "attached to"
	// parse checks what was typed and returns its identity (a port: its
	// host port, whatever it forwards to) and how it is written.
	parse    func(s string) (id, canon string, err error)
	add, rem func(ctx context.Context, c *api.Client, vmID, typed string) error
}

func (m *Model) portForm(vm model.VM, add bool) tea.Cmd {
	ports, shown := make([]string, len(vm.Ports)), make([]string, len(vm.Ports))
	for i, p := range vm.Ports {
		ports[i], shown[i] = p.Host().String(), p.String()
	}
	return m.editForm(vm, add, edit{
		noun: "port", items: ports, shown: shown, example: "8080:80/tcp", addKey: "p",
		addHint: "HOSTPORT[:GUESTPORT][/tcp|/udp], like 8080:80/tcp (host port 8080 to the VM's 80)",
		addVerb: "Forward a port to", remVerb: "Remove a port of", hasVerb: "forwarded to",
		parse: func(s string) (string, string, error) {
			p, err := api.ParsePort(s)
			return p.Host().String(), p.String(), err
		},
		add: func(ctx context.Context, c *api.Client, id, typed string) error {
			p, _ := api.ParsePort(typed)
			_, err := c.AddPort(ctx, id, p)
			return err
		},
		rem: func(ctx context.Context, c *api.Client, id, typed string) error {
			p, _ := api.ParsePort(typed)
			_, err := c.RemovePort(ctx, id, p)
			return err
		},
	})
}

func (m *Model) domainForm(vm model.VM, add bool) tea.Cmd {
	return m.editForm(vm, add, edit{
		noun: "domain", items: vm.Domains, shown: vm.Domains, example: "app.example.com", addHint: "a DNS name, like app.example.com", addKey: "n",
		addVerb: "Attach a domain to", remVerb: "Detach a domain from", hasVerb: "attached to",
		parse: func(s string) (string, string, error) {
			s = model.NormalizeDomain(s)
			return s, s, model.ValidateDomain(s)
		},
		add: func(ctx context.Context, c *api.Client, id, typed string) error {
			_, err := c.AddDomain(ctx, id, model.NormalizeDomain(typed), 0)
			return err
		},
		rem: func(ctx context.Context, c *api.Client, id, typed string) error {
			_, err := c.RemoveDomain(ctx, id, model.NormalizeDomain(typed))
			return err
		},
	})
}

// editForm is the one-field form that adds an item to a VM's ports or
// domains, or removes one it has.
func (m *Model) editForm(vm model.VM, add bool, e edit) tea.Cmd {
	title, submit, hint := e.addVerb+" "+vm.ID, "Add", e.addHint
	if !add {
		if len(e.items) == 0 {
			m.fail(fmt.Errorf("%s has no %ss to remove: %s adds one", vm.ID, e.noun, e.addKey))
			return nil
		}
		title, submit, hint = e.remVerb+" "+vm.ID, "Remove", "one of "+strings.Join(e.shown, ", ")
	}
	fl := &field{label: strings.ToUpper(e.noun[:1]) + e.noun[1:], hint: hint, input: newInput(e.example), check: func(s string) error {
		item, _, err := e.parse(s)
		if err != nil {
			return err
		}
		has := slices.Contains(e.items, item)
		switch {
		case add && has:
			return fmt.Errorf("%s is already %s %s", item, e.hasVerb, vm.ID)
		case !add && !has:
			return fmt.Errorf("%s is not %s %s: it has %s", item, e.hasVerb, vm.ID, strings.Join(e.shown, ", "))
		}
		return nil
	}}
	if !add {
		fl.input.SetValue(e.shown[0])
	}
	f := &form{title: title, fields: []*field{fl}, submit: submit}
	f.send = func(m *Model, v []string) tea.Cmd {
		call := e.add
		if !add {
			call = e.rem
		}
		_, canon, _ := e.parse(v[0])
		return m.act(strings.ToLower(submit)+" "+e.noun+" "+canon+" of "+vm.ID, func(ctx context.Context, c *api.Client) (model.Operation, error) {
			return model.Operation{}, call(ctx, c, vm.ID, v[0])
		})
	}
	m.dialog = f
	return f.setFocus(0)
}
