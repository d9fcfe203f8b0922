package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/apitoken/caddy-apitoken/audit"
	"github.com/apitoken/caddy-apitoken/policy"
)

func init() {
	httpcaddyfile.RegisterDirective("api_token", parseDirective)
	httpcaddyfile.RegisterDirectiveOrder("api_token", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterGlobalOption("api_tokens", parseGlobalOption)
}

// parseDirective is what httpcaddyfile.RegisterHandlerDirective would
// register for parseCaddyfile, plus a check that needs the directive's
// matcher, which RegisterHandlerDirective keeps to itself: an identity
// header goes only with a handler that sees every request. Behind a
// matcher the handler never runs where the matcher does not match, so a
// client's own X-Remote-User would reach the backend there, and Caddy's
// path matcher misses paths that Tomcat resolves into the matched ones
// (/x/..;/rest/…). protect judges those as the backend does.
func parseDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	var matcher string // the matcher token as written, for the error
	if h.NextArg() {
		matcher = h.Val()
		h.Prev()
	}
	matcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	handler, err := parseCaddyfile(h)
	if err != nil {
		return nil, err
	}
	if opt := handler.identityOption(); opt != "" && matcherSet != nil {
		h.Reset()
		h.Next() // point the error at the directive
		instead := "drop the matcher and use `protect <pattern...>` instead"
		if strings.HasPrefix(matcher, "/") {
			instead = "use `protect " + matcher + "` instead"
		}
		return nil, h.Errf("%s cannot be used with a matcher (%s): the header would pass unchecked where the matcher does not match; %s", opt, matcher, instead)
	}
	return h.NewRoute(matcherSet, handler), nil
}

