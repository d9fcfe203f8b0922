// Command caddy is Caddy with its standard modules plus caddy-apitoken:
// the same main that xcaddy generates for
// `xcaddy build --with github.com/apitoken/caddy-apitoken/caddymodule`,
// kept here so the repository runs with `go run ./cmd/caddy`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/apitoken/caddy-apitoken/caddymodule"
)

func main() {
	caddycmd.Main()
}
