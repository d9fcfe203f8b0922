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
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "api-token",
		Usage: "create|list|show|revoke|rotate [--address <listen>] [--config <path> [--adapter <name>]] [--json]",
		Short: "Manages API tokens of the api_token gate",
		Long: `
Creates, lists, shows, revokes and rotates the API tokens that the api_token
handler accepts, through the admin API of a running Caddy (routes under
/api_tokens/). The secret of a token is printed once, by create and rotate;
it cannot be shown again.

This command connects to Caddy's admin API at '` + caddy.DefaultAdminListen + `'.
Give --address, or --config (and --adapter) to read the admin address from
your config, if it is elsewhere. Output is meant for people; --json prints
what the admin API answered, for scripts.

Examples:
  caddy api-token create --user alice --name jira-sync --expires-in 30d
  caddy api-token list --user alice --state active
  caddy api-token show <id>
  caddy api-token rotate <id>
  caddy api-token revoke <id>
  caddy api-token revoke --user alice`,
		CobraFunc: configureCommand,
	})
}

// configureCommand adds the flags and subcommands of `caddy api-token`.
func configureCommand(cmd *cobra.Command) {
	cmd.PersistentFlags().String("address", "", "Address of the administration API listener (if --config is not used)")
	cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (if --address is not used)")
	cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	cmd.PersistentFlags().Bool("json", false, "Print the admin API's JSON answer instead of text")
	cmd.AddCommand(createCommand(), listCommand(), showCommand(), revokeCommand(), rotateCommand())
}

func createCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create --user <user> --name <name> [--expires-in <duration>|never | --expires-at <RFC 3339>] [--description <text>]",
		Short: "Creates a token and prints its secret, once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]string{}
			for _, f := range []string{"user", "name", "description", "expires-in", "expires-at"} {
				if cmd.Flags().Changed(f) {
					v, _ := cmd.Flags().GetString(f)
					body[strings.ReplaceAll(f, "-", "_")] = v
				}
			}
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
	_ = cmd.MarkFlagRequired("user")
	_ = cmd.MarkFlagRequired("name")
	return cmd
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
			if jsonOutput(cmd) {
				_, err := cmd.OutOrStdout().Write(raw)
				return err
			}
			return printTable(cmd.OutOrStdout(), toks)
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
			if jsonOutput(cmd) {
				_, err := cmd.OutOrStdout().Write(raw)
				return err
			}
			printDetails(cmd.OutOrStdout(), tok)
			return nil
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
				if jsonOutput(cmd) {
					_, err := cmd.OutOrStdout().Write(raw)
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "Revoked %d token(s) of %s.\n", out.Revoked, out.User)
				return err
			}
			var tok tokenJSON
			raw, err := adminCall(cmd, http.MethodDelete, "/api_tokens/tokens/"+url.PathEscape(args[0]), nil, &tok)
			if err != nil {
				return err
			}
			if jsonOutput(cmd) {
				_, err := cmd.OutOrStdout().Write(raw)
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Revoked token %s (%s of %s).\n", tok.ID, tok.Name, tok.User)
			return err
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
	return fmt.Errorf("%s%s", msg[:i], apiErr.Error)
}

func jsonOutput(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

// printSecret prints a newly created or rotated token with its secret.
func printSecret(cmd *cobra.Command, raw []byte, tok tokenJSON, verb string) error {
	w := cmd.OutOrStdout()
	if jsonOutput(cmd) {
		_, err := w.Write(raw)
		return err
	}
	fmt.Fprintf(w, "%s token %s (%s of %s), %s.\n\n", verb, tok.ID, tok.Name, tok.User, expiresText(tok.ExpiresAt))
	fmt.Fprintf(w, "    %s\n\n", tok.Token)
	_, err := fmt.Fprintln(w, "Copy it now: it is shown only this once. Use it in place of the password: curl -u "+tok.User+":<token> …")
	return err
}

// printTable prints tokens as a table.
func printTable(w io.Writer, toks []tokenJSON) error {
	if len(toks) == 0 {
		_, err := fmt.Fprintln(w, "No tokens.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tNAME\tSTATE\tEXPIRES\tHINT")
	for _, t := range toks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.User, t.Name, t.State, shortTime(t.ExpiresAt, "never"), t.Hint)
	}
	return tw.Flush()
}

// printDetails prints one token, a field per line.
func printDetails(w io.Writer, t tokenJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\n", t.ID)
	fmt.Fprintf(tw, "User:\t%s\n", t.User)
	fmt.Fprintf(tw, "Name:\t%s\n", t.Name)
	if t.Description != "" {
		fmt.Fprintf(tw, "Description:\t%s\n", t.Description)
	}
	fmt.Fprintf(tw, "State:\t%s\n", t.State)
	fmt.Fprintf(tw, "Hint:\t%s\n", t.Hint)
	fmt.Fprintf(tw, "Created:\t%s\n", shortTime(&t.CreatedAt, ""))
	fmt.Fprintf(tw, "Expires:\t%s\n", shortTime(t.ExpiresAt, "never"))
	if t.RotatedAt != nil {
		fmt.Fprintf(tw, "Rotated:\t%s\n", shortTime(t.RotatedAt, ""))
	}
	if t.RevokedAt != nil {
		fmt.Fprintf(tw, "Revoked:\t%s\n", shortTime(t.RevokedAt, ""))
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
