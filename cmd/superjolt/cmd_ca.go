package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
)

func newCACommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "ca",
		Short: "Print the local CA's certificate, which signs the HTTPS certificates of the VMs' domains",
		Long: `Print the certificate (PEM) of superjoltd's local certificate authority. When
the operator gave no certificate for a domain, superjoltd's proxy serves it over
HTTPS with a certificate this CA signed: a client that trusts it reaches the
domain without warnings, for example

  superjolt ca > superjolt-ca.pem
  curl --cacert superjolt-ca.pem https://app.example.com/`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			pem, err := o.client.CA(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(api.CA{Cert: pem})
			}
			_, err = fmt.Fprint(o.stdout, pem)
			return err
		},
	}
}
