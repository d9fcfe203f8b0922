package layering

import (
	"errors"
	"go/build"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/apitoken/caddy-apitoken"

// rule says what a package of this module may depend on, directly or
// through other packages of the module (the dependencies of other modules'
// packages are not followed).
type rule struct {
	// stdlibOnly: nothing outside the standard library and the module.
	stdlibOnly bool
	// forbidden: import paths the package must not reach, each with
	// everything below it.
	forbidden []string
}

// caddy is Caddy's module path: only caddymodule and cmd/caddy import it.
const caddy = "github.com/caddyserver/caddy"

// rules, keyed by the package's path in the module, are the layers the
// README describes: the decisions, the limits, the audit event types and
// the records every token store shares (storage, which reaches no
// backend) depend on nothing outside the standard library; the store keeps
// zap out (and the audit sinks, which bring it). On top of its own rule every
// package but mayImportCaddy must not reach Caddy.
var rules = map[string]rule{
	"policy":  {stdlibOnly: true},
	"event":   {stdlibOnly: true},
	"limit":   {stdlibOnly: true},
	"storage": {stdlibOnly: true, forbidden: []string{module + "/tokenstore"}},
	// The in-memory index and its change feed serve every backend: they
	// reach none, nor the Caddy glue.
	"tokenindex":          {stdlibOnly: true, forbidden: []string{module + "/tokenstore", module + "/caddymodule", module + "/audit"}},
	"tokenindex/feedtest": {stdlibOnly: true, forbidden: []string{module + "/tokenstore", module + "/caddymodule", module + "/audit"}},
	"tokenstore":          {forbidden: []string{"go.uber.org/zap", module + "/audit", module + "/caddymodule"}},
	"audit":               {forbidden: []string{module + "/caddymodule", module + "/tokenstore"}},
}

// mayImportCaddy are the packages exempt from the Caddy rule.
var mayImportCaddy = []string{"caddymodule", "cmd/caddy"}

// TestLayering checks every package of the module (its non-test files,
// under any build constraints) against rules, so that an import that
// breaks a layer fails here and names the chain that brings it in.
func TestLayering(t *testing.T) {
	root := moduleRoot(t)
	pkgs := loadModule(t, root)
	if len(pkgs) < 5 {
		t.Fatalf("found %d packages under %s; the walk is broken", len(pkgs), root)
	}
	for rel := range rules {
		if _, ok := pkgs[rel]; !ok {
			t.Errorf("rule for %s, which is not a package of the module", rel)
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(pkgs)) {
		r := rules[rel]
		if !slices.Contains(mayImportCaddy, rel) {
			r.forbidden = append(slices.Clip(r.forbidden), caddy)
		}
		t.Run(rel, func(t *testing.T) {
			for imp, chain := range reach(pkgs, rel) {
				if r.stdlibOnly && !isStdlib(imp) && !strings.HasPrefix(imp, module+"/") {
					t.Errorf("%s reaches %s, outside the standard library (%s)", rel, imp, chain)
					continue
				}
				for _, f := range r.forbidden {
					if imp == f || strings.HasPrefix(imp, f+"/") {
						t.Errorf("%s reaches %s (%s)", rel, imp, chain)
					}
				}
			}
		})
	}
}

// reach returns every import path that the module's package rel reaches
// through the module's own packages, each with the chain that reaches it
// first (breadth-first, so a shortest one).
func reach(pkgs map[string][]string, rel string) map[string]string {
	seen := map[string]string{}
	queue := []string{rel}
	chains := map[string]string{rel: rel}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range pkgs[p] {
			if _, ok := seen[imp]; ok {
				continue
			}
			chain := chains[p] + " → " + strings.TrimPrefix(imp, module+"/")
			seen[imp] = chain
			if own, ok := strings.CutPrefix(imp, module+"/"); ok {
				chains[own] = chain
				queue = append(queue, own)
			}
		}
	}
	return seen
}

// isStdlib reports whether path is a standard library package: its first
// element has no dot (as the go command decides; "C" is cgo).
func isStdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".") && first != "C"
}

// loadModule returns the imports of the non-test files of every package in
// the module under root, keyed by the path relative to the module.
func loadModule(t *testing.T, root string) map[string][]string {
	t.Helper()
	ctx := build.Default
	ctx.UseAllFiles = true // every file, whatever its build constraints
	pkgs := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		name := d.Name()
		if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir
		}
		if path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module (tools)
			}
		}
		p, err := ctx.ImportDir(path, build.ImportComment)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		pkgs[filepath.ToSlash(rel)] = p.Imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// moduleRoot returns the directory of this module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module "+module+"\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod of " + module + " not found")
		}
		dir = parent
	}
}
