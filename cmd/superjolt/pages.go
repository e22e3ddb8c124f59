package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// pageFlags are a list command's --limit and --cursor.
type pageFlags struct {
	limit  int
	cursor string
}

func (pg *pageFlags) add(c *cobra.Command, items string) {
	c.Flags().IntVar(&pg.limit, "limit", 0, fmt.Sprintf("list a page of at most this many %s (1 to %d) and print the next page's cursor", items, api.MaxPageLimit))
	c.Flags().StringVar(&pg.cursor, "cursor", "", "start after the page this cursor ended (as the previous page printed it)")
}

// page returns the page asked for, and whether one was (a list without
// --limit or --cursor is the whole list, as one answer).
func (pg *pageFlags) page(c *cobra.Command) (api.Page, bool, error) {
	p := api.Page{Limit: pg.limit, Cursor: pg.cursor}
	if c.Flags().Changed("limit") && (p.Limit < 1 || p.Limit > api.MaxPageLimit) {
		return p, false, fmt.Errorf("%w: --limit %d is out of range: give 1 to %d", model.ErrInvalid, p.Limit, api.MaxPageLimit)
	}
	if p.Cursor != "" && p.Limit == 0 {
		return p, false, fmt.Errorf("%w: --cursor continues a list a page at a time: give --limit too", model.ErrInvalid)
	}
	return p, p.Limit > 0, nil
}

// nextPage tells how to list the page after this one, on stderr, so that
// the table on stdout stays a table.
func (o *globalOptions) nextPage(cursor string) {
	if cursor != "" {
		fmt.Fprintf(o.stderr, "more: add --cursor %s for the next page (with the same filters)\n", cursor)
	}
}
