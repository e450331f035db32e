package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/operations.md lists every metric the server can export, so that an
// operator reading it sees all of them: a metric added without its line
// there fails here.
func TestOperationsDocListsEveryMetric(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`"(weft_[a-z_]+)"`)
	found := 0
	for _, pkg := range []string{"syncserver", "storage", "cluster"} {
		files, err := filepath.Glob(filepath.Join(root, pkg, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range name.FindAllSubmatch(b, -1) {
				found++
				if !strings.Contains(string(doc), "`"+string(m[1])) {
					t.Errorf("%s (%s) is not in docs/operations.md", m[1], f)
				}
			}
		}
	}
	if found < 30 {
		t.Fatalf("found only %d metric names in the source: has the pattern gone stale?", found)
	}
}