// parseCaddyfile sets up the api_token handler from Caddyfile tokens.
func parseCaddyfile(h httpcaddyfile.Helper) (*Handler, error) {
	var m Handler
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// identityOption names the option that makes the handler send the user to
// the backend in a header, or is "" if none does.
func (h *Handler) identityOption() string {
	if h.UserHeader != "" {
		return "user_header"
	}
	return ""
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	api_token [<matcher>] {
//	    realm             <name>
//	    passwords         block|pass|pass_from <cidr...>
//	    header            <name>
//	    query             <param>
//	    strip_credentials
//	    user_header       <name> [raw|percent|rfc8187]
//	    protect           <pattern...>
//	    allow_ips         <cidr...>
//	    block_paths       off
//	    block_paths {
//	        allow  <rule...>
//	        deny   <pattern...>
//	        exempt <pattern...>
//	    }
//	    throttle          off|<max_failures> <window> <cooldown>
//	    rate_limit        <requests>/<duration>
//	    read_posts        default|off|<pattern...>
//	    report_only
//	}
//
// Every subdirective is optional and may appear once. CIDR lists take
// CIDRs, IPs and private_ranges; patterns are in Caddy's path-matcher
// syntax; read_posts takes patterns, default for the built-in list among
// them, or off alone. user_header is refused with a matcher (see
// parseDirective): use protect.
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
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch mode := d.Val(); mode {
			case string(PasswordsBlock), string(PasswordsPass):
				h.Passwords = PasswordMode(mode)
				if d.NextArg() {
					return d.Errf("passwords %s takes no further arguments, got %q", mode, d.Val())
				}
			case "pass_from":
				h.Passwords = PasswordsPass
				h.PasswordsFrom = d.RemainingArgs()
				if len(h.PasswordsFrom) == 0 {
					return d.Errf("passwords pass_from needs at least one CIDR")
				}
				if _, err := policy.ParsePrefixes(h.PasswordsFrom); err != nil {
					return d.Errf("passwords pass_from: %v", err)
				}
			default:
				return d.Errf("passwords %q: must be %q, %q or pass_from <cidr...>", mode, PasswordsBlock, PasswordsPass)
			}
		case "user_header":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return d.ArgErr()
			}
			h.UserHeader = args[0]
			if len(args) == 2 {
				h.UserHeaderEncoding = UserEncoding(args[1])
				if h.UserHeaderEncoding == "" || !h.UserHeaderEncoding.valid() {
					return d.Errf("user_header encoding %q: must be %q, %q or %q", args[1], UserEncodingRaw, UserEncodingPercent, UserEncodingRFC8187)
				}
			}
		case "protect":
			h.Protect = d.RemainingArgs()
			if len(h.Protect) == 0 {
				return d.Errf("protect needs at least one path pattern")
			}
			if _, err := policy.CompilePathSet("protect", h.Protect); err != nil {
				return d.Errf("%v", err)
			}
		case "allow_ips":
			h.AllowIPs = d.RemainingArgs()
			if len(h.AllowIPs) == 0 {
				return d.Errf("allow_ips needs at least one CIDR")
			}
			if _, err := policy.ParsePrefixes(h.AllowIPs); err != nil {
				return d.Errf("allow_ips: %v", err)
			}
		case "block_paths":
			cfg, err := parseBlockPaths(d)
			if err != nil {
				return err
			}
			h.BlockPaths = cfg
		case "throttle":
			cfg, err := parseThrottle(d)
			if err != nil {
				return err
			}
			h.Throttle = cfg
		case "rate_limit":
			if !d.AllArgs(&h.RateLimit) {
				return d.ArgErr()
			}
			if _, err := policy.ParseRate(h.RateLimit); err != nil {
				return d.Errf("rate_limit: %v", err)
			}
		case "read_posts":
			h.ReadPosts = d.RemainingArgs()
			if len(h.ReadPosts) == 0 {
				return d.Errf("read_posts needs at least one path pattern, default or off")
			}
			if _, err := policy.CompileReads(h.ReadPosts); err != nil {
				return d.Errf("%v", err)
			}
		case "report_only":
			if d.NextArg() {
				return d.Errf("report_only takes no arguments, got %q", d.Val())
			}
			h.ReportOnly = true
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

// parseBlockPaths parses `block_paths off` or a block_paths block.
func parseBlockPaths(d *caddyfile.Dispenser) (*PathsConfig, error) {
	cfg := new(PathsConfig)
	if d.NextArg() {
		if d.Val() != "off" {
			return nil, d.Errf("block_paths %q: the only argument is off (options go in a block)", d.Val())
		}
		if d.NextArg() {
			return nil, d.Errf("block_paths off takes no further arguments, got %q", d.Val())
		}
		cfg.Off = true
		return cfg, nil
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("block_paths: duplicate option %q", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if len(args) == 0 {
			return nil, d.Errf("block_paths %s needs at least one value", opt)
		}
		switch opt {
		case "allow":
			cfg.Allow = args
		case "deny":
			cfg.Deny = args
		case "exempt":
			cfg.Exempt = args
		default:
			return nil, d.Errf("unrecognized block_paths option %q", opt)
		}
	}
	pc := policy.PathConfig{Deny: cfg.Deny, Exempt: cfg.Exempt}
	for _, r := range cfg.Allow {
		pc.Disable = append(pc.Disable, policy.PathRule(r))
	}
	if _, err := policy.CompilePathRules(pc); err != nil {
		return nil, d.Errf("block_paths: %v", err)
	}
	return cfg, nil
}

// parseThrottle parses `throttle off` or `throttle <max_failures> <window> <cooldown>`.
func parseThrottle(d *caddyfile.Dispenser) (*ThrottleConfig, error) {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		return &ThrottleConfig{Off: true}, nil
	}
	if len(args) != 3 {
		return nil, d.Errf("throttle takes off, or <max_failures> <window> <cooldown> such as 10 1m 5m")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return nil, d.Errf("throttle max_failures %q: must be a positive whole number", args[0])
	}
	window, err := parsePositiveDuration(d, "throttle window", args[1])
	if err != nil {
		return nil, err
	}
	cooldown, err := parsePositiveDuration(d, "throttle cooldown", args[2])
	if err != nil {
		return nil, err
	}
	return &ThrottleConfig{MaxFailures: n, Window: window, Cooldown: cooldown}, nil
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
//	        storage          <module> {
//	            <module options>
//	        }
//	        default_validity <duration>
//	        max_validity     <duration>|unlimited
//	        token_prefix     <prefix>
//	        stale_after      <duration>|off
//	        holders          <user|group:name...>
//	        group <name> {
//	            default_validity <duration>
//	            max_validity     <duration>|unlimited
//	        }
//	        audit {
//	            events         <admin|failure|denied|success...>
//	            sample_success <fraction>
//	            retain         <duration>
//	            max_events     <count>
//	            expiry_warning <duration>
//	            detail_limit   off|<events> <window>
//	        }
//	    }
//	}
//
// database is the shorthand for `storage sqlite { database <path> }`: only
// one of the two may be given. Durations take Caddy's units, including d
// for days (90d).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.Errf("api_tokens takes no arguments, got %q (options go in a block)", d.Val())
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] && opt != "group" { // several groups; unmarshalGroup refuses duplicate names
			return d.Errf("duplicate option %q", opt)
		}
		seen[opt] = true
		switch opt {
		case "holders":
			a.Holders = d.RemainingArgs()
			if len(a.Holders) == 0 {
				return d.Errf("holders needs at least one user or group:<name>")
			}
			if _, err := policy.ParseHolders(a.Holders); err != nil {
				return d.Errf("%v", err)
			}
			continue
		case "group":
			if err := a.unmarshalGroup(d); err != nil {
				return err
			}
			continue
		case "audit":
			cfg, err := parseAudit(d)
			if err != nil {
				return err
			}
			a.Audit = cfg
			continue
		case "storage":
			if !d.NextArg() {
				return d.Errf("storage needs a module name, e.g. sqlite")
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "api_tokens.storage."+name)
			if err != nil {
				return err
			}
			a.StorageRaw = caddyconfig.JSONModuleObject(unm, "module", name, nil)
			continue
		}
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
			dur, err := parseMaxValidity(d, opt, val)
			if err != nil {
				return err
			}
			a.MaxValidity = dur
		case "token_prefix":
			a.TokenPrefix = val
		case "stale_after":
			if val == "off" {
				a.StaleAfter = -1
				break
			}
			dur, err := parsePositiveDuration(d, opt, val)
			if err != nil {
				return err
			}
			if dur < caddy.Duration(MinStaleAfter) {
				return d.Errf("%s %q: must be at least %s (the store reads changes every second)", opt, val, MinStaleAfter)
			}
			a.StaleAfter = dur
		default:
			return d.Errf("unrecognized api_tokens option %q", opt)
		}
	}
	if a.Database != "" && a.StorageRaw != nil {
		return d.Errf("database %q and storage are both set: database is the shorthand for `storage sqlite { database <path> }`, use one", a.Database)
	}
	return nil
}

