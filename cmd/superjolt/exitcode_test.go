package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func TestExitCode(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	apiErr := func(code string) error { return &api.Error{Code: code, Message: "m", Status: api.StatusOf(code)} }
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		ran  bool
		want int
	}{
		{"ok", live, nil, true, 0},
		{"internal", live, errors.New("boom"), true, exitInternal},
		{"api internal", live, apiErr("internal"), true, exitInternal},
		{"cobra usage before the command ran", live, errors.New(`unknown command "x"`), false, exitUsage},
		{"invalid", live, apiErr("invalid"), true, exitUsage},
		{"local invalid", live, fmt.Errorf("--balance: %w", model.ErrInvalid), true, exitUsage},
		{"not found", live, apiErr("not_found"), true, exitNotFound},
		{"conflict", live, apiErr("conflict"), true, exitConflict},
		{"funds", live, apiErr("insufficient_funds"), true, exitFunds},
		{"unavailable", live, apiErr("unavailable"), true, exitUnavailable},
		{"no space", live, apiErr("no_space"), true, exitNoSpace},
		{"daemon down", live, fmt.Errorf("%w: cannot reach superjoltd", model.ErrUnavailable), true, exitUnavailable},
		{"SIGINT", cancelled, context.Canceled, true, exitCancelled},
		{"SIGINT mid-request", cancelled, fmt.Errorf("do: %w", context.Canceled), true, exitCancelled},
		{"not confirmed", live, errNotConfirmed, true, exitCancelled},
		{"exec status", live, exitStatus(42), true, 42},
	}
	for _, tt := range tests {
		if got := exitCode(tt.ctx, tt.err, tt.ran); got != tt.want {
			t.Errorf("%s: exitCode = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestMessageDropsTheCategory(t *testing.T) {
	err := fmt.Errorf("%w: vm-abc123 does not exist", model.ErrNotFound)
	if got := message(err); got != "vm-abc123 does not exist" {
		t.Errorf("message = %q", got)
	}
	// Only a real category prefix is dropped.
	if got := message(errors.New("not found: but not the category")); got != "not found: but not the category" {
		t.Errorf("message = %q", got)
	}
}

func TestConfirm(t *testing.T) {
	tests := []struct {
		name        string
		interactive bool
		yes         bool
		input       string
		want        error
	}{
		{"--yes", false, true, "", nil},
		{"--yes on a terminal", true, true, "", nil},
		{"no terminal, no --yes", false, false, "yes\n", model.ErrInvalid},
		{"typed yes", true, false, "yes\n", nil},
		{"typed y (asked for yes)", true, false, "y\n", errNotConfirmed},
		{"typed no", true, false, "no\n", errNotConfirmed},
		{"typed nothing", true, false, "\n", errNotConfirmed},
		{"end of input", true, false, "", errNotConfirmed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			o := &globalOptions{stdin: strings.NewReader(tt.input), stderr: &stderr, interactive: tt.interactive}
			err := o.confirm(context.Background(), tt.yes, "destroy vm-abc123", "Anything written to vm-abc123 since then will be lost.")
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("confirm = %v, want %v", err, tt.want)
			}
			if tt.interactive && !tt.yes && !strings.Contains(stderr.String(), "will be lost") {
				t.Errorf("the prompt did not say what will be lost: %q", stderr.String())
			}
			if !tt.interactive && err != nil && !strings.Contains(err.Error(), "pass --yes") {
				t.Errorf("the refusal does not tell to pass --yes: %v", err)
			}
		})
	}
}

func TestProgressOnlyForPeople(t *testing.T) {
	tests := []struct {
		chatty bool
		output string
		want   bool
	}{
		{true, "text", true},
		{true, "json", false},
		{false, "text", false},
	}
	for _, tt := range tests {
		var stderr strings.Builder
		o := &globalOptions{chatty: tt.chatty, output: tt.output, stderr: &stderr}
		o.progress("Restoring %s…", "vm-abc123")
		if got := stderr.String() != ""; got != tt.want {
			t.Errorf("chatty=%v -o %s: progress printed %q", tt.chatty, tt.output, stderr.String())
		}
	}
}
