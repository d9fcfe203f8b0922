//go:build linux

package caddymodule

// Fault tests: a crash right after a write was acknowledged, reloads under
// load, concurrent admin writes and authentication, a full or unwritable
// disk, and a write lock held by another process.
//
// The crash and reload tests run Caddy as a real child process: this test
// binary re-executed as Caddy (see TestMain), on ports of its own (admin
// localhost:2899, site 127.0.0.1:8899) so that it never meets caddytest's
// in-process Caddy (localhost:2999, 9080), with HOME and the XDG
// directories in a temp dir so that it never touches the user's Caddy
// data. The other tests use caddytest's in-process Caddy.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/apitoken/caddy-apitoken/internal/faulttest"
	"github.com/apitoken/caddy-apitoken/storage"
	"github.com/apitoken/caddy-apitoken/token"
	"github.com/apitoken/caddy-apitoken/tokenstore"
)

const (
	childAdmin    = "localhost:2899"
	childAdminURL = "http://" + childAdmin
	childSite     = "127.0.0.1:8899"
	childSiteURL  = "http://" + childSite
)

// childConfig is the child Caddy's Caddyfile: the gate in front of /rest/*
// with the given realm, which tells one config from another.
func childConfig(db, realm string) string {
	return fmt.Sprintf(`{
	admin %s
	skip_install_trust
	auto_https off
	persist_config off
	api_tokens {
		database %s
	}
}
%s {
	bind 127.0.0.1
	api_token /rest/* {
		realm %s
		throttle off
	}
	respond /rest/* "user={http.auth.user.id}" 200
	respond "public" 200
}
`, childAdmin, db, childSiteURL, realm)
}

func writeCaddyfile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testBinary is this test binary, to re-execute: caddytest overwrites
// os.Args when it starts its in-process Caddy.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// childEnv is the environment of a child Caddy or caddy CLI run in home.
// The race detector's one-second pause at exit is switched off: the CLI
// runs once per reload.
func childEnv(home string) []string {
	return append(os.Environ(),
		childCaddyEnv+"=1",
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"CADDY_ADMIN=",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	)
}

// caddyChild is a Caddy running as a child process.
type caddyChild struct {
	cmd    *exec.Cmd
	log    *faulttest.Output
	exited chan struct{}
	client *http.Client
}

// startChild runs Caddy with the Caddyfile config in home and waits until
// both its admin endpoint and its site answer. The child is killed when
// the test ends, and the test fails if the race detector reported in it or
// it panicked (see childTrouble).
func startChild(t *testing.T, home, config string) *caddyChild {
	t.Helper()
	for _, addr := range []string{childAdmin, childSite} {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s is already in use (a Caddy left over from an earlier run?)", addr)
		}
	}
	c := &caddyChild{
		cmd:    exec.Command(testBinary(t), "run", "--config", config, "--adapter", "caddyfile"),
		log:    new(faulttest.Output),
		exited: make(chan struct{}),
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
	c.cmd.Dir = home
	c.cmd.Env = childEnv(home)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // if this test binary dies first
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.kill(t)
		for _, msg := range childTrouble(c.log.String()) {
			t.Errorf("child Caddy: %s", msg)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !c.ready() {
		select {
		case <-c.exited:
			t.Fatalf("caddy exited during start-up:\n%s", c.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not answer within 20s:\n%s", c.log)
		}
	}
	return c
}

// childTrouble returns what went wrong in a child Caddy, from its log:
// the race detector's reports and panics.
func childTrouble(log string) (trouble []string) {
	for block := range strings.SplitSeq(log, "==================\n") {
		if strings.Contains(block, "WARNING: DATA RACE") {
			trouble = append(trouble, "the race detector reported:\n"+block)
		}
	}
	for line := range strings.Lines(log) {
		if strings.Contains(line, "panic serving") || strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
			trouble = append(trouble, "panicked: "+line)
		}
	}
	return trouble
}

func (c *caddyChild) ready() bool {
	status, _, body, err := c.do(http.MethodGet, childSiteURL+"/", "")
	if err != nil || status != http.StatusOK || body != "public" {
		return false
	}
	status, _, _, err = c.do(http.MethodGet, childAdminURL+"/config/", "")
	return err == nil && status == http.StatusOK
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *caddyChild) kill(t *testing.T) {
	t.Helper()
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("caddy (pid %d) still running 10s after SIGKILL", c.cmd.Process.Pid)
		}
	}
	c.client.CloseIdleConnections()
}

// do sends a request to the child; header is name, value pairs.
func (c *caddyChild) do(method, url, body string, header ...string) (int, http.Header, string, error) {
	return sendRequest(c.client, method, url, body, header...)
}

// sendRequest is do for any client, safe to call from any goroutine.
func sendRequest(client *http.Client, method, url, body string, header ...string) (int, http.Header, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, "", err
	}
	return resp.StatusCode, resp.Header, string(b), nil
}

func decodeTokenJSON(t *testing.T, body string) tokenJSON {
	t.Helper()
	var tok tokenJSON
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.ID == "" {
		t.Fatalf("not a token (%v): %s", err, body)
	}
	return tok
}

