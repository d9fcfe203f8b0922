package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "api-token",
		Usage: "create|list|show|update|revoke|rotate|group|audit [--address <listen>] [--config <path> [--adapter <name>]] [--json]",
		Short: "Manages API tokens of the api_token gate",
		Long: `
Creates, lists, shows, updates, revokes and rotates the API tokens that the
api_token handler accepts, and manages the groups named in the holders
option, through the admin API of a running Caddy (routes under
/api_tokens/). The secret of a token is printed once, by create and rotate;
it cannot be shown again.

This command connects to Caddy's admin API at '` + caddy.DefaultAdminListen + `'.
Give --address, or --config (and --adapter) to read the admin address from
your config, if it is elsewhere. Output is meant for people; --json prints
what the admin API answered, for scripts.

Examples:
  caddy api-token create --user alice --name jira-sync --expires-in 30d
  caddy api-token create --user ci --name deploy --allow-ip 10.0.0.0/8 --read-only --path '/rest/api/*'
  caddy api-token list --user alice --state active
  caddy api-token show <id>
  caddy api-token update <id> --expires-in 60d --rate-limit 600/1m
  caddy api-token rotate <id>
  caddy api-token revoke <id>
  caddy api-token revoke --user alice
  caddy api-token group add jira-users alice
  caddy api-token group list jira-users
  caddy api-token audit --token <id> --since 2026-11-01T00:00:00Z`,
		CobraFunc: configureCommand,
	})
}

// configureCommand adds the flags and subcommands of `caddy api-token`.
func configureCommand(cmd *cobra.Command) {
	cmd.PersistentFlags().String("address", "", "Address of the administration API listener (if --config is not used)")
	cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (if --address is not used)")
	cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	cmd.PersistentFlags().Bool("json", false, "Print the admin API's JSON answer instead of text")
	cmd.AddCommand(createCommand(), listCommand(), showCommand(), updateCommand(), revokeCommand(), rotateCommand(), groupCommand(), auditCommand())
}

// ruleFlags are the flags that set a token's rules, on create and update.
func ruleFlags(cmd *cobra.Command) {
	cmd.Flags().StringSlice("allow-ip", nil, "Client IP range the token may be used from (CIDR, IP or private_ranges); repeat or comma-separate")
	cmd.Flags().Bool("read-only", false, "Allow only requests that read: GET, HEAD, OPTIONS and the gate's read_posts")
	cmd.Flags().StringSlice("method", nil, "HTTP method the token may use; repeat or comma-separate")
	cmd.Flags().StringSlice("path", nil, "Path pattern the token may use (Caddy path-matcher syntax); repeat")
	cmd.Flags().StringSlice("host", nil, "Host the token may be used for (*.example.com allowed); repeat")
	cmd.Flags().String("rate-limit", "", "Requests allowed per token, as <requests>/<duration>, e.g. 600/1m")
}

// ruleBody adds the rule flags the user gave to a request body.
func ruleBody(cmd *cobra.Command, body map[string]any) {
	lists := map[string]string{"allow-ip": "allowed_ips", "method": "methods", "path": "paths", "host": "hosts"}
	for flag, field := range lists {
		if cmd.Flags().Changed(flag) {
			v, _ := cmd.Flags().GetStringSlice(flag)
			if v == nil {
				v = []string{}
			}
			body[field] = v
		}
	}
	if cmd.Flags().Changed("read-only") {
		v, _ := cmd.Flags().GetBool("read-only")
		body["read_only"] = v
	}
	if cmd.Flags().Changed("rate-limit") {
		v, _ := cmd.Flags().GetString("rate-limit")
		body["rate_limit"] = v
	}
}

// stringBody adds the string flags the user gave to a request body.
func stringBody(cmd *cobra.Command, body map[string]any, flags ...string) {
	for _, f := range flags {
		if cmd.Flags().Changed(f) {
			v, _ := cmd.Flags().GetString(f)
			body[strings.ReplaceAll(f, "-", "_")] = v
		}
	}
}

func createCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create --user <user> --name <name> [--expires-in <duration>|never | --expires-at <RFC 3339>] [--description <text>]",
		Short: "Creates a token and prints its secret, once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{}
			stringBody(cmd, body, "user", "name", "description", "expires-in", "expires-at")
			ruleBody(cmd, body)
			var tok tokenJSON
			raw, err := adminCall(cmd, http.MethodPost, "/api_tokens/tokens", body, &tok)
			if err != nil {
				return err
			}
			return printSecret(cmd, raw, tok, "Created")
		},
	}
	cmd.Flags().String("user", "", "User who owns the token (required)")
	cmd.Flags().String("name", "", "Name of the token, unique among the user's active tokens (required)")
	cmd.Flags().String("description", "", "What the token is for")
	cmd.Flags().String("expires-in", "", "Lifetime, such as 30d or 12h, or never (default: the app's default_validity)")
	cmd.Flags().String("expires-at", "", "Expiry time in RFC 3339, such as 2027-01-31T00:00:00Z")
	ruleFlags(cmd)
	_ = cmd.MarkFlagRequired("user")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func updateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update <id> [--name <name>] [--description <text>] [--expires-in <duration> | --expires-at <RFC 3339>] [rule flags]",
		Short: "Changes a token's name, description, expiry or rules",
		Long: `Changes what the flags name and nothing else. A list flag given with an
empty value (--allow-ip "") clears that list.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			stringBody(cmd, body, "name", "description", "expires-in", "expires-at")
			ruleBody(cmd, body)
			if len(body) == 0 {
				return errors.New("nothing to update: give at least one flag")
			}
			var tok tokenJSON
			raw, err := adminCall(cmd, http.MethodPatch, "/api_tokens/tokens/"+url.PathEscape(args[0]), body, &tok)
			if err != nil {
				return err
			}
			return output(cmd, raw, func(w io.Writer) error { printDetails(w, tok); return nil })
		},
	}
	cmd.Flags().String("name", "", "New name")
	cmd.Flags().String("description", "", "New description")
	cmd.Flags().String("expires-in", "", "New lifetime from now, such as 30d, or never")
	cmd.Flags().String("expires-at", "", "New expiry time in RFC 3339")
	ruleFlags(cmd)
	return cmd
}

func groupCommand() *cobra.Command {
	group := &cobra.Command{
		Use:   "group add|remove|list",
		Short: "Manages the groups that the holders option names",
	}
	member := func(use, short, method string, done func(g, u string) string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " <group> <user>",
			Short: short,
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				var out map[string]any
				raw, err := adminCall(cmd, method, "/api_tokens/groups/"+url.PathEscape(args[0])+"/members/"+url.PathEscape(args[1]), nil, &out)
				if err != nil {
					return err
				}
				return output(cmd, raw, func(w io.Writer) error {
					_, err := fmt.Fprintln(w, done(escapeText(args[0]), escapeText(args[1])))
					return err
				})
			},
		}
	}
	list := &cobra.Command{
		Use:   "list [<group>]",
		Short: "Lists groups, or the members of one",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				var groups []groupJSON
				raw, err := adminCall(cmd, http.MethodGet, "/api_tokens/groups", nil, &groups)
				if err != nil {
					return err
				}
				return output(cmd, raw, func(w io.Writer) error {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "GROUP\tMEMBERS")
					for _, g := range groups {
						fmt.Fprintf(tw, "%s\t%d\n", escapeText(g.Name), g.Members)
					}
					return tw.Flush()
				})
			}
			var members []memberJSON
			raw, err := adminCall(cmd, http.MethodGet, "/api_tokens/groups/"+url.PathEscape(args[0])+"/members", nil, &members)
			if err != nil {
				return err
			}
			return output(cmd, raw, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USER\tADDED")
				for _, m := range members {
					fmt.Fprintf(tw, "%s\t%s\n", escapeText(m.User), shortTime(&m.AddedAt, ""))
				}
				return tw.Flush()
			})
		},
	}
	group.AddCommand(
		member("add", "Adds a user to a group", http.MethodPut, func(g, u string) string { return "Added " + u + " to " + g + "." }),
		member("remove", "Removes a user from a group", http.MethodDelete, func(g, u string) string { return "Removed " + u + " from " + g + "." }),
		list,
	)
	return group
}

func listCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [--user <user>] [--state active|expired|revoked]",
		Short: "Lists tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for _, f := range []string{"user", "state"} {
				if v, _ := cmd.Flags().GetString(f); v != "" {
					q.Set(f, v)
				}
			}
			uri := "/api_tokens/tokens"
			if len(q) > 0 {
				uri += "?" + q.Encode()
			}
			var toks []tokenJSON
			raw, err := adminCall(cmd, http.MethodGet, uri, nil, &toks)
			if err != nil {
				return err
			}
			return output(cmd, raw, func(w io.Writer) error { return printTable(w, toks) })
		},
	}
	cmd.Flags().String("user", "", "Only this user's tokens")
	cmd.Flags().String("state", "", "Only tokens in this state: active, expired or revoked")
	return cmd
}

func showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show <id>",
		Short: "Shows one token (never its secret)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var tok tokenJSON
			raw, err := adminCall(cmd, http.MethodGet, "/api_tokens/tokens/"+url.PathEscape(args[0]), nil, &tok)
			if err != nil {
				return err
			}
			return output(cmd, raw, func(w io.Writer) error { printDetails(w, tok); return nil })
		},
	}
}

func revokeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke <id> | --user <user>",
		Short: "Revokes a token, or every token of a user",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, _ := cmd.Flags().GetString("user")
			if (user == "") == (len(args) == 0) {
				return errors.New("give either a token id or --user, not both")
			}
			if user != "" {
				var out revokeUserResponse
				raw, err := adminCall(cmd, http.MethodDelete, "/api_tokens/users/"+url.PathEscape(user)+"/tokens", nil, &out)
				if err != nil {
					return err
				}
				return output(cmd, raw, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "Revoked %d token(s) of %s.\n", out.Revoked, escapeText(out.User))
					return err
				})
			}
			var tok tokenJSON
			raw, err := adminCall(cmd, http.MethodDelete, "/api_tokens/tokens/"+url.PathEscape(args[0]), nil, &tok)
			if err != nil {
				return err
			}
			return output(cmd, raw, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Revoked token %s (%s of %s).\n", escapeText(tok.ID), escapeText(tok.Name), escapeText(tok.User))
				return err
			})
		},
	}
	cmd.Flags().String("user", "", "Revoke every token of this user")
	return cmd
}

func rotateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate <id>",
		Short: "Gives a token a new secret and prints it, once; the old one stops working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var tok tokenJSON
			raw, err := adminCall(cmd, http.MethodPost, "/api_tokens/tokens/"+url.PathEscape(args[0])+"/rotate", nil, &tok)
			if err != nil {
				return err
			}
			return printSecret(cmd, raw, tok, "Rotated")
		},
	}
}

// adminCall sends one request to the admin API of the running Caddy and
// decodes its JSON answer into out. It returns the raw answer for --json.
func adminCall(cmd *cobra.Command, method, uri string, body, out any) ([]byte, error) {
	addrFlag, _ := cmd.Flags().GetString("address")
	configFlag, _ := cmd.Flags().GetString("config")
	adapterFlag, _ := cmd.Flags().GetString("adapter")
	addr, err := caddycmd.DetermineAdminAPIAddress(addrFlag, nil, configFlag, adapterFlag)
	if err != nil {
		return nil, fmt.Errorf("finding the admin API address: %w", err)
	}
	var reqBody io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		reqBody = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, reqBody)
	if err != nil {
		return nil, adminError(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's answer: %w", err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("decoding the admin API's answer: %w", err)
	}
	return raw, nil
}

// adminError shortens "caddy responded with error: HTTP 400: {"error":"…"}"
// to the admin API's own message.
func adminError(err error) error {
	msg := err.Error()
	i := strings.Index(msg, "{")
	if i < 0 {
		return err
	}
	var apiErr struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(msg[i:]), &apiErr) != nil || apiErr.Error == "" {
		return err
	}
	return fmt.Errorf("%s%s", msg[:i], escapeText(apiErr.Error))
}

func auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit [--type <type>] [--outcome <outcome>] [--user <user>] [--token <id>] [--client-ip <ip>] [--since <RFC 3339>] [--until <RFC 3339>] [--limit <n>] [--cursor <cursor>]",
		Short: "Shows the audit trail, newest first",
		Long: `Shows stored audit events, newest first, one page at a time (--limit,
default 100); the last line says how to get the next page. Types include
token_created, token_revoked, auth_failed, denied and would_deny; outcomes
are success, failure, denied, passed and reported.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for flag, param := range map[string]string{
				"type": "type", "outcome": "outcome", "user": "user", "token": "token", "client-ip": "client_ip",
				"since": "since", "until": "until", "limit": "limit", "cursor": "cursor",
			} {
				if v, _ := cmd.Flags().GetString(flag); v != "" {
					q.Set(param, v)
				}
			}
			uri := "/api_tokens/audit"
			if len(q) > 0 {
				uri += "?" + q.Encode()
			}
			var page auditPageJSON
			raw, err := adminCall(cmd, http.MethodGet, uri, nil, &page)
			if err != nil {
				return err
			}
			return output(cmd, raw, func(w io.Writer) error { return printEvents(w, page) })
		},
	}
	for _, f := range []struct{ name, usage string }{
		{"type", "Only events of these types (comma-separated)"},
		{"outcome", "Only events with this outcome"},
		{"user", "Only events of this user"},
		{"token", "Only events of this token id"},
		{"client-ip", "Only events from this client IP"},
		{"since", "Only events at or after this time (RFC 3339)"},
		{"until", "Only events before this time (RFC 3339)"},
		{"limit", "Events per page (1 to 1000, default 100)"},
		{"cursor", "Continue after a previous page"},
	} {
		cmd.Flags().String(f.name, "", f.usage)
	}
	return cmd
}
