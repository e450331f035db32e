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

// Why the heal is timed in a process of its own: the benchmark's process
// also runs the clients, and after a partition all of them catch up at
// once (thousands of changes each). Its goroutines then wait their turn
// behind them, and the polls that time the heal with them: on the 2-core
// machine, `heal_ms` measured in-process was 1.4-1.7 s where a separate
// process polling the same peers saw them converge in 0.44-0.56 s (three
// runs, 6 December). The watcher is that separate process: `weft bench
// cluster-heal-watch`, started when the fault begins, told the moment of
// the heal, timing from that moment (CLOCK_MONOTONIC, shared by the two
// processes) until every peer holds what any peer held then.

// healWatchConfig is the first line the watcher reads: the peers' HTTP
// addresses, the documents and how long to wait at most.
type healWatchConfig struct {
	Peers  []string      `json:"peers"`
	Docs   []string      `json:"docs"`
	Settle time.Duration `json:"settle"`
}

// healWatchResult is the watcher's one line of answer.
type healWatchResult struct {
	HealMs float64 `json:"heal_ms"`
	Error  string  `json:"error,omitempty"`
}

// ClusterHealWatch is the watcher's side (`weft bench cluster-heal-watch`):
// it reads a healWatchConfig line, then a line "heal <ns>" with the heal's
// CLOCK_MONOTONIC time, and answers one healWatchResult line. EOF on in
// before the heal line ends it without an answer.
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
	peers := make([]*clusterPeer, len(cfg.Peers))
	for i, a := range cfg.Peers {
		peers[i] = &clusterPeer{i: i, http: a}
	}
	line, err = r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil // the run ended without a heal
		}
		return fmt.Errorf("bench: heal watcher: %w", err)
	}
	var at int64
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "heal %d", &at); err != nil {
		return fmt.Errorf("bench: heal watcher: want \"heal <ns>\", got %q", line)
	}
	res := healWatchResult{}
	if err := watchHeal(ctx, peers, cfg.Docs, cfg.Settle); err != nil {
		res.Error = err.Error()
	} else {
		res.HealMs = float64(convergeNow()-at) / 1e6
	}
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

// healWatcher is the benchmark's handle on a running watcher.
type healWatcher struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	done   chan struct{} // closed when the watcher exited; res is then set
	res    healWatchResult
}

// startHealWatcher starts `binary bench cluster-heal-watch` and sends it
// cfg.
func startHealWatcher(binary string, cfg healWatchConfig) (*healWatcher, error) {
	cmd := childCommand(binary, nil, "bench", "cluster-heal-watch")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w := &healWatcher{cmd: cmd, stdin: stdin, stderr: &tailBuffer{max: 4 << 10}, done: make(chan struct{})}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the heal watcher %s: %w", binary, err)
	}
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
	b, err := json.Marshal(cfg)
	if err == nil {
		_, err = w.stdin.Write(append(b, '\n'))
	}
	if err != nil {
		w.stop()
		return nil, fmt.Errorf("bench: send the heal watcher its configuration: %w", err)
	}
	return w, nil
}

// healed tells the watcher the heal happened at at.
func (w *healWatcher) healed(at time.Time) error {
	mono := convergeMonoBase + int64(at.Sub(convergeTimeBase))
	_, err := fmt.Fprintf(w.stdin, "heal %d\n", mono)
	return err
}

// stop ends the watcher: EOF on its input, then a kill if it lingers.
func (w *healWatcher) stop() {
	w.stdin.Close()
	t := time.AfterFunc(5*time.Second, func() { w.cmd.Process.Kill() })
	<-w.done
	t.Stop()
}
