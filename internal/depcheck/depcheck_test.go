package depcheck

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const mod = "github.com/weftsync/weft"

type pkg struct {
	path    string
	dir     string
	imports []string
	files   []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{.Dir}}|{{join .Imports \" \"}}|{{join .GoFiles \" \"}}", mod+"/...")
	cmd.Dir = filepath.Join("..", "..")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "|")
		if len(parts) != 4 {
			t.Fatalf("bad go list line %q", sc.Text())
		}
		pkgs = append(pkgs, pkg{path: strings.TrimPrefix(strings.TrimPrefix(parts[0], mod), "/"), dir: parts[1],
			imports: strings.Fields(parts[2]), files: strings.Fields(parts[3])})
	}
	return pkgs
}

// layer gives each package of the module a rank; a package may import only
// packages of a lower rank (or, for rank 4, none of its siblings).
func layer(p string) int {
	switch {
	case p == "hlc":
		return 0
	case p == "crdt":
		return 1
	case p == "crdt/codec":
		return 2
	case p == "crdt/syncproto":
		return 3
	case p == "storage", p == "cluster", p == "syncserver", strings.HasPrefix(p, "clients/go"):
		return 4
	case p == "internal/sockio":
		return 3 // socket calls for the I/O packages; imports nothing of ours
	case p == "bench":
		return 5
	case strings.HasPrefix(p, "cmd/"):
		return 6
	case strings.HasPrefix(p, "internal/"):
		return -1 // helpers: checked separately
	}
	return 7
}

func pure(p string) bool { return p == "hlc" || p == "crdt" || strings.HasPrefix(p, "crdt/") }

// owners says which packages may import each I/O library.
var owners = map[string][]string{
	"github.com/cockroachdb/pebble":       {"storage"},
	"github.com/hashicorp/memberlist":     {"cluster"},
	"github.com/gorilla/websocket":        {"syncserver", "clients/go", "bench"},
	"github.com/prometheus/client_golang": {"syncserver", "storage", "cluster", "cmd/weft"},
}

var bannedInPure = regexp.MustCompile(`^(net|net/.*|os|os/.*|math/rand|math/rand/v2|syscall|io/fs|github\.com/(cockroachdb/pebble|hashicorp/memberlist|gorilla/websocket|google/uuid).*)$`)

var wallClock = regexp.MustCompile(`\btime\.(Now|Since|Until|Sleep|After|Tick|NewTimer|NewTicker)\(`)

func TestDependencyDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		lp := layer(p.path)
		for _, imp := range p.imports {
			if strings.HasPrefix(imp, mod+"/") {
				dep := strings.TrimPrefix(imp, mod+"/")
				ld := layer(dep)
				switch {
				case ld == -1:
					if lp >= 0 && lp < 5 && !strings.HasPrefix(p.path, "internal/") {
						t.Errorf("%s imports test/bench helper %s", p.path, dep)
					}
				case lp == -1:
				case ld > lp || (ld == lp && ld != 4) || (ld == 4 && lp == 4 && dep != p.path):
					t.Errorf("%s (layer %d) must not import %s (layer %d)", p.path, lp, dep, ld)
				}
			}
			for lib, who := range owners {
				if strings.HasPrefix(imp, lib) {
					ok := false
					for _, w := range who {
						if p.path == w || strings.HasPrefix(p.path, w+"/") {
							ok = true
						}
					}
					if !ok {
						t.Errorf("%s imports %s; only %v may", p.path, imp, who)
					}
				}
			}
			if pure(p.path) && bannedInPure.MatchString(imp) {
				t.Errorf("pure package %s imports %s", p.path, imp)
			}
		}
		if pure(p.path) {
			for _, f := range p.files {
				b, err := os.ReadFile(filepath.Join(p.dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if p.path == "hlc" && f == "system.go" {
					continue // SystemWall, for I/O shells
				}
				if p.path != "hlc" && strings.Contains(string(b), "hlc.SystemWall") {
					t.Errorf("pure package %s uses hlc.SystemWall in %s", p.path, f)
				}
				if loc := wallClock.FindIndex(b); loc != nil {
					t.Errorf("pure package %s reads the wall clock in %s: %q", p.path, f, b[loc[0]:loc[1]])
				}
			}
		}
	}
}

// outsideRepo matches a reference to the development machines' directory
// next to the repository (where the traces used to be read from). A fresh
// clone has no such directory, so neither code nor docs may point there.
// The character classes keep this file from matching itself.
var outsideRepo = regexp.MustCompile(`\.\./sh[a]red\b|/work/sh[a]red\b|"sh[a]red",\s*"traces"`)

func TestSelfContained(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == ".git" || n == "node_modules" || n == "testdata" || n == "data" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".go", ".md", ".sh", ".ts", ".js", ".json", ".yml", ".yaml", ".service", ".mod":
		default:
			if n := d.Name(); n != "Makefile" && n != "Dockerfile" {
				return nil
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if loc := outsideRepo.FindIndex(b); loc != nil {
			line := 1 + bytes.Count(b[:loc[0]], []byte("\n"))
			t.Errorf("%s:%d refers to a directory outside the repository: %q", p, line, b[loc[0]:loc[1]])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// make test vets through go test -vet=all, which vets only packages with
// tests: every package must have some.
func TestEveryPackageHasTests(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{if and (not .TestGoFiles) (not .XTestGoFiles)}}{{.ImportPath}}{{end}}", mod+"/...")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("packages without tests, which make test would not vet:\n%s", s)
	}
}
