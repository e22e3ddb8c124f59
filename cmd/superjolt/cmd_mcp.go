package main

import (
	"errors"
	"io"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/mcpserver"
)

func newMCPCommand(o *globalOptions) *cobra.Command {
	var readOnly bool
	c := &cobra.Command{
		Use:   "mcp [--read-only]",
		Short: "Serve the product page's verbs as MCP tools over stdio, for an assistant",
		Long: `Serve an MCP server on stdin and stdout: the tools list_vms, get_vm, create_vm,
get_account, get_operation, create_backup, list_backups,
restore_vm_from_backup, delete_backup, stop_vm, start_vm, destroy_vm and
resume_vm, for an assistant that starts this command (see the README).

It acts as this command's client does: the operator through the socket, or
one account with --server and --token (SUPERJOLT_SERVER, SUPERJOLT_TOKEN,
SUPERJOLT_CA), where superjoltd scopes everything to that account.
restore_vm_from_backup, delete_backup and destroy_vm are two-phase: the first
call changes nothing and says what would be lost, with a confirmation good
for 5 minutes, for the same arguments, in this process only. --read-only
offers only list_vms, get_vm, get_account, get_operation and list_backups.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := mcpserver.New(mcpserver.Client(o.client), mcpserver.Options{ReadOnly: readOnly, Caller: "stdio"})
			t := &mcp.IOTransport{Reader: readCloser{o.stdin}, Writer: nopWriteCloser{o.stdout}}
			err := s.Run(cmd.Context(), t)
			if err != nil && (cmd.Context().Err() != nil || errors.Is(err, io.EOF)) {
				return nil // the assistant hung up, or Ctrl-C
			}
			return err
		},
	}
	c.Flags().BoolVar(&readOnly, "read-only", false, "offer only the tools that change nothing")
	return c
}

type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
