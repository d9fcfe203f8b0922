package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apitoken/caddy-apitoken/storage"
)

// jsonList returns a JSON array of n strings made by item.
func jsonList(n int, item func(i int) string) string {
	items := make([]string, n)
	for i := range items {
		b, _ := json.Marshal(item(i))
		items[i] = string(b)
	}
	return "[" + strings.Join(items, ",") + "]"
}

// TestAdminAbuse sends the admin API's create and PATCH calls bodies that
// are too big, too deep, of the wrong shape or carrying bad strings. Each
// must be refused with 400 (413 for size) and a message naming the
// problem, quickly, and write nothing: no token, no change, no audit event.
func TestAdminAbuse(t *testing.T) {
	fx := newAdminFixture(t, t.TempDir())
	target, _, err := fx.store.Create(context.Background(), storage.NewToken{
		User: "alice", Name: "target", ExpiresAt: fx.clock.Now().Add(24 * time.Hour),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// GOOD stands for fields that make a valid body: a user and a name to
	// create, a name to PATCH.
	const good = "GOOD"
	ips := func(n int) string {
		return jsonList(n, func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) })
	}
	paths := func(n int) string { return jsonList(n, func(i int) string { return fmt.Sprintf("/p%d/*", i) }) }

	tests := []struct {
		name   string
		body   string
		create bool // also send it to create, with the good fields
		patch  bool // also send it to PATCH
		status int
		msg    string // the error message contains this
	}{
		// Size and depth.
		{"oversize body", `{` + good + `,"description":"` + strings.Repeat("x", maxBodyBytes) + `"}`, true, true, 413, "larger than 65536 bytes"},
		{"oversize whitespace", `{` + good + `}` + strings.Repeat(" ", maxBodyBytes), true, true, 413, "larger than 65536 bytes"},
		{"100000 nested arrays", strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000), true, true, 413, "larger than 65536 bytes"},
		{"30000 nested arrays", strings.Repeat("[", 30_000) + strings.Repeat("]", 30_000), true, true, 400, "must be a JSON object, got an array"},
		{"nested in a field", `{` + good + `,"methods":` + strings.Repeat("[", 50) + strings.Repeat("]", 50) + `}`, true, true, 400, `field "methods" (at "/methods/0"): expected string, got JSON array`},
		{"nested objects", `{` + good + `,"description":` + strings.Repeat(`{"a":`, 10_000) + `1` + strings.Repeat("}", 10_000) + `}`, true, true, 400, `/a/a"): exceeded max depth (at byte`},

		// Huge lists: the store's limits, named.
		{"10000 allowed_ips", `{` + good + `,"allowed_ips":` + ips(10_000) + `}`, true, true, 413, "larger than 65536 bytes"},
		{"101 allowed_ips", `{` + good + `,"allowed_ips":` + ips(101) + `}`, true, true, 400, "allowed_ips: 101 entries, more than 100"},
		{"51 methods", `{` + good + `,"methods":` + jsonList(51, func(int) string { return "GET" }) + `}`, true, true, 400, "methods has 51 entries, more than 50"},
		{"2000 methods", `{` + good + `,"methods":` + jsonList(2000, func(int) string { return "GET" }) + `}`, true, true, 400, "methods has 2000 entries, more than 50"},
		{"10000 paths", `{` + good + `,"paths":` + paths(10_000) + `}`, true, true, 413, "larger than 65536 bytes"},
		{"10000 methods, under 64 KiB", `{` + good + `,"methods":` + jsonList(10_000, func(int) string { return "GET" }) + `}`, true, true, 400, "methods has 10000 entries, more than 50"},
		{"5000 hosts, under 64 KiB", `{` + good + `,"hosts":` + jsonList(5000, func(int) string { return "h" }) + `}`, true, true, 400, "hosts has 5000 entries, more than 50"},
		{"1000 paths", `{` + good + `,"paths":` + paths(1000) + `}`, true, true, 400, "paths has 1000 entries, more than 50"},
		{"1000 hosts", `{` + good + `,"hosts":` + jsonList(1000, func(i int) string { return fmt.Sprintf("h%d.example", i) }) + `}`, true, true, 400, "hosts has 1000 entries, more than 50"},
		{"long path pattern", `{` + good + `,"paths":["/` + strings.Repeat("a", 2000) + `"]}`, true, true, 400, "more than 1024"},

		// Shape.
		{"unknown field", `{` + good + `,"admin":true}`, true, true, 400, `unknown field "admin"`},
		{"unknown field, case", `{` + good + `,"Allowed_IPs":["10.0.0.0/8"]}`, true, true, 400, `unknown field "Allowed_IPs"`},
		{"number for a string", `{"user":42,"name":"ci"}`, true, false, 400, `field "user": expected string, got JSON number`},
		{"number for name", `{"name":42}`, false, true, 400, `field "name": expected string, got JSON number`},
		{"string for a bool", `{` + good + `,"read_only":"true"}`, true, true, 400, `field "read_only": expected bool, got JSON string`},
		{"string for a list", `{` + good + `,"allowed_ips":"10.0.0.0/8"}`, true, true, 400, `field "allowed_ips": expected []string, got JSON string`},
		{"object for a list item", `{` + good + `,"methods":[{"m":"GET"}]}`, true, true, 400, `field "methods"`},
		{"null user", `{"user":null,"name":"ci"}`, true, false, 400, `field "user": null is not allowed`},
		{"null name", `{"name":null}`, false, true, 400, `field "name": null is not allowed`},
		{"null rule", `{` + good + `,"allowed_ips":null}`, true, true, 400, `field "allowed_ips": null is not allowed`},
		{"null in a list", `{` + good + `,"methods":["GET",null]}`, true, true, 400, `field "methods" (at "/methods/1"): null is not allowed`},
		{"array instead of object", `[{` + good + `}]`, true, true, 400, "must be a JSON object, got an array"},
		{"string instead of object", `"user"`, true, true, 400, "must be a JSON object, got a string"},
		{"number instead of object", `42`, true, true, 400, "must be a JSON object, got a number"},
		{"null body", `null`, true, true, 400, "must be a JSON object, got null"},
		{"empty body", ``, true, true, 400, "request body is empty"},
		{"trailing garbage", `{` + good + `}x`, true, true, 400, "invalid character 'x' after top-level value"},
		{"second object", `{` + good + `}{"user":"eve"}`, true, true, 400, "invalid character '{' after top-level value"},
		{"cut short", `{` + good, true, true, 400, "unexpected end"},
		{"duplicate key", `{"user":"bob","user":"eve","name":"ci"}`, true, false, 400, `duplicate key "user"`},
		{"duplicate key in PATCH", `{"name":"a","name":"b"}`, false, true, 400, `duplicate key "name"`},
		{"duplicate key, other case", `{"user":"bob","User":"eve","name":"ci"}`, true, false, 400, `unknown field "User"`},
		{"duplicate key, folded", `{"user":"bob","uſer":"eve","name":"ci"}`, true, false, 400, `unknown field "uſer"`},
		{"long unknown key", `{` + good + `,"` + strings.Repeat("k", 60_000) + `":1}`, true, true, 400, `unknown field "kkkk`},
		{"long host", `{` + good + `,"hosts":["` + strings.Repeat("h", 60_000) + `"]}`, true, true, 400, `host`},
		{"long rate", `{` + good + `,"rate_limit":"` + strings.Repeat("9", 60_000) + `/s"}`, true, true, 400, `rate_limit`},
		{"long expiry", `{` + good + `,"expires_in":"` + strings.Repeat("9", 60_000) + `d"}`, true, true, 400, `expires_in`},
		{"long bad CIDR", `{` + good + `,"allowed_ips":["` + strings.Repeat("1", 60_000) + `"]}`, true, true, 400, `allowed_ips`},
		{"UTF-8 BOM", "\xef\xbb\xbf{" + good + "}", true, true, 400, "byte order mark"},

		// Strings.
		{"NUL in user", `{"user":"bo\u0000b","name":"ci"}`, true, false, 400, "control characters"},
		{"newline in user", `{"user":"bob\nadmin","name":"ci"}`, true, false, 400, "control characters"},
		{"NUL in name", `{"user":"bob","name":"c\u0000i"}`, true, false, 400, "control characters"},
		{"NUL in name, PATCH", `{"name":"c\u0000i"}`, false, true, 400, "control characters"},
		{"escape in description", `{` + good + `,"description":"\u001b[2J"}`, true, true, 400, "description"},
		{"NUL in description", `{` + good + `,"description":"a\u0000b"}`, true, true, 400, "description"},
		{"colon in user", `{"user":"bob:x","name":"ci"}`, true, false, 400, "':'"},
		{"long user", `{"user":"` + strings.Repeat("u", 300) + `","name":"ci"}`, true, false, 400, "user is 300 bytes long, more than 256"},
		{"very long user", `{"user":"` + strings.Repeat("u", 60_000) + `","name":"ci"}`, true, false, 400, "user is 60000 bytes long, more than 256"},
		{"long name", `{"name":"` + strings.Repeat("n", 129) + `"}`, false, true, 400, "name is 129 bytes long, more than 128"},
		{"long description", `{` + good + `,"description":"` + strings.Repeat("d", 1025) + `"}`, true, true, 400, "description is 1025 bytes long, more than 1024"},
		{"invalid UTF-8 in user", "{\"user\":\"b\xffb\",\"name\":\"ci\"}", true, false, 400, `field "user": invalid UTF-8 (at byte 10)`},
		{"invalid UTF-8 in description", "{" + good + ",\"description\":\"\xc0\xae\"}", true, true, 400, `field "description": invalid UTF-8 (at byte`},
		{"lone surrogate escape", `{"user":"b\ud800b","name":"ci"}`, true, false, 400, "field \"user\": invalid surrogate pair `\\ud800"},
		{"lone low surrogate", `{` + good + `,"description":"\uDC00"}`, true, true, 400, "field \"description\": invalid surrogate pair `\\uDC00"},
		{"raw control in string", "{" + good + ",\"description\":\"a\x01b\"}", true, true, 400, "malformed JSON"},
	}
	for _, tt := range tests {
		for _, call := range []string{"create", "patch"} {
			if (call == "create" && !tt.create) || (call == "patch" && !tt.patch) {
				continue
			}
			t.Run(call+"/"+tt.name, func(t *testing.T) {
				body := strings.ReplaceAll(tt.body, good, `"user":"bob","name":"ci"`)
				if call == "patch" {
					body = strings.ReplaceAll(tt.body, good, `"name":"ci"`)
				}
				before := fx.state(t)
				start := time.Now()
				var res adminResult
				if call == "create" {
					res = fx.create([]byte(body))
				} else {
					res = fx.update(target.ID, []byte(body))
				}
				if took := time.Since(start); took > time.Second {
					t.Errorf("took %v", took)
				}
				after := fx.state(t)
				if res.status != tt.status || !strings.Contains(res.err, tt.msg) {
					t.Errorf("answered %d %q, want %d with %q", res.status, res.err, tt.status, tt.msg)
				}
				t.Logf("%d %s", res.status, res.err)
				if len(res.err) > 512 {
					t.Errorf("the error message is %d bytes long: it should name the problem, not echo the body", len(res.err))
				}
				checkAnswer(t, []byte(body), res, 0, before, after)
			})
		}
	}

	// The same bodies, fixed, are accepted: the refusals above are for
	// what they say, not for something else in the body.
	t.Run("controls", func(t *testing.T) {
		for _, body := range []string{
			`{"user":"carol","name":"ok","description":"line one\nline two\ttabbed","allowed_ips":` + ips(100) + `,"methods":` +
				jsonList(50, func(int) string { return "GET" }) + `}`,
			`{"user":"dave","name":"` + strings.Repeat("n", 128) + `","description":"` + strings.Repeat("d", 1024) + `"}`,
			`{"user":"` + strings.Repeat("u", 256) + `","name":"ci"}`,
			" \n\t{\"user\":\"zoë\",\"name\":\"laptop 💻\"}\n ",
			`{"user":"emoji","name":"\ud83d\udcbb pair","description":"quote \" and \\ and \\ud800 as text"}`,
		} {
			if res := fx.create([]byte(body)); res.status != http.StatusCreated {
				t.Errorf("create %.80q: %d %s", body, res.status, res.err)
			}
		}
		if res := fx.update(target.ID, []byte(`{"description":"ok\nok"}`)); res.status != http.StatusOK {
			t.Errorf("PATCH: %d %s", res.status, res.err)
		}
	})
}