// listTokensByID lists every token through an admin endpoint, by id.
func listTokensByID(t *testing.T, client *http.Client, admin string) map[string]tokenJSON {
	t.Helper()
	status, _, body, err := sendRequest(client, http.MethodGet, admin+"/api_tokens/tokens", "")
	if err != nil || status != http.StatusOK {
		t.Fatalf("list: %d %v %s", status, err, body)
	}
	var toks []tokenJSON
	if err := json.Unmarshal([]byte(body), &toks); err != nil {
		t.Fatalf("list: %v: %s", err, body)
	}
	out := make(map[string]tokenJSON, len(toks))
	for _, tok := range toks {
		out[tok.ID] = tok
	}
	return out
}

// auditCounts counts the stored admin events of the given types per token
// id, paging through GET /api_tokens/audit. Events without a token id are
// counted under "".
func auditCounts(t *testing.T, client *http.Client, admin string, types ...string) map[string]map[string]int {
	t.Helper()
	counts := map[string]map[string]int{}
	cursor := ""
	for page := 0; ; page++ {
		if page == 100 {
			t.Fatal("audit trail: more than 100 pages")
		}
		q := url.Values{"type": {strings.Join(types, ",")}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		status, _, body, err := sendRequest(client, http.MethodGet, admin+"/api_tokens/audit?"+q.Encode(), "")
		if err != nil || status != http.StatusOK {
			t.Fatalf("audit: %d %v %s", status, err, body)
		}
		var p auditPageJSON
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatalf("audit: %v: %s", err, body)
		}
		for _, e := range p.Events {
			if counts[e.TokenID] == nil {
				counts[e.TokenID] = map[string]int{}
			}
			counts[e.TokenID][e.Type]++
		}
		if p.NextCursor == "" {
			return counts
		}
		cursor = p.NextCursor
	}
}

// TestFaultCrashKeepsAcknowledgedWrites kills Caddy with SIGKILL right
// after it acknowledged a write, with other writes still in flight, and
// restarts it on the same database, ten times. Every token whose create was
// answered 201 must be listed and authenticate; every token whose revoke
// was answered 200 must stay revoked (401); the audit trail must hold
// exactly the changes the store holds; the file must pass integrity_check.
//
// A SIGKILLed process loses what it had not handed to the kernel, not what
// the kernel had not written to the disk: this shows the acknowledgement
// comes after the commit and that WAL recovery keeps it, not what a power
// cut would do (synchronous=FULL is there for that).
func TestFaultCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Caddy as a child process")
	}
	home := t.TempDir()
	db := filepath.Join(home, "tokens.db")
	config := filepath.Join(home, "Caddyfile")
	writeCaddyfile(t, config, childConfig(db, "crash"))

	type known struct {
		secret    string
		revoked   bool // a revoke was acknowledged
		uncertain bool // a revoke was sent but never answered
	}
	tokens := map[string]*known{}

	// check restarts Caddy and checks that everything acknowledged so far
	// survived.
	check := func(round int) *caddyChild {
		t.Helper()
		c := startChild(t, home, config)
		listed := listTokensByID(t, c.client, childAdminURL)
		for id, k := range tokens {
			tok, ok := listed[id]
			if !ok {
				t.Errorf("round %d: acknowledged token %s is gone", round, id)
				continue
			}
			if k.uncertain { // either outcome is right, but from now on it must stay
				k.revoked, k.uncertain = tok.State == "revoked", false
			}
			wantState, wantStatus := "active", http.StatusOK
			if k.revoked {
				wantState, wantStatus = "revoked", http.StatusUnauthorized
			}
			if tok.State != wantState {
				t.Errorf("round %d: token %s is %s, want %s", round, id, tok.State, wantState)
			}
			status, _, body, err := c.do(http.MethodGet, childSiteURL+"/rest/x", "", "Authorization", "Bearer "+k.secret)
			if err != nil || status != wantStatus {
				t.Errorf("round %d: token %s (%s) at the gate: %d %v %q, want %d", round, id, wantState, status, err, body, wantStatus)
			}
		}
		return c
	}

	const rounds = 10
	for round := range rounds {
		c := check(round)

		// Three creates and a revoke at once; SIGKILL as soon as one of
		// them is acknowledged, with the others in flight.
		type answer struct {
			op, id, body string
			status       int
			err          error
		}
		victim := ""
		for _, id := range slices.Sorted(maps.Keys(tokens)) {
			if k := tokens[id]; !k.revoked && !k.uncertain {
				victim = id
				break
			}
		}
		answers := make(chan answer, 4)
		n := 0
		for i := range 3 {
			n++
			go func() {
				body := fmt.Sprintf(`{"user":"user%d","name":"round%d"}`, i, round)
				status, _, out, err := c.do(http.MethodPost, childAdminURL+"/api_tokens/tokens", body)
				answers <- answer{op: "create", body: out, status: status, err: err}
			}()
		}
		if victim != "" {
			n++
			go func() {
				status, _, out, err := c.do(http.MethodDelete, childAdminURL+"/api_tokens/tokens/"+victim, "")
				answers <- answer{op: "revoke", id: victim, body: out, status: status, err: err}
			}()
		}
		killed := false
		for range n {
			a := <-answers // each request ends within the client's timeout
			if !killed && a.err == nil && (a.status == http.StatusCreated || a.status == http.StatusOK) {
				c.kill(t)
				killed = true
			}
			switch {
			case a.err != nil: // lost in the crash: either outcome is right
				if a.op == "revoke" {
					tokens[a.id].uncertain = true
				}
			case a.op == "create" && a.status == http.StatusCreated:
				tok := decodeTokenJSON(t, a.body)
				tokens[tok.ID] = &known{secret: tok.Token}
			case a.op == "revoke" && a.status == http.StatusOK:
				tokens[a.id].revoked = true
			default:
				t.Errorf("round %d: %s answered %d: %s", round, a.op, a.status, a.body)
			}
		}
		if !killed {
			t.Fatalf("round %d: no write was acknowledged", round)
		}
	}

	// In the rounds above a create is often acknowledged first and the
	// revoke lost in the crash, so whether any revoke was acknowledged
	// right before a kill is chance. One last crash makes sure: a revoke
	// alone, SIGKILL as soon as its 200 arrives.
	c := check(rounds)
	victim := ""
	for _, id := range slices.Sorted(maps.Keys(tokens)) {
		if k := tokens[id]; !k.revoked && !k.uncertain {
			victim = id
			break
		}
	}
	if victim == "" {
		// The rounds' revokes can have won every race: make one, with no
		// crash, so that there is a token to revoke.
		status, _, body, err := c.do(http.MethodPost, childAdminURL+"/api_tokens/tokens", `{"user":"user0","name":"last"}`)
		if err != nil || status != http.StatusCreated {
			t.Fatalf("create: %d %v %s", status, err, body)
		}
		tok := decodeTokenJSON(t, body)
		tokens[tok.ID] = &known{secret: tok.Token}
		victim = tok.ID
	}
	status, _, body, err := c.do(http.MethodDelete, childAdminURL+"/api_tokens/tokens/"+victim, "")
	c.kill(t)
	if err != nil || status != http.StatusOK {
		t.Fatalf("revoke %s: %d %v %s", victim, status, err, body)
	}
	tokens[victim].revoked = true

	c = check(rounds + 1)
	// The trail holds exactly what the store holds: one token_created per
	// token, one token_revoked per revoked token, nothing else.
	listed := listTokensByID(t, c.client, childAdminURL)
	counts := auditCounts(t, c.client, childAdminURL, "token_created", "token_revoked")
	for id, tok := range listed {
		want := map[string]int{"token_created": 1}
		if tok.State == "revoked" {
			want["token_revoked"] = 1
		}
		if !maps.Equal(counts[id], want) {
			t.Errorf("token %s (%s): audit events %v, want %v", id, tok.State, counts[id], want)
		}
		delete(counts, id)
	}
	if len(counts) != 0 {
		t.Errorf("audit events of tokens that do not exist: %v", counts)
	}
	c.kill(t)
	faulttest.IntegrityOK(t, db)
	t.Logf("%d tokens acknowledged, %d stored, over %d crashes", len(tokens), len(listed), rounds)
}