// unmarshalGroup parses a `group <name> { … }` block of the app.
func (a *App) unmarshalGroup(d *caddyfile.Dispenser) error {
	var name string
	if !d.Args(&name) {
		return d.ArgErr()
	}
	if err := policy.ValidGroupName(name); err != nil {
		return d.Errf("group: %v", err)
	}
	if d.NextArg() {
		return d.Errf("group %s takes a block, got %q", name, d.Val())
	}
	if _, dup := a.Groups[name]; dup {
		return d.Errf("duplicate group %q", name)
	}
	g := new(GroupRules)
	groupSeen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if groupSeen[opt] {
			return d.Errf("group %s: duplicate option %q", name, opt)
		}
		groupSeen[opt] = true
		var val string
		if !d.AllArgs(&val) {
			return d.ArgErr()
		}
		switch opt {
		case "default_validity":
			dur, err := parsePositiveDuration(d, opt, val)
			if err != nil {
				return err
			}
			g.DefaultValidity = dur
		case "max_validity":
			dur, err := parseMaxValidity(d, opt, val)
			if err != nil {
				return err
			}
			g.MaxValidity = dur
		default:
			return d.Errf("group %s: unrecognized option %q", name, opt)
		}
	}
	if len(groupSeen) == 0 {
		return d.Errf("group %s: needs default_validity or max_validity", name)
	}
	if a.Groups == nil {
		a.Groups = make(map[string]*GroupRules)
	}
	a.Groups[name] = g
	return nil
}

