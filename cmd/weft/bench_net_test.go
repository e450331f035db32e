package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFillFromEnvCommandLineWins(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	clients := fs.Int("clients", 200, "")
	dur := fs.Duration("duration", time.Second, "")
	t.Setenv("WEFT_CLIENTS", "7")
	t.Setenv("WEFT_DURATION", "3s")
	if err := fs.Parse([]string{"--duration", "5s"}); err != nil {
		t.Fatal(err)
	}
	if err := fillFromEnv(fs); err != nil {
		t.Fatal(err)
	}
	if *clients != 7 || *dur != 5*time.Second {
		t.Fatalf("clients %d (want 7 from env), duration %v (want 5s from the command line)", *clients, *dur)
	}
	t.Setenv("WEFT_CLIENTS", "many")
	fs = flag.NewFlagSet("y", flag.ContinueOnError) // env fills only flags not yet set
	fs.Int("clients", 200, "")
	if err := fillFromEnv(fs); err == nil || !strings.Contains(err.Error(), "WEFT_CLIENTS") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestBenchNetRejectsBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := benchConverge(context.Background(), []string{"--clients", "1"}, &out, &errb); code == 0 {
		t.Fatalf("converge with one client exited 0")
	}
	if !strings.Contains(errb.String(), "at least 2 clients") {
		t.Fatalf("stderr %q", errb.String())
	}
	errb.Reset()
	if code := benchConns(context.Background(), []string{"extra"}, &out, &errb); code != 2 {
		t.Fatalf("conns with a stray argument exited %d, want 2", code)
	}
}

func TestBenchNetHelpExitsZero(t *testing.T) {
	for name, run := range map[string]func(context.Context, []string, io.Writer, io.Writer) int{"converge": benchConverge, "conns": benchConns} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"--help"}, &out, &errb); code != 0 {
			t.Errorf("%s --help exited %d", name, code)
		}
		if !strings.Contains(errb.String(), "Usage: weft bench "+name) || strings.Contains(errb.String(), "-server weft") {
			t.Errorf("%s --help printed:\n%s", name, errb.String())
		}
	}
}
