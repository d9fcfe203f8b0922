// Package caddymodule is the Caddy glue of caddy-apitoken: the api_tokens
// app (app.go), the api_token HTTP handler (handler.go) and its Caddyfile
// directive and global option (caddyfile.go), the admin.api.api_tokens
// routes (admin.go) and the `caddy api-token` command (command.go). It is
// the only package of this module that imports Caddy; the decisions live in
// policy, the storage behind the Storage interface (tokenstore on SQLite by
// default) and the audit events in audit.
package caddymodule
