package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
)

// CrashOptions configure RunCrash.
type CrashOptions struct {
	// Binary is the weft executable to run as the server (`serve`) and to
	// inspect its data directory (`doc get --data`). Required.
	Binary string
	// Dir holds the server's data directory (a fresh temporary one inside
	// it, removed afterwards). Default: os.TempDir().
	Dir string
	// Writers is the number of concurrent writers, each one client
	// connection editing one document. Default: 64.
	Writers int
	// Docs is the number of documents the writers share. Default: 8.
	Docs int
	// Duration is how long the writers write. Default: 20s.
	Duration time.Duration
	// Kills is the number of kill -9 during Duration (one more follows at
	// the end, before the final check). Default: 3.
	Kills int
	// Seed seeds the kill times. Default: 1.
	Seed uint64
	// Stderr receives the server's log (warnings and errors). Default:
	// discarded.
	Stderr io.Writer
}

// CrashResult is what `weft bench crash` reports. The check is Jepsen's
// set-full: every edit a writer saw acknowledged before a kill must be in
// the data directory the killed server left, exactly once.
type CrashResult struct {
	// Acked is the number of edits acknowledged (WaitSaved returned nil).
	Acked int `json:"acked"`
	// Lost is the number of edits acknowledged before some kill and
	// missing from the data the killed server left.
	Lost int `json:"lost"`
	// Duplicated is the number of edits found more than once.
	Duplicated int `json:"duplicated"`
	// Kills is the number of kill -9 (including the final one).
	Kills int `json:"kills"`
	// Writers, Docs and DurationS echo the configuration.
	Writers   int     `json:"writers"`
	Docs      int     `json:"docs"`
	DurationS float64 `json:"duration_s"`
	// Unacked is the number of edits whose ack had not arrived when the
	// writers stopped (they may or may not be present: both are correct).
	Unacked int `json:"unacked"`
	// RestartMS is the median time from kill to the restarted server
	// listening again (including the check of the data it left).
	RestartMS float64 `json:"restart_ms"`
	// OK: lost and duplicated are 0, at least one edit was acked, and no
	// stored text held anything the writers did not write.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func (o CrashOptions) withDefaults() (CrashOptions, error) {
	if o.Binary == "" {
		return o, errors.New("bench: CrashOptions.Binary is required")
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.Writers <= 0 {
		o.Writers = 64
	}
	if o.Docs <= 0 {
		o.Docs = 8
	}
	o.Docs = min(o.Docs, o.Writers)
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.Kills < 0 {
		return o, errors.New("bench: CrashOptions.Kills must not be negative")
	}
	if o.Kills == 0 {
		o.Kills = 3
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	return o, nil
}

// crashField is the text field every writer appends its edits to.
const crashField = "log"

// crashToken is one writer's edit i: unique, self-delimiting.
func crashToken(w, i int) string { return fmt.Sprintf("[%d:%d]", w, i) }

var crashTokenRE = regexp.MustCompile(`\[(\d+):(\d+)\]`)

func crashDoc(w, docs int) string { return fmt.Sprintf("crash/%d", w%docs) }

// crashServer runs `weft serve` as a child process.
type crashServer struct {
	o    CrashOptions
	data string
	addr string // fixed across restarts so clients reconnect to it
	cmd  *exec.Cmd
	exit chan error
}

func (s *crashServer) start(ctx context.Context) error {
	cmd := exec.Command(s.o.Binary, "serve", "--listen", s.addr, "--data", s.data,
		"--insecure", "--log-level", "warn")
	cmd.Stderr = s.o.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s serve: %w", s.o.Binary, err)
	}
	s.cmd = cmd
	s.exit = make(chan error, 1)
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if !said && strings.HasPrefix(sc.Text(), "weft serving ") {
				said = true
				ready <- nil
			}
		}
		if !said {
			ready <- errors.New("the server exited before it listened")
		}
		s.exit <- cmd.Wait()
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case err := <-ready:
		return err
	case <-t.C:
		s.kill()
		return errors.New("the server did not listen within 30s")
	case <-ctx.Done():
		s.kill()
		return ctx.Err()
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *crashServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// storedTexts reads each document's text from the data directory the dead
// server left, with `weft doc get --data`.
func (s *crashServer) storedTexts(ctx context.Context, docs int) (map[string]string, error) {
	out := map[string]string{}
	for d := range docs {
		id := fmt.Sprintf("crash/%d", d)
		cmd := exec.CommandContext(ctx, s.o.Binary, "doc", "get", id, "--data", s.data)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			if strings.Contains(stderr.String(), "no such document") {
				continue // nothing acked for it yet
			}
			return nil, fmt.Errorf("weft doc get %s: %v: %s", id, err, strings.TrimSpace(stderr.String()))
		}
		var g struct {
			Text map[string]string `json:"text"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &g); err != nil {
			return nil, fmt.Errorf("weft doc get %s: %w", id, err)
		}
		out[id] = g.Text[crashField]
	}
	return out, nil
}

// servedText reads a document's text from the running server's HTTP API.
func (s *crashServer) servedText(ctx context.Context, id string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/v1/docs/"+url.PathEscape(id), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %.200s", id, resp.Status, body)
	}
	var g struct {
		Text map[string]string `json:"text"`
	}
	if err := json.Unmarshal(body, &g); err != nil {
		return "", fmt.Errorf("GET %s: %w", id, err)
	}
	return g.Text[crashField], nil
}

// crashLedger records, per writer, how many edits were acknowledged.
type crashLedger struct {
	mu    sync.Mutex
	acked []int // writer → edits 0..acked-1 acknowledged
	made  []int // writer → edits made
}

func (l *crashLedger) snapshot() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acked)
}

// RunCrash runs the kill -9 test: a real `weft serve`, concurrent writers
// through the Go client, kills at random moments, and after each kill a
// check of the data directory against what was acknowledged. At the end,
// after a last kill and check, the server is restarted once more and must
// serve every document exactly as the data directory holds it.
func RunCrash(ctx context.Context, opts CrashOptions) CrashResult {
	o, err := opts.withDefaults()
	res := CrashResult{Writers: o.Writers, Docs: o.Docs, DurationS: o.Duration.Seconds()}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if err := runCrash(ctx, o, &res); err != nil {
		res.Error = err.Error()
	}
	res.OK = res.Error == "" && res.Lost == 0 && res.Duplicated == 0 && res.Acked > 0
	return res
}

func runCrash(ctx context.Context, o CrashOptions, res *CrashResult) error {
	dir, err := os.MkdirTemp(o.Dir, "weft-bench-crash-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	srv := &crashServer{o: o, data: filepath.Join(dir, "data"), addr: addr}
	if err := srv.start(ctx); err != nil {
		return err
	}
	defer srv.kill()

	// Writers: each its own client connection, appending edits to the end
	// of its document's text and waiting for each ack.
	led := &crashLedger{acked: make([]int, o.Writers), made: make([]int, o.Writers)}
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var wg sync.WaitGroup
	werrs := make([]error, o.Writers)
	for w := range o.Writers {
		wg.Go(func() { werrs[w] = crashWriter(wctx, o, "http://"+addr, w, led) })
	}

	// Kill at random moments of the run, in order.
	rng := rand.New(rand.NewPCG(o.Seed, 0x6b696c6c))
	at := make([]time.Duration, o.Kills)
	for i := range at {
		at[i] = time.Duration(float64(o.Duration) * (0.1 + 0.8*rng.Float64()))
	}
	slices.Sort(at)
	start := time.Now()
	checked := map[string]bool{} // tokens already reported lost/duplicated
	var restarts []float64
	crash := func() error {
		acked := led.snapshot() // acknowledged strictly before the kill
		srv.kill()
		res.Kills++
		texts, err := srv.storedTexts(ctx, o.Docs)
		if err != nil {
			return err
		}
		return checkCrash(texts, acked, o.Docs, checked, res)
	}
	for _, a := range at {
		t := time.NewTimer(time.Until(start.Add(a)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t0 := time.Now()
		if err := crash(); err != nil {
			return err
		}
		if err := srv.start(ctx); err != nil {
			return fmt.Errorf("restart after kill %d: %w", res.Kills, err)
		}
		restarts = append(restarts, ms(time.Since(t0)))
	}
	t := time.NewTimer(time.Until(start.Add(o.Duration)))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	stopWriters()
	wg.Wait()
	if err := errors.Join(werrs...); err != nil {
		return err
	}
	// The final crash: everything ever acked must have survived.
	acked := led.snapshot()
	srv.kill()
	res.Kills++
	texts, err := srv.storedTexts(ctx, o.Docs)
	if err != nil {
		return err
	}
	if err := checkCrash(texts, acked, o.Docs, checked, res); err != nil {
		return err
	}
	// A restarted server must show every document exactly as stored.
	if err := srv.start(ctx); err != nil {
		return fmt.Errorf("final restart: %w", err)
	}
	for id, want := range texts {
		got, err := srv.servedText(ctx, id)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("after a restart the server shows %s with %d bytes of text, the data directory %d", id, len(got), len(want))
		}
	}
	srv.kill()
	final := led.snapshot()
	for w := range final {
		res.Acked += final[w]
		res.Unacked += led.made[w] - final[w]
	}
	res.RestartMS = median(restarts)
	return nil
}

// checkCrash compares the stored texts with the edits acked before the
// kill, adding newly lost or duplicated edits to res.
func checkCrash(texts map[string]string, acked []int, docs int, reported map[string]bool, res *CrashResult) error {
	seen := map[string]int{}
	for id, text := range texts {
		rest := crashTokenRE.ReplaceAllString(text, "")
		if rest != "" {
			return fmt.Errorf("document %s holds text no writer wrote: %.80q", id, rest)
		}
		for _, m := range crashTokenRE.FindAllStringSubmatch(text, -1) {
			w, _ := strconv.Atoi(m[1])
			if w >= len(acked) || crashDoc(w, docs) != id {
				return fmt.Errorf("document %s holds edit %s of a writer of another document", id, m[0])
			}
			seen[m[0]]++
		}
	}
	for tok, n := range seen {
		if n > 1 && !reported["dup"+tok] {
			reported["dup"+tok] = true
			res.Duplicated++
		}
	}
	for w, n := range acked {
		for i := range n {
			tok := crashToken(w, i)
			if seen[tok] == 0 && !reported["lost"+tok] {
				reported["lost"+tok] = true
				res.Lost++
			}
		}
	}
	return nil
}

// crashWriter appends edits until ctx ends, each acknowledged before the
// next is made.
func crashWriter(ctx context.Context, o CrashOptions, url string, w int, led *crashLedger) error {
	co := client.DefaultOptions()
	co.URL = url
	co.Backoff = client.Backoff{Base: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	co.DialTimeout = 5 * time.Second
	c, err := client.New(co)
	if err != nil {
		return fmt.Errorf("writer %d: %w", w, err)
	}
	defer c.Close()
	d, err := c.Open(crashDoc(w, o.Docs), client.DocOptions{})
	if err != nil {
		return fmt.Errorf("writer %d: %w", w, err)
	}
	for i := 0; ctx.Err() == nil; i++ {
		tok := crashToken(w, i)
		err := d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error {
			return tx.Insert(crashField, doc.TextLen(crashField), tok)
		})
		if err != nil {
			return fmt.Errorf("writer %d: edit: %w", w, err)
		}
		led.mu.Lock()
		led.made[w] = i + 1
		led.mu.Unlock()
		if err := d.WaitSaved(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting: the edit is unacked
			}
			return fmt.Errorf("writer %d: %w", w, err)
		}
		led.mu.Lock()
		led.acked[w] = i + 1
		led.mu.Unlock()
	}
	return nil
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port free right now;
// the server is restarted on the same one, so clients reconnect to it.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}
