package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// Why the heal is timed, and the divergence sampled, in a process of its
// own: the benchmark's process also runs the clients, and after a
// partition all of them catch up at once (thousands of changes each). Its
// goroutines then wait their turn behind them, and the polls that time
// the heal with them: on the 2-core machine, `heal_ms` measured in-process
// was 1.4-1.7 s where a separate process polling the same peers saw them
// converge in 0.44-0.56 s (three runs, 6 December), and the divergence
// sampler, in-process too, recorded nothing for 0.9-2.2 s after the heal.
// The watcher is that separate process: `weft bench cluster-heal-watch`,
// started for every fault run, sampling from the run's start and timing
// from the moment of the heal, both given as CLOCK_MONOTONIC times
// (shared by the two processes; see convergeNow).
//
// The protocol, one line each way per message, on the watcher's stdin and
// stdout:
//
//	→ {"peers":[...],"docs":[...],"settle":NS,"start":NS}   healWatchConfig
//	→ heal NS      at most once: the partition healed, or the peer is back
//	→ end          the run is over: stop sampling and answer
//	← {"heal_ms":...,"divergence":[...],"error":...}         healWatchResult
//
// The watcher samples from the configuration on, every clusterSampleEvery
// of start, and once more at "end"; after "end" it waits for the heal's
// timing (bounded by settle from the heal) and answers. EOF before "end"
// (the run gave up) ends it without an answer; any other line is refused.

// clusterSampleEvery is the period of the divergence timeline.
const clusterSampleEvery = 200 * time.Millisecond

// healWatchConfig is the first line the watcher reads: the peers' HTTP
// addresses, the documents, how long to wait at most for the heal, and
// the run's start (t_ms 0 of the timeline), in nanoseconds of
// CLOCK_MONOTONIC.
type healWatchConfig struct {
	Peers  []string      `json:"peers"`
	Docs   []string      `json:"docs"`
	Settle time.Duration `json:"settle"`
	Start  int64         `json:"start"`
}

// healWatchResult is the watcher's one line of answer. HealMs is 0 when
// no heal line came (a --kill run).
type healWatchResult struct {
	HealMs     float64        `json:"heal_ms"`
	Divergence []ClusterPoint `json:"divergence"`
	Error      string         `json:"error,omitempty"`
}

// ClusterHealWatch is the watcher's side (`weft bench cluster-heal-watch`)
// of the protocol above.
func ClusterHealWatch(ctx context.Context, in io.Reader, out io.Writer) error {
	r := bufio.NewReader(in)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("bench: heal watcher: reading its configuration: %w", err)
	}
	var cfg healWatchConfig
	if err := json.Unmarshal([]byte(line), &cfg); err != nil {
		return fmt.Errorf("bench: heal watcher: configuration: %w", err)
	}
	if len(cfg.Peers) == 0 || len(cfg.Docs) == 0 || cfg.Settle <= 0 {
		return fmt.Errorf("bench: heal watcher: configuration names no peers, no documents or no settle time")
	}
	if now := convergeNow(); cfg.Start <= 0 || cfg.Start > now {
		return fmt.Errorf("bench: heal watcher: start %d is not a CLOCK_MONOTONIC time before now (%d)", cfg.Start, now)
	}
	peers := make([]*clusterPeer, len(cfg.Peers))
	for i, a := range cfg.Peers {
		peers[i] = &clusterPeer{i: i, http: a}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	endSampling := make(chan struct{})
	timeline := make(chan []ClusterPoint, 1)
	go func() { timeline <- sampleDivergence(wctx, endSampling, peers, cfg.Docs, cfg.Start) }()
	var healed chan healWatchResult // nil until the heal line; then its timing
	quit := func() {
		cancel()
		close(endSampling)
		<-timeline
		if healed != nil {
			<-healed
		}
	}
	for {
		line, err = r.ReadString('\n')
		if err == nil && line == "end\n" {
			break
		}
		var at int64
		if err == nil && healed == nil {
			if _, serr := fmt.Sscanf(strings.TrimSpace(line), "heal %d", &at); serr == nil {
				healed = make(chan healWatchResult, 1)
				go func() {
					var h healWatchResult
					if err := watchHeal(wctx, peers, cfg.Docs, cfg.Settle); err != nil {
						h.Error = err.Error()
					} else {
						h.HealMs = float64(convergeNow()-at) / 1e6
					}
					healed <- h
				}()
				continue
			}
		}
		quit()
		switch {
		case errors.Is(err, io.EOF):
			return nil // the run gave up: nobody reads an answer
		case err != nil:
			return fmt.Errorf("bench: heal watcher: %w", err)
		case healed != nil:
			return fmt.Errorf("bench: heal watcher: want \"end\" after the heal line, got %q", line)
		default:
			return fmt.Errorf("bench: heal watcher: want \"heal <ns>\" or \"end\", got %q", line)
		}
	}
	close(endSampling)
	var res healWatchResult
	if healed != nil {
		res = <-healed
	}
	res.Divergence = <-timeline
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = out.Write(append(b, '\n'))
	return err
}