// TestAdminAbuseServer sends a few of TestAdminAbuse's bodies through a
// real Caddy admin endpoint, to check that what the in-process test
// expects of Caddy's admin server (status, {"error": …}) is what it does.
func TestAdminAbuseServer(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))
	tok := createToken(t, tester, `{"user":"alice","name":"target"}`)
	before := listTokens(t, tester, "")

	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"oversize", http.MethodPost, "/api_tokens/tokens", `{"user":"bob","name":"ci","description":"` + strings.Repeat("x", maxBodyBytes) + `"}`, 413, "larger than 65536 bytes"},
		{"deep", http.MethodPost, "/api_tokens/tokens", strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000), 413, "larger than 65536 bytes"},
		{"duplicate key", http.MethodPost, "/api_tokens/tokens", `{"user":"bob","user":"eve","name":"ci"}`, 400, `duplicate key "user"`},
		{"BOM", http.MethodPost, "/api_tokens/tokens", "\xef\xbb\xbf{\"user\":\"bob\",\"name\":\"ci\"}", 400, "byte order mark"},
		{"invalid UTF-8", http.MethodPost, "/api_tokens/tokens", "{\"user\":\"b\xffb\",\"name\":\"ci\"}", 400, "invalid UTF-8"},
		{"trailing data", http.MethodPost, "/api_tokens/tokens", `{"user":"bob","name":"ci"} x`, 400, "after top-level value"},
		{"101 allowed_ips", http.MethodPost, "/api_tokens/tokens", `{"user":"bob","name":"ci","allowed_ips":` +
			jsonList(101, func(i int) string { return fmt.Sprintf("10.0.%d.%d", i>>8, i&255) }) + `}`, 400, "more than 100"},
		{"null in PATCH", http.MethodPatch, "/api_tokens/tokens/" + tok.ID, `{"allowed_ips":null}`, 400, `field "allowed_ips": null is not allowed`},
		{"unknown field in PATCH", http.MethodPatch, "/api_tokens/tokens/" + tok.ID, `{"user":"mallory"}`, 400, `unknown field "user"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, out := do(t, tester, tt.method, adminURL+tt.path, tt.body)
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(out), &e); err != nil || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("answer %q (%s) is not Caddy's JSON error: %v", out, hdr.Get("Content-Type"), err)
			}
			if status != tt.status || !strings.Contains(e.Error, tt.msg) {
				t.Errorf("answered %d %q, want %d with %q", status, e.Error, tt.status, tt.msg)
			}
		})
	}
	if after := listTokens(t, tester, ""); !reflect.DeepEqual(after, before) {
		t.Errorf("refused calls changed the tokens:\nbefore %+v\nafter  %+v", before, after)
	}
}