// dbFiles returns the child's open file descriptors on the database and
// its -wal and -shm files: fd number to path.
func dbFiles(pid int, db string) (map[string]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fds := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed since ReadDir
		}
		if target == db || target == db+"-wal" || target == db+"-shm" {
			fds[e.Name()] = target
		}
	}
	return fds, nil
}

// TestFaultReloadUnderLoad runs `caddy reload` repeatedly, alternating two
// configs, while clients call through the gate with a valid token and
// without credentials. No request may get a 5xx or a wrong answer (the
// valid token always 200, no credentials always 401); a request with no
// answer at all is tolerated only if rare (see below). After each reload
// an admin call creates a token: every one must work at the end, from the
// one store. The log must not say "database is locked", and the store must
// be opened once: Caddy's open file descriptors on the database are
// sampled throughout and must stay exactly those it had before the first
// reload (a second Store opens connections, so new descriptors, even if
// the first were closed after it).
//
// An admin client also creates tokens throughout, so admin calls meet
// config loads: Caddy starts the new config's admin endpoint before it
// provisions the apps, and the admin API must only ever use a fully
// started app. Every create must succeed and every created token work.
func TestFaultReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Caddy as a child process")
	}
	home := t.TempDir()
	db := filepath.Join(home, "tokens.db")
	config := filepath.Join(home, "Caddyfile")
	realms := []string{"realm-a", "realm-b"}
	writeCaddyfile(t, config, childConfig(db, realms[0]))
	c := startChild(t, home, config)

	// Caddy replaces its admin server on every config load, closing its
	// connections; like the caddy CLI, admin calls use fresh ones (a POST
	// on a pooled connection the old server closed would get EOF).
	admin := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	create := func(name string) tokenJSON {
		t.Helper()
		status, _, body, err := sendRequest(admin, http.MethodPost, childAdminURL+"/api_tokens/tokens", `{"user":"alice","name":"`+name+`"}`)
		if err != nil || status != http.StatusCreated {
			t.Fatalf("create %s: %d %v %s", name, status, err, body)
		}
		return decodeTokenJSON(t, body)
	}
	tok := create("load")
	pid := c.cmd.Process.Pid
	baseline, err := dbFiles(pid, db)
	if err != nil || len(baseline) == 0 {
		t.Fatalf("no open database files in /proc/%d/fd: %v %v", pid, baseline, err)
	}

	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		problems  []string
		dropped   []string // requests that got no answer at all
		okAuth    atomic.Int64
		ok401     atomic.Int64
		fdSamples atomic.Int64
	)
	drop := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		dropped = append(dropped, fmt.Sprintf("%s: %v", what, err))
	}
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	loop := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.After(90 * time.Second) // a safety net: stop ends the loops
			for {
				select {
				case <-stop:
					return
				case <-deadline:
					return
				default:
				}
				f()
			}
		}()
	}
	load := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer load.CloseIdleConnections()
	for range 3 {
		loop(func() {
			status, _, body, err := sendRequest(load, http.MethodGet, childSiteURL+"/rest/x", "", "Authorization", basicAuth("alice", tok.Token))
			switch {
			case err != nil:
				drop("valid token", err)
			case status != http.StatusOK || body != "user=alice":
				problem("valid token: %d %q", status, body)
			default:
				okAuth.Add(1)
			}
		})
	}
	loop(func() {
		status, _, body, err := sendRequest(load, http.MethodGet, childSiteURL+"/rest/x", "")
		switch {
		case err != nil:
			drop("no credentials", err)
		case status != http.StatusUnauthorized:
			problem("no credentials: %d %q", status, body)
		default:
			ok401.Add(1)
		}
	})
	var (
		duringMu sync.Mutex
		during   []tokenJSON
		seq      atomic.Int64
		// admin creates that got no answer: each may or may not have been
		// made, so the store holds between 0 and this many more tokens
		adminDropped atomic.Int64
	)
	loop(func() {
		name := fmt.Sprintf("during%d", seq.Add(1))
		status, _, body, err := sendRequest(admin, http.MethodPost, childAdminURL+"/api_tokens/tokens", `{"user":"alice","name":"`+name+`"}`)
		switch {
		case err != nil: // the old admin server closed as the call came: no answer
			adminDropped.Add(1)
			drop("admin create", err)
		case status != http.StatusCreated:
			problem("admin create during reloads: %d %q", status, body)
		default:
			tok := decodeTokenJSON(t, body)
			duringMu.Lock()
			during = append(during, tok)
			duringMu.Unlock()
		}
		time.Sleep(20 * time.Millisecond)
	})
	loop(func() {
		fds, err := dbFiles(pid, db)
		fdSamples.Add(1)
		if err != nil {
			problem("reading /proc/%d/fd: %v", pid, err)
		} else if !maps.Equal(fds, baseline) {
			problem("open database files changed: %v, before the reloads %v", fds, baseline)
		}
		time.Sleep(5 * time.Millisecond)
	})

	const reloads = 12
	var created []tokenJSON
	for i := 1; i <= reloads; i++ {
		realm := realms[i%2]
		writeCaddyfile(t, config, childConfig(db, realm))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, testBinary(t), "reload", "--config", config, "--adapter", "caddyfile", "--address", childAdmin)
		cmd.Dir, cmd.Env = home, childEnv(home)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("caddy reload %d: %v\n%s", i, err, out)
		}
		// The reload took: the challenge names the new realm.
		_, hdr, _, err := c.do(http.MethodGet, childSiteURL+"/rest/x", "")
		if err != nil || !strings.Contains(hdr.Get("WWW-Authenticate"), realm) {
			t.Errorf("after reload %d: challenge %q (%v), want realm %s", i, hdr.Get("WWW-Authenticate"), err, realm)
		}
		created = append(created, create(fmt.Sprintf("reload%d", i)))
	}
	close(stop)
	wg.Wait()

	t.Logf("%d reloads: %d authenticated, %d refused without credentials, %d without an answer, %d descriptor samples",
		reloads, okAuth.Load(), ok401.Load(), len(dropped), fdSamples.Load())
	for _, p := range problems {
		t.Error(p)
	}
	// A keep-alive connection the old server closes as the client sends
	// on it ends in a reset the client can't retry: Caddy's (net/http's)
	// graceful shutdown, not the gate, and rare. Anything more is a fault.
	if answered := okAuth.Load() + ok401.Load(); int64(len(dropped))*500 > answered {
		t.Errorf("%d of %d requests got no answer: %q", len(dropped), answered+int64(len(dropped)), dropped)
	} else if len(dropped) > 0 {
		t.Logf("requests without an answer: %q", dropped)
	}
	if okAuth.Load() < 100 || ok401.Load() < 20 || fdSamples.Load() < 50 {
		t.Errorf("too little traffic to tell: %d authenticated, %d refused, %d samples",
			okAuth.Load(), ok401.Load(), fdSamples.Load())
	}
	if len(during) < reloads {
		t.Errorf("only %d tokens created during %d reloads", len(during), reloads)
	}
	for _, tok := range append(created, during...) {
		status, _, body, err := c.do(http.MethodGet, childSiteURL+"/rest/x", "", "Authorization", "Bearer "+tok.Token)
		if err != nil || status != http.StatusOK {
			t.Errorf("token %s created around reloads: %d %v %q", tok.ID, status, err, body)
		}
	}
	listed := listTokensByID(t, c.client, childAdminURL)
	acked := reloads + 1 + len(during)
	for _, tok := range append(append(created, during...), tok) {
		if _, ok := listed[tok.ID]; !ok {
			t.Errorf("acknowledged token %s is not listed", tok.ID)
		}
	}
	if n := len(listed); n < acked || n > acked+int(adminDropped.Load()) {
		t.Errorf("%d tokens listed, want %d acknowledged plus at most %d unanswered", n, acked, adminDropped.Load())
	}
	log := c.log.String()
	if strings.Contains(log, "database is locked") {
		t.Errorf("the log says \"database is locked\":\n%s", log)
	}
	for line := range strings.Lines(log) {
		if strings.Contains(line, `"level":"error"`) && strings.Contains(line, "api_token") {
			t.Errorf("error logged: %s", line)
		}
	}
}

