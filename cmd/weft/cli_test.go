package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// Every help text writes flags as --name (both forms parse, but the
// docs and the README use --name), and `weft bench --help` lists the
// benchmarks one per line rather than as a Go slice.
func TestHelpIsConsistent(t *testing.T) {
	singleDash := regexp.MustCompile(`(?m)^\s+-[a-z]`)
	var helps [][]string
	for name := range commands {
		helps = append(helps, []string{name, "--help"})
	}
	for name := range benchmarks {
		helps = append(helps, []string{"bench", name, "--help"})
	}
	for _, args := range helps {
		var out, errb bytes.Buffer
		if c := run(context.Background(), args, &out, &errb); c != 0 {
			t.Errorf("weft %s: exit %d: %s", strings.Join(args, " "), c, errb.String())
			continue
		}
		help := out.String() + errb.String()
		if !strings.Contains(help, "Usage:") || !strings.Contains(help, "weft "+args[0]) {
			t.Errorf("weft %s: no usage line:\n%s", strings.Join(args, " "), help)
		}
		if loc := singleDash.FindStringIndex(help); loc != nil {
			t.Errorf("weft %s lists a flag with one dash: %q", strings.Join(args, " "), help[loc[0]:loc[1]+8])
		}
		if strings.Contains(help, ":8080") {
			t.Errorf("weft %s names port 8080; the default is 7420", strings.Join(args, " "))
		}
	}
	var out bytes.Buffer
	run(context.Background(), []string{"bench", "--help"}, &out, &out)
	if strings.Contains(out.String(), "[") && strings.Contains(out.String(), "conns converge") {
		t.Errorf("weft bench --help prints a Go slice:\n%s", out.String())
	}
	for name := range benchmarks {
		if !strings.Contains(out.String(), "\n  "+name+"\n") {
			t.Errorf("weft bench --help does not list %q on its own line:\n%s", name, out.String())
		}
	}
}

func TestVersion(t *testing.T) {
	var a, b, errb bytes.Buffer
	if c := run(context.Background(), []string{"version"}, &a, &errb); c != 0 {
		t.Fatalf("weft version: exit %d: %s", c, errb.String())
	}
	if c := run(context.Background(), []string{"--version"}, &b, &errb); c != 0 {
		t.Fatalf("weft --version: exit %d: %s", c, errb.String())
	}
	if a.String() != b.String() {
		t.Errorf("version %q, --version %q", a.String(), b.String())
	}
	if !strings.HasPrefix(a.String(), "weft ") || !strings.Contains(a.String(), "github.com/weftsync/weft") || !strings.Contains(a.String(), runtime.Version()) {
		t.Errorf("weft version = %q", a.String())
	}
	a.Reset()
	if c := run(context.Background(), []string{"version", "--json"}, &a, &errb); c != 0 {
		t.Fatalf("weft version --json: exit %d", c)
	}
	var v versionInfo
	if err := json.Unmarshal(a.Bytes(), &v); err != nil || v.Version == "" || v.Go != runtime.Version() {
		t.Errorf("weft version --json = %s (%v)", a.String(), err)
	}
	// The top-level help points at it.
	a.Reset()
	run(context.Background(), nil, &a, &errb)
	if !strings.Contains(a.String(), "--version") || !slices.Contains(strings.Fields(a.String()), "version") {
		t.Errorf("weft help does not mention the version:\n%s", a.String())
	}
}
