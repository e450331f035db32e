package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	register(command{
		name:    "version",
		summary: "print the module version, VCS commit and Go version of this binary",
		run:     runVersion,
	})
}

// versionInfo is what `weft version` prints, read from the build info the
// Go toolchain embeds: the module version ("(devel)" for a build from a
// checkout, v1.2.3 for `go install ...@v1.2.3`) and, for a build inside a
// git checkout, the commit and whether the tree had uncommitted changes.
type versionInfo struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

func readVersion() versionInfo {
	v := versionInfo{Module: "github.com/weftsync/weft", Version: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v versionInfo) String() string {
	s := fmt.Sprintf("weft %s (%s)", v.Version, v.Module)
	if v.Commit != "" {
		s += " commit " + v.Commit
		if v.Modified {
			s += "+modified"
		}
		if v.Time != "" {
			s += " " + v.Time
		}
	}
	return s + " " + v.Go
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft version", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	v := readVersion()
	if *asJSON {
		if err := writeJSON(stdout, v, false); err != nil {
			fmt.Fprintf(stderr, "weft version: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(stdout, v)
	return 0
}