// watchHeal reads what the peers hold now and polls until each holds all
// of it, within settle.
func watchHeal(ctx context.Context, peers []*clusterPeer, docs []string, settle time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	docID := func(i int) string { return docs[i] }
	target, err := clusterUnion(ctx, peers, len(docs), docID)
	if err != nil {
		return err
	}
	for !clusterCovers(ctx, peers, target, docID, len(docs)) {
		if ctx.Err() != nil {
			return fmt.Errorf("the peers did not converge within %v of the heal", settle)
		}
		time.Sleep(10 * time.Millisecond) // polling the peers
	}
	return nil
}

// sampleDivergence counts the documents differing between peers
// (clusterDiffering) at every clusterSampleEvery of start (CLOCK_MONOTONIC
// ns) from now on, skipping a time the previous count overran, and once
// more when end closes; t_ms is when a count was complete.
func sampleDivergence(ctx context.Context, end <-chan struct{}, peers []*clusterPeer, docs []string, start int64) []ClusterPoint {
	docID := func(i int) string { return docs[i] }
	var out []ClusterPoint
	sample := func() {
		n := clusterDiffering(ctx, peers, len(docs), docID)
		out = append(out, ClusterPoint{TMs: float64((convergeNow()-start)/1e3) / 1e3, Differing: n})
	}
	next := func() time.Duration {
		now, every := convergeNow(), int64(clusterSampleEvery)
		return time.Duration(start + ((now-start)/every+1)*every - now)
	}
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-end:
			sample()
			return out
		case <-t.C:
			sample()
			t.Reset(next())
		}
	}
}

// healWatcher is the benchmark's handle on a running watcher.
type healWatcher struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	done   chan struct{} // closed when the watcher exited; res is then set
	res    healWatchResult
}

// startHealWatcher starts `binary bench cluster-heal-watch`; it waits for
// its configuration (configure).
func startHealWatcher(binary string) (*healWatcher, error) {
	cmd := childCommand(binary, nil, "bench", "cluster-heal-watch")
	pipes, err := startChild(cmd, true, 4<<10)
	if err != nil {
		return nil, fmt.Errorf("bench: start the heal watcher %s: %w", binary, err)
	}
	stdout := pipes.stdout
	w := &healWatcher{cmd: cmd, stdin: pipes.stdin, stderr: pipes.stderr, done: make(chan struct{})}
	go func() {
		var res healWatchResult
		line, err := bufio.NewReader(stdout).ReadString('\n')
		switch {
		case err != nil:
			res.Error = "no answer"
		default:
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				res.Error = fmt.Sprintf("answer %q: %v", line, err)
			}
		}
		io.Copy(io.Discard, stdout)
		if werr := cmd.Wait(); werr != nil && res.Error != "" {
			res.Error = fmt.Sprintf("%s (%v: %s)", res.Error, werr, strings.TrimSpace(w.stderr.String()))
		}
		w.res = res
		close(w.done)
	}()
	return w, nil
}

// configure sends the watcher cfg, its start taken from start: sampling
// begins.
func (w *healWatcher) configure(cfg healWatchConfig, start time.Time) error {
	cfg.Start = monotonicNs(start)
	b, err := json.Marshal(cfg)
	if err == nil {
		_, err = w.stdin.Write(append(b, '\n'))
	}
	if err != nil {
		return fmt.Errorf("bench: send the heal watcher its configuration: %w", err)
	}
	return nil
}

// healed tells the watcher the heal happened at at.
func (w *healWatcher) healed(at time.Time) error {
	_, err := fmt.Fprintf(w.stdin, "heal %d\n", monotonicNs(at))
	return err
}

// finish tells the watcher the run is over and returns its answer, within
// the given time: an error if it has none, reports one, or sampled
// nothing (a timeline is never left empty without a word).
func (w *healWatcher) finish(within time.Duration) (healWatchResult, error) {
	if _, err := io.WriteString(w.stdin, "end\n"); err != nil {
		return healWatchResult{}, fmt.Errorf("bench: heal watcher: telling it the run ended: %w", err)
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		return healWatchResult{}, fmt.Errorf("bench: heal watcher: no answer within %v of the run's end", within)
	}
	switch {
	case w.res.Error != "":
		return w.res, fmt.Errorf("bench: heal watcher: %s", w.res.Error)
	case len(w.res.Divergence) == 0:
		return w.res, errors.New("bench: heal watcher: answered no divergence timeline")
	}
	return w.res, nil
}

// stop ends the watcher: EOF on its input, then a kill if it lingers.
func (w *healWatcher) stop() {
	w.stdin.Close()
	t := time.AfterFunc(5*time.Second, func() { w.cmd.Process.Kill() })
	<-w.done
	t.Stop()
}

// monotonicNs is t in nanoseconds of CLOCK_MONOTONIC (see convergeNow).
func monotonicNs(t time.Time) int64 {
	return convergeMonoBase + int64(t.Sub(convergeTimeBase))
}
