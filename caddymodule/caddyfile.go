package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("api_token", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("api_token", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterGlobalOption("api_tokens", parseGlobalOption)
}

// parseCaddyfile sets up the api_token handler from Caddyfile tokens.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Handler
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	api_token [<matcher>] {
//	    realm             <name>
//	    passwords         block|pass
//	    header            <name>
//	    query             <param>
//	    strip_credentials
//	}
//
// Every subdirective is optional and may appear once.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.Errf("api_token takes no arguments, got %q (options go in a block)", d.Val())
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("duplicate subdirective %q", opt)
		}
		seen[opt] = true
		switch opt {
		case "realm":
			if !d.AllArgs(&h.Realm) {
				return d.ArgErr()
			}
		case "passwords":
			var mode string
			if !d.AllArgs(&mode) {
				return d.ArgErr()
			}
			switch PasswordMode(mode) {
			case PasswordsBlock, PasswordsPass:
				h.Passwords = PasswordMode(mode)
			default:
				return d.Errf("passwords %q: must be %q or %q", mode, PasswordsBlock, PasswordsPass)
			}
		case "header":
			if !d.AllArgs(&h.Header) {
				return d.ArgErr()
			}
		case "query":
			if !d.AllArgs(&h.Query) {
				return d.ArgErr()
			}
		case "strip_credentials":
			if d.NextArg() {
				return d.Errf("strip_credentials takes no arguments, got %q", d.Val())
			}
			h.StripCredentials = true
		default:
			return d.Errf("unrecognized subdirective %q", opt)
		}
	}
	return nil
}

// parseGlobalOption sets up the api_tokens app from the global option of
// the same name.
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{
		Name:  "api_tokens",
		Value: caddyconfig.JSON(app, nil),
	}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Syntax:
//
//	{
//	    api_tokens {
//	        database         <path>
//	        default_validity <duration>
//	        max_validity     <duration>|unlimited
//	        token_prefix     <prefix>
//	    }
//	}
//
// Durations take Caddy's units, including d for days (90d).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.Errf("api_tokens takes no arguments, got %q (options go in a block)", d.Val())
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("duplicate option %q", opt)
		}
		seen[opt] = true
		var val string
		if !d.AllArgs(&val) {
			return d.ArgErr()
		}
		switch opt {
		case "database":
			a.Database = val
		case "default_validity":
			dur, err := parsePositiveDuration(d, opt, val)
			if err != nil {
				return err
			}
			a.DefaultValidity = dur
		case "max_validity":
			if val == "unlimited" {
				a.MaxValidity = -1
				continue
			}
			dur, err := parsePositiveDuration(d, opt, val)
			if err != nil {
				return err
			}
			a.MaxValidity = dur
		case "token_prefix":
			a.TokenPrefix = val
		default:
			return d.Errf("unrecognized api_tokens option %q", opt)
		}
	}
	return nil
}

// parsePositiveDuration parses a Caddyfile duration that must be above zero.
func parsePositiveDuration(d *caddyfile.Dispenser, opt, val string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(val)
	if err != nil {
		return 0, d.Errf("%s %q: %v", opt, val, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s %q: must be positive", opt, val)
	}
	return caddy.Duration(dur), nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*App)(nil)
)