// parseAudit parses the audit block of the api_tokens option.
func parseAudit(d *caddyfile.Dispenser) (*AuditConfig, error) {
	if d.NextArg() {
		return nil, d.Errf("audit takes a block, got %q", d.Val())
	}
	cfg := new(AuditConfig)
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("audit: duplicate option %q", opt)
		}
		seen[opt] = true
		if opt == "events" {
			cfg.Events = d.RemainingArgs()
			if len(cfg.Events) == 0 {
				return nil, d.Errf("audit events needs at least one class: admin, failure, denied, success")
			}
			continue
		}
		if opt == "detail_limit" {
			limit, err := parseDetailLimit(d)
			if err != nil {
				return nil, err
			}
			cfg.DetailLimit = limit
			continue
		}
		var val string
		if !d.AllArgs(&val) {
			return nil, d.ArgErr()
		}
		switch opt {
		case "sample_success":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || f <= 0 || f > 1 {
				return nil, d.Errf("audit sample_success %q: must be a fraction in (0, 1]", val)
			}
			cfg.SampleSuccess = f
		case "retain":
			dur, err := parsePositiveDuration(d, "audit retain", val)
			if err != nil {
				return nil, err
			}
			cfg.Retain = dur
		case "max_events":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return nil, d.Errf("audit max_events %q: must be a positive whole number", val)
			}
			cfg.MaxEvents = n
		case "expiry_warning":
			dur, err := parsePositiveDuration(d, "audit expiry_warning", val)
			if err != nil {
				return nil, err
			}
			cfg.ExpiryWarning = dur
		default:
			return nil, d.Errf("audit: unrecognized option %q", opt)
		}
	}
	if _, err := audit.ParseSelection(cfg.Events, cfg.SampleSuccess); err != nil {
		return nil, d.Errf("audit: %v", err)
	}
	return cfg, nil
}

// parseDetailLimit parses `detail_limit off|<events> <window>` of the
// audit block.
func parseDetailLimit(d *caddyfile.Dispenser) (*DetailLimitConfig, error) {
	args := d.RemainingArgs()
	if len(args) > 0 && args[0] == "off" {
		if len(args) > 1 {
			return nil, d.Errf("audit detail_limit off takes no further arguments, got %q", args[1])
		}
		return &DetailLimitConfig{Off: true}, nil
	}
	if len(args) != 2 {
		return nil, d.Errf("audit detail_limit takes off, or <events> <window> such as 100 10s; got %d arguments", len(args))
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return nil, d.Errf("audit detail_limit events %q: must be a positive whole number", args[0])
	}
	window, err := parsePositiveDuration(d, "audit detail_limit window", args[1])
	if err != nil {
		return nil, err
	}
	c := &DetailLimitConfig{Events: n, Window: window}
	if _, err := c.limit(); err != nil {
		return nil, d.Errf("audit %v", err)
	}
	return c, nil
}

// parseMaxValidity parses a duration or `unlimited` (stored as -1).
func parseMaxValidity(d *caddyfile.Dispenser, opt, val string) (caddy.Duration, error) {
	if val == "unlimited" {
		return -1, nil
	}
	return parsePositiveDuration(d, opt, val)
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
