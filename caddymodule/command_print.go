package caddymodule

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/apitoken/caddy-apitoken/event"
)

func jsonOutput(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

// output prints the admin API's raw answer with --json, and otherwise what
// human writes.
func output(cmd *cobra.Command, raw []byte, human func(w io.Writer) error) error {
	w := cmd.OutOrStdout()
	if jsonOutput(cmd) || human == nil {
		_, err := w.Write(raw)
		return err
	}
	return human(w)
}

// printSecret prints a newly created or rotated token with its secret.
func printSecret(cmd *cobra.Command, raw []byte, tok tokenJSON, verb string) error {
	return output(cmd, raw, func(w io.Writer) error {
		fmt.Fprintf(w, "%s token %s (%s of %s), %s.\n\n", verb, escapeText(tok.ID), escapeText(tok.Name), escapeText(tok.User), expiresText(tok.ExpiresAt))
		fmt.Fprintf(w, "    %s\n\n", escapeText(tok.Token))
		_, err := fmt.Fprintln(w, "Copy it now: it is shown only this once. Use it in place of the password: curl -u "+escapeText(tok.User)+":<token> …")
		return err
	})
}

// printTable prints tokens as a table.
func printTable(w io.Writer, toks []tokenJSON) error {
	if len(toks) == 0 {
		_, err := fmt.Fprintln(w, "No tokens.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tNAME\tSTATE\tEXPIRES\tLAST USED\tFROM\tUSES\tHINT")
	for _, t := range toks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", escapeText(t.ID), escapeText(t.User), escapeText(t.Name), escapeText(t.State),
			shortTime(t.ExpiresAt, "never"), shortTime(t.LastUsedAt, "never"), dash(escapeText(t.LastUsedIP)), t.UseCount, escapeText(t.Hint))
	}
	return tw.Flush()
}

// printDetails prints one token, a field per line.
func printDetails(w io.Writer, t tokenJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\n", escapeText(t.ID))
	fmt.Fprintf(tw, "User:\t%s\n", escapeText(t.User))
	fmt.Fprintf(tw, "Name:\t%s\n", escapeText(t.Name))
	if t.Description != "" {
		fmt.Fprintf(tw, "Description:\t%s\n", escapeText(t.Description))
	}
	fmt.Fprintf(tw, "State:\t%s\n", escapeText(t.State))
	fmt.Fprintf(tw, "Hint:\t%s\n", escapeText(t.Hint))
	fmt.Fprintf(tw, "Created:\t%s\n", shortTime(&t.CreatedAt, ""))
	fmt.Fprintf(tw, "Expires:\t%s\n", shortTime(t.ExpiresAt, "never"))
	rules := []struct{ label, value string }{
		{"Allowed IPs", strings.Join(t.AllowedIPs, ", ")},
		{"Methods", strings.Join(t.Methods, ", ")},
		{"Paths", strings.Join(t.Paths, ", ")},
		{"Hosts", strings.Join(t.Hosts, ", ")},
		{"Rate limit", t.RateLimit},
	}
	if t.ReadOnly {
		fmt.Fprintf(tw, "Read-only:\tyes\n")
	}
	for _, r := range rules {
		if r.value != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", r.label, escapeText(r.value))
		}
	}
	if t.RotatedAt != nil {
		fmt.Fprintf(tw, "Rotated:\t%s\n", shortTime(t.RotatedAt, ""))
	}
	if t.RevokedAt != nil {
		fmt.Fprintf(tw, "Revoked:\t%s\n", shortTime(t.RevokedAt, ""))
	}
	fmt.Fprintf(tw, "Last used:\t%s\n", shortTime(t.LastUsedAt, "never"))
	fmt.Fprintf(tw, "Uses:\t%d\n", t.UseCount)
	for i, seen := range t.RecentIPs {
		label := ""
		if i == 0 {
			label = "Recent IPs:"
		}
		fmt.Fprintf(tw, "%s\t%s (%s)\n", label, escapeText(seen.IP), shortTime(&seen.LastSeen, ""))
	}
	_ = tw.Flush()
}

func shortTime(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func expiresText(t *time.Time) string {
	if t == nil {
		return "never expires"
	}
	return "expires " + shortTime(t, "")
}

// escapeText makes text from the admin API safe to print on a terminal:
// every rune that is not printable (strconv.IsPrint: control characters,
// Unicode format characters such as bidi overrides, separators other than
// the space), every byte that is not UTF-8, and the backslash are written
// as Go escapes (\x1b, \n, \u202e, \xff, \\), the rest as it is. Anything
// a client can type reaches these texts (a path, a host, a user name), and
// a control sequence must neither act on the operator's terminal nor forge
// a line of output. --json prints the answer as it is.
func escapeText(s string) string {
	i := 0
	for i < len(s) && s[i] >= ' ' && s[i] < utf8.RuneSelf && s[i] != '\\' && s[i] != 0x7f {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case strconv.IsPrint(r) && !unicode.Is(unicode.Cf, r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// summaryText describes what a summary of refusals stands for: how many,
// and from whom, "[summary of 5234; clients 203.0.113.7 (4120), …; users
// admin (5000)]".
func summaryText(e eventJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[summary of %d", e.Count)
	for _, list := range []struct {
		name string
		top  []event.Tally
	}{{"clients", e.TopClients}, {"users", e.TopUsers}} {
		for i, t := range list.top {
			sep := ", "
			if i == 0 {
				sep = "; " + list.name + " "
			}
			fmt.Fprintf(&b, "%s%s (%d)", sep, escapeText(t.Value), t.Count)
		}
	}
	b.WriteByte(']')
	return b.String()
}

// printEvents prints a page of audit events as a table; a summary of
// refusals says how many it stands for and their top clients and users.
func printEvents(w io.Writer, page auditPageJSON) error {
	if len(page.Events) == 0 {
		_, err := fmt.Fprintln(w, "No events.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tOUTCOME\tREASON\tUSER\tTOKEN\tCLIENT\tREQUEST")
	for _, e := range page.Events {
		req := strings.TrimSpace(e.Method + " " + e.Host + e.Path)
		if e.Status != 0 {
			req += " → " + strconv.Itoa(e.Status)
		}
		client := e.ClientIP
		if client == "" {
			client = e.Actor
		}
		req = escapeText(req)
		if (event.Event{Type: event.Type(e.Type), Count: e.Count}).IsSummary() {
			req = strings.TrimSpace(req + " " + summaryText(e))
		}
		user := escapeText(e.User)
		if e.ClaimedUser != "" {
			user += " (claimed " + escapeText(e.ClaimedUser) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02 15:04:05"),
			escapeText(e.Type), escapeText(e.Outcome), dash(escapeText(e.Reason)), dash(user), dash(escapeText(e.TokenID)),
			dash(escapeText(client)), dash(req))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(w, "\nMore: caddy api-token audit --cursor %s (with the same filters)\n", escapeText(page.NextCursor))
	}
	return nil
}