// testerSend is a goroutine-safe request to the in-process Caddy.
func testerSend(tester *caddytest.Tester, method, url, body string, header ...string) (int, string, error) {
	status, _, out, err := sendRequest(tester.Client, method, url, body, header...)
	return status, out, err
}

// TestFaultConcurrentWritesAndAuthentication runs admin writers (create,
// rotate, revoke, on tokens they share, so the same token is rotated and
// revoked at once) against authenticating clients, in-process under -race.
// No request may get a 5xx; tokens no writer touches must always
// authenticate. Afterwards the store, the secrets handed out and the audit
// trail must agree: one token_created per token, one token_rotated per
// rotation answered 201, one token_revoked per revoked token (however many
// revokes were answered 200), the last secret handed out works unless the
// token is revoked, every earlier secret is refused. The audit log
// (api_tokens.audit) must tell exactly the same story as the stored trail
// (checkAuditLog).
func TestFaultConcurrentWritesAndAuthentication(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokens.db")
	auditLog := filepath.Join(dir, "audit.log")
	config := strings.Replace(gateConfig(db, "", ""), "\tgrace_period 1ns\n",
		"\tgrace_period 1ns\n\tlog audit {\n\t\tinclude api_tokens.audit\n\t\toutput file "+auditLog+"\n\t}\n", 1)
	if !strings.Contains(config, auditLog) {
		t.Fatal("gateConfig changed: no place for the audit log")
	}
	tester := startGate(t, config)
	stable := []tokenJSON{
		createToken(t, tester, `{"user":"steady","name":"one"}`),
		createToken(t, tester, `{"user":"steady","name":"two"}`),
	}

	type issued struct {
		secrets   []string // every secret handed out, in no particular order
		rotations int      // rotations answered 201
		revokes   int      // revokes answered 200
	}
	var (
		mu       sync.Mutex
		tokens   = map[string]*issued{}
		ids      []string
		problems []string
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	pick := func(r *rand.Rand) (string, []string) {
		mu.Lock()
		defer mu.Unlock()
		if len(ids) == 0 {
			return "", nil
		}
		id := ids[r.IntN(len(ids))]
		return id, slices.Clone(tokens[id].secrets)
	}

	const writers, opsPerWriter, readers = 4, 30, 4
	var writersDone sync.WaitGroup
	for w := range writers {
		writersDone.Add(1)
		go func() {
			defer writersDone.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for op := range opsPerWriter {
				id, _ := pick(r)
				switch n := r.IntN(10); {
				case id == "" || n < 4:
					status, body, err := testerSend(tester, http.MethodPost, adminURL+"/api_tokens/tokens",
						fmt.Sprintf(`{"user":"writer%d","name":"t%d"}`, w, op))
					if err != nil || status != http.StatusCreated {
						problem("create: %d %v %s", status, err, body)
						continue
					}
					var tok tokenJSON
					if err := json.Unmarshal([]byte(body), &tok); err != nil {
						problem("create: %v", err)
						continue
					}
					mu.Lock()
					tokens[tok.ID] = &issued{secrets: []string{tok.Token}}
					ids = append(ids, tok.ID)
					mu.Unlock()
				case n < 8:
					status, body, err := testerSend(tester, http.MethodPost, adminURL+"/api_tokens/tokens/"+id+"/rotate", "")
					switch {
					case err != nil:
						problem("rotate: %v", err)
					case status == http.StatusCreated:
						var tok tokenJSON
						if err := json.Unmarshal([]byte(body), &tok); err != nil {
							problem("rotate: %v", err)
							continue
						}
						mu.Lock()
						tokens[id].secrets = append(tokens[id].secrets, tok.Token)
						tokens[id].rotations++
						mu.Unlock()
					case status == http.StatusConflict: // revoked meanwhile
					default:
						problem("rotate: %d %s", status, body)
					}
				default:
					status, body, err := testerSend(tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+id, "")
					if err != nil || status != http.StatusOK {
						problem("revoke: %d %v %s", status, err, body)
						continue
					}
					mu.Lock()
					tokens[id].revokes++
					mu.Unlock()
				}
			}
		}()
	}
	stop := make(chan struct{})
	var readersDone sync.WaitGroup
	var auths atomic.Int64
	for i := range readers {
		readersDone.Add(1)
		go func() {
			defer readersDone.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for n := 0; n < 100_000; n++ { // bounded; stop ends it long before
				select {
				case <-stop:
					return
				default:
				}
				tok := stable[n%len(stable)]
				status, body, err := testerSend(tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+tok.Token)
				if err != nil || status != http.StatusOK {
					problem("untouched token %s: %d %v %q", tok.ID, status, err, body)
				}
				// A token being rotated and revoked: 200 or 401, never
				// anything else.
				if _, secrets := pick(r); len(secrets) > 0 {
					status, body, err := testerSend(tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+secrets[r.IntN(len(secrets))])
					if err != nil || (status != http.StatusOK && status != http.StatusUnauthorized) {
						problem("token under change: %d %v %q", status, err, body)
					}
				}
				auths.Add(1)
			}
		}()
	}
	writersDone.Wait()
	// Racing revokes of one token, for three tokens: every one answers 200
	// (revoking a revoked token is harmless), the token is revoked once.
	var racers sync.WaitGroup
	mu.Lock()
	var targets []string
	for _, id := range ids {
		if tokens[id].revokes == 0 && len(targets) < 3 {
			targets = append(targets, id)
		}
	}
	mu.Unlock()
	for _, id := range targets {
		for range 4 {
			racers.Add(1)
			go func() {
				defer racers.Done()
				status, body, err := testerSend(tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+id, "")
				if err != nil || status != http.StatusOK {
					problem("racing revoke: %d %v %s", status, err, body)
					return
				}
				mu.Lock()
				tokens[id].revokes++
				mu.Unlock()
			}()
		}
	}
	racers.Wait()
	close(stop)
	readersDone.Wait()
	for _, p := range problems {
		t.Error(p)
	}

	listed := listTokensByID(t, tester.Client, adminURL)
	counts := auditCounts(t, tester.Client, adminURL, "token_created", "token_rotated", "token_revoked")
	var rotations, revoked int
	for id, is := range tokens {
		tok, ok := listed[id]
		if !ok {
			t.Errorf("token %s: acknowledged, not listed", id)
			continue
		}
		rotations += is.rotations
		wantState := "active"
		want := map[string]int{"token_created": 1}
		if is.rotations > 0 {
			want["token_rotated"] = is.rotations
		}
		if is.revokes > 0 {
			wantState = "revoked"
			want["token_revoked"] = 1
			revoked++
		}
		if tok.State != wantState {
			t.Errorf("token %s: %s, want %s", id, tok.State, wantState)
		}
		if !maps.Equal(counts[id], want) {
			t.Errorf("token %s: audit events %v, want %v", id, counts[id], want)
		}
		// The secret in force is the one whose hint the store shows.
		current := 0
		for _, secret := range is.secrets {
			status, body, err := testerSend(tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+secret)
			want := http.StatusUnauthorized
			if token.Hint(secret) == tok.Hint {
				current++
				if wantState == "active" {
					want = http.StatusOK
				}
			}
			if err != nil || status != want {
				t.Errorf("token %s (%s), secret …%s: %d %v %q, want %d", id, wantState, secret[len(secret)-4:], status, err, body, want)
			}
		}
		if current != 1 {
			t.Errorf("token %s: %d of the secrets handed out match the stored hint %s", id, current, tok.Hint)
		}
	}
	for _, tok := range stable {
		delete(listed, tok.ID)
		delete(counts, tok.ID)
	}
	for id := range listed {
		if tokens[id] == nil {
			t.Errorf("token %s is stored but no create was acknowledged", id)
		}
		delete(counts, id)
	}
	if len(counts) != 0 {
		t.Errorf("audit events of tokens that do not exist: %v", counts)
	}
	checkAuditLog(t, auditLog, auditCounts(t, tester.Client, adminURL, "token_created", "token_rotated", "token_revoked"))
	t.Logf("%d tokens, %d rotations, %d revoked; %d authentication rounds meanwhile", len(tokens), rotations, revoked, auths.Load())
	if rotations == 0 || revoked == 0 || auths.Load() < 50 {
		t.Errorf("too little happened to tell: %d rotations, %d revoked, %d authentication rounds", rotations, revoked, auths.Load())
	}
}

// checkAuditLog compares the admin events in the audit log file with the
// stored ones (per token id, then type): they must be equal. Racing
// revokes of one token must log token_revoked once, as the store revokes
// it, and stores the event, once (admin.go's revoke logs only for the
// caller whose revoke changed the token).
func checkAuditLog(t *testing.T, path string, stored map[string]map[string]int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]map[string]int{}
	for line := range strings.Lines(string(data)) {
		var e struct {
			Msg     string `json:"msg"`
			TokenID string `json:"token_id"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit log: %v: %s", err, line)
		}
		switch e.Msg {
		case "token_created", "token_rotated", "token_revoked":
			if logged[e.TokenID] == nil {
				logged[e.TokenID] = map[string]int{}
			}
			logged[e.TokenID][e.Msg]++
		}
	}
	for id, want := range stored {
		got := logged[id]
		for typ, n := range want {
			if got[typ] != n { // racing revokes of one token log it once, as they store it once
				t.Errorf("token %s: %d %s in the audit log, %d stored", id, got[typ], typ, n)
			}
		}
		for typ, n := range got {
			if want[typ] == 0 {
				t.Errorf("token %s: %d %s in the audit log, none stored", id, n, typ)
			}
		}
		delete(logged, id)
	}
	if len(logged) != 0 {
		t.Errorf("audit log events of tokens without stored events: %v", logged)
	}
}

// diskTrouble runs the checks shared by the disk-full and unwritable
// tests. While the trouble lasts, two creates answer status with a message
// containing msg; so do a rotate and a revoke, unless exact is false, when
// they may also succeed (on a full disk a small write can fit in the space
// SQLite already holds, e.g. the frames of the create that failed): either
// way, the gate must then agree with the answer. Reads and authentication
// of known tokens keep working. Once the trouble is over, writes work, the
// audit trail holds exactly the acknowledged changes and the file is sound.
func diskTrouble(t *testing.T, dir string, start func() (end func()), status int, msg string, exact bool) {
	t.Helper()
	db := filepath.Join(dir, "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))
	keep := createToken(t, tester, `{"user":"alice","name":"keep"}`)
	victim := createToken(t, tester, `{"user":"alice","name":"victim"}`)
	gate := func(what, secret string, want int) {
		t.Helper()
		if st, _, body := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+secret); st != want {
			t.Errorf("%s at the gate: %d %q, want %d", what, st, body, want)
		}
	}
	refused := func(what string, st int, body string) {
		t.Helper()
		if st != status || !strings.Contains(body, msg) {
			t.Errorf("%s: %d %s, want %d containing %q", what, st, body, status, msg)
		}
	}

	end := start()
	for i := range 2 {
		st, _, body := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens", fmt.Sprintf(`{"user":"alice","name":"during%d"}`, i))
		refused("create", st, body)
	}
	keepSecret, rotated := keep.Token, false
	st, _, body := do(t, tester, http.MethodPost, adminURL+"/api_tokens/tokens/"+keep.ID+"/rotate", "")
	if st == http.StatusCreated && !exact {
		keepSecret, rotated = decodeTokenJSON(t, body).Token, true
	} else {
		refused("rotate", st, body)
	}
	revoked := false
	st, _, body = do(t, tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+victim.ID, "")
	if st == http.StatusOK && !exact {
		revoked = true
	} else {
		refused("revoke", st, body)
	}
	t.Logf("during the trouble: rotate succeeded %v, revoke succeeded %v", rotated, revoked)
	gate("known token", keepSecret, http.StatusOK)
	if rotated {
		gate("rotated-out secret", keep.Token, http.StatusUnauthorized)
	}
	if revoked {
		gate("revoked token", victim.Token, http.StatusUnauthorized)
	} else {
		gate("token whose revoke was refused", victim.Token, http.StatusOK)
	}
	wantActive := 2
	if revoked {
		wantActive = 1
	}
	if toks := listTokens(t, tester, ""); len(toks) != 2 {
		t.Errorf("tokens during the trouble: %+v, want the 2 created before", toks)
	}
	if toks := listTokens(t, tester, "?state=active"); len(toks) != wantActive {
		t.Errorf("active tokens during the trouble: %d, want %d", len(toks), wantActive)
	}

	end()
	after := createToken(t, tester, `{"user":"alice","name":"after"}`)
	if !revoked {
		if st, _, body := do(t, tester, http.MethodDelete, adminURL+"/api_tokens/tokens/"+victim.ID, ""); st != http.StatusOK {
			t.Fatalf("revoke after the trouble: %d %s", st, body)
		}
	}
	gate("known token after the trouble", keepSecret, http.StatusOK)
	gate("revoked token after the trouble", victim.Token, http.StatusUnauthorized)
	gate("token created after the trouble", after.Token, http.StatusOK)
	faulttest.IntegrityOK(t, db)
	counts := auditCounts(t, tester.Client, adminURL, "token_created", "token_rotated", "token_revoked")
	want := map[string]map[string]int{
		keep.ID:   {"token_created": 1},
		victim.ID: {"token_created": 1, "token_revoked": 1},
		after.ID:  {"token_created": 1},
	}
	if rotated {
		want[keep.ID]["token_rotated"] = 1
	}
	if !maps.EqualFunc(counts, want, maps.Equal) {
		t.Errorf("audit trail %v, want %v (the acknowledged changes only)", counts, want)
	}
}

// TestFaultDiskFull puts the database on a 1 MiB tmpfs and fills it: the
// kernel answers ENOSPC as on a real full disk, and SQLite SQLITE_FULL.
func TestFaultDiskFull(t *testing.T) {
	dir := faulttest.MountTmpfs(t, "1m")
	diskTrouble(t, dir, func() func() {
		filler := faulttest.FillDisk(t, dir, 0)
		return func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
	},
		http.StatusServiceUnavailable, "the token store cannot write (the disk is full)", false)
}

// TestFaultUnwritable makes the database and its -wal file immutable
// (chattr +i) under the running store: every write(2) to them fails with
// EPERM, as on a file system that went read-only under a running server
// (which answers EROFS); SQLite reports SQLITE_IOERR_WRITE either way.
// chmod would not do: the test runs as root and the store's descriptors are
// already open.
func TestFaultUnwritable(t *testing.T) {
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		faulttest.Unsupported(t, "needs chattr (e2fsprogs)")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "tokens.db")
	set := func(flag string) error {
		for _, p := range []string{db, db + "-wal"} {
			if out, err := exec.Command(chattr, flag, p).CombinedOutput(); err != nil {
				return fmt.Errorf("chattr %s %s: %v: %s", flag, p, err, out)
			}
		}
		return nil
	}
	t.Cleanup(func() { _ = set("-i") }) // else t.TempDir can't remove them
	diskTrouble(t, dir, func() func() {
		if err := set("+i"); err != nil {
			faulttest.Unsupported(t, "the file system or the user can't make files immutable: %v", err)
		}
		return func() {
			if err := set("-i"); err != nil {
				t.Fatal(err)
			}
		}
	}, http.StatusServiceUnavailable, "the token store cannot write (disk I/O error)", true)
}

// TestFaultLockedByAnotherProcess has another process hold the database's
// write lock, as an operator's sqlite3 shell in the middle of a write
// transaction does, with the store's real busy timeout (5s). An admin
// create must fail after about that long, not hang, with a 503 naming the
// lock; the gate must keep authenticating meanwhile without delay; once
// the lock is released, writes work.
func TestFaultLockedByAnotherProcess(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokens.db")
	tester := startGate(t, gateConfig(db, "", ""))
	tok := createToken(t, tester, `{"user":"alice","name":"ci"}`)

	release := faulttest.HoldWriteLock(t, db)

	type result struct {
		status int
		body   string
		err    error
		took   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		// Not tester.Client: its 5s timeout is the busy timeout.
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		start := time.Now()
		status, _, body, err := sendRequest(client, http.MethodPost, adminURL+"/api_tokens/tokens", `{"user":"alice","name":"locked"}`)
		done <- result{status, body, err, time.Since(start)}
	}()
	// The gate answers from memory while the create waits for the lock.
	var answered int // gate requests answered 200 while the lock was held
	var res result
	giveUp := time.After(30 * time.Second)
	for waiting := true; waiting; {
		status, body, err := testerSend(tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+tok.Token)
		if err != nil || status != http.StatusOK {
			t.Errorf("gate while locked: %d %v %q", status, err, body)
		} else {
			answered++
		}
		select {
		case res = <-done:
			waiting = false
		case <-time.After(50 * time.Millisecond):
		case <-giveUp:
			t.Fatal("the admin create did not return within 30s")
		}
	}
	if res.err != nil || res.status != http.StatusServiceUnavailable || !strings.Contains(res.body, "locked by another") {
		t.Errorf("create while locked: %d %v %s, want 503 naming the lock", res.status, res.err, res.body)
	}
	// A bounded wait: not less than the busy timeout (it did wait for the
	// lock), and it returned (giveUp above catches a hang). No upper bound
	// on wall time: this is not a timed test, and a loaded machine is slow.
	if res.took < 4*time.Second {
		t.Errorf("create while locked gave up after %v, before the 5s busy timeout", res.took)
	}
	if answered < 3 {
		t.Errorf("the gate answered only %d requests while the database was locked", answered)
	}
	t.Logf("create gave up after %v: %s", res.took, strings.TrimSpace(res.body))

	release()
	after := createToken(t, tester, `{"user":"alice","name":"after"}`)
	if st, _, _ := do(t, tester, http.MethodGet, siteURL+"/rest/x", "", "Authorization", "Bearer "+after.Token); st != http.StatusOK {
		t.Errorf("token created after the lock: %d", st)
	}
	faulttest.IntegrityOK(t, db)
}

// TestFaultStartsReadOnly starts Caddy, as a child process, on a database
// file that can't be written (chattr +i, as on a read-only mount): SQLite
// then opens it read-only without an error. Caddy must start, warn naming
// the file, and check the tokens it holds; an admin revoke answers 503
// saying the database is read-only. Once the file is writable again, a
// revoke must succeed and take effect at the gate with no restart or
// reload: the store, which outlives reloads, reopens the file by itself.
func TestFaultStartsReadOnly(t *testing.T) {
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		faulttest.Unsupported(t, "needs chattr (e2fsprogs)")
	}
	home := t.TempDir()
	db := filepath.Join(home, "tokens.db")
	ctx := context.Background()
	st, err := tokenstore.Open(ctx, db, tokenstore.Options{PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	tok, secret, err := st.Create(ctx, storage.NewToken{Prefix: "caddytok", User: "alice", Name: "ci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	immutable := func(flag string) error {
		if out, err := exec.Command(chattr, flag, db).CombinedOutput(); err != nil {
			return fmt.Errorf("chattr %s %s: %v: %s", flag, db, err, out)
		}
		return nil
	}
	t.Cleanup(func() { _ = immutable("-i") }) // else t.TempDir can't remove it
	if err := immutable("+i"); err != nil {
		faulttest.Unsupported(t, "the file system or the user can't make files immutable: %v", err)
	}
	config := filepath.Join(home, "Caddyfile")
	writeCaddyfile(t, config, childConfig(db, "read-only"))
	c := startChild(t, home, config)

	if log := c.log.String(); !strings.Contains(log, "token store opened read-only") || !strings.Contains(log, `"database":"`+db+`"`) {
		t.Errorf("no start-up warning naming %s:\n%s", db, log)
	}
	gate := func(what string, want int) {
		t.Helper()
		if st, _, body, err := c.do(http.MethodGet, childSiteURL+"/rest/x", "", "Authorization", "Bearer "+secret); err != nil || st != want {
			t.Errorf("%s: %d %v %q, want %d", what, st, err, body, want)
		}
	}
	gate("the token on a read-only file", http.StatusOK)
	st2, _, body, err := c.do(http.MethodDelete, childAdminURL+"/api_tokens/tokens/"+tok.ID, "")
	if err != nil || st2 != http.StatusServiceUnavailable || !strings.Contains(body, "the database is read-only") {
		t.Errorf("revoke on a read-only file: %d %v %s, want 503 saying the database is read-only", st2, err, body)
	}

	if err := immutable("-i"); err != nil {
		t.Fatal(err)
	}
	if st, _, body, err := c.do(http.MethodDelete, childAdminURL+"/api_tokens/tokens/"+tok.ID, ""); err != nil || st != http.StatusOK {
		t.Fatalf("revoke once the file is writable: %d %v %s", st, err, body)
	}
	gate("the revoked token", http.StatusUnauthorized)
	if log := c.log.String(); !strings.Contains(log, "token store writable again") {
		t.Errorf("the recovery is not logged:\n%s", log)
	}
	c.kill(t)
	faulttest.IntegrityOK(t, db)
}
