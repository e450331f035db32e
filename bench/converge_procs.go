package bench

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"time"

	"github.com/weftsync/weft/crdt"
)

// A converge run with Procs > 1 spreads its clients over processes: this
// one (the parent) runs the first share itself and starts Procs-1 workers,
// `weft bench converge-worker`, each running its share against the same
// server and documents. Parent and worker speak gob over the worker's stdin
// and stdout, strictly in turn:
//
//	parent → worker   worker → parent
//	config            ready (every client synced)
//	edit              edited (the last seq of each of its writers)
//	target            final (replicas, arrivals, CPU)
//	EOF on stdin      (the worker closes its clients and exits)
//
// Any reply may instead carry Err, after which the worker exits. A worker
// dies with its parent: SIGKILL on the parent's death (Pdeathsig), EOF on
// its stdin, and a bound on its whole run.

// convergeCmd is a message from the parent; exactly one field is set.
type convergeCmd struct {
	Config *convergeWorkerConfig
	Edit   bool
	Target []crdt.VersionVector
}

// convergeReply is a message from a worker; exactly one field is set.
type convergeReply struct {
	Err    string
	Ready  bool
	Edited *convergeEdited
	Final  *convergeFinal
}

// bound is the longest a worker may live: connecting, editing, settling,
// and slack for the parent's own phases.
func (c convergeWorkerConfig) bound() time.Duration {
	return 60*time.Second + c.Duration + c.Settle + time.Minute
}

// ConvergeWorker is the body of `weft bench converge-worker`, a process the
// converge benchmark starts for --procs: it reads its commands from in and
// writes its reports to out (see the protocol above), logging to log. It
// returns when the parent closes in, on an error, or when the run's bound
// passes.
func ConvergeWorker(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	// The parent going (stdin's EOF) cancels whatever the worker is doing.
	pctx, gone := context.WithCancelCause(ctx)
	defer gone(nil)
	cmds := make(chan convergeCmd)
	go func() {
		dec := gob.NewDecoder(bufio.NewReader(in))
		for {
			var c convergeCmd
			if err := dec.Decode(&c); err != nil {
				gone(fmt.Errorf("reading the parent's next command: %w", err))
				return
			}
			select {
			case cmds <- c:
			case <-pctx.Done():
				return
			}
		}
	}()
	next := func(ctx context.Context) (convergeCmd, error) {
		select {
		case c := <-cmds:
			return c, nil
		case <-ctx.Done():
			return convergeCmd{}, fmt.Errorf("bench: worker: %w", context.Cause(ctx))
		}
	}
	enc := gob.NewEncoder(out)
	fail := func(err error) error {
		enc.Encode(convergeReply{Err: err.Error()})
		return err
	}

	c, err := next(pctx)
	if err != nil {
		return err
	}
	if c.Config == nil {
		return fail(errors.New("bench: worker: the first command is not a config"))
	}
	cfg := *c.Config
	ctx, cancel := context.WithTimeout(pctx, cfg.bound())
	defer cancel()
	w, err := startConvergeWorker(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	defer w.close()
	if err := enc.Encode(convergeReply{Ready: true}); err != nil {
		return err
	}

	if c, err = next(ctx); err != nil {
		return err
	}
	if !c.Edit {
		return fail(errors.New("bench: worker: expected the edit command"))
	}
	ed, err := w.edit(ctx)
	if err != nil {
		return fail(err)
	}
	if err := enc.Encode(convergeReply{Edited: &ed}); err != nil {
		return err
	}

	if c, err = next(ctx); err != nil {
		return err
	}
	if c.Target == nil {
		return fail(errors.New("bench: worker: expected the target command"))
	}
	f, err := w.finish(ctx, c.Target)
	if err != nil {
		return fail(err)
	}
	if err := enc.Encode(convergeReply{Final: &f}); err != nil {
		return err
	}
	// Keep the clients connected until the parent has measured the
	// server; it then closes our stdin.
	c, err = next(ctx)
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("bench: worker: unexpected command after the final report: %+v", c)
	}
	return err
}

// convergeShare is one process's share of a run as the parent drives it:
// this process's own worker or a child process.
type convergeShare interface {
	edit(ctx context.Context) (convergeEdited, error)
	finish(ctx context.Context, target []crdt.VersionVector) (convergeFinal, error)
}

// convergeChild is a worker process.
type convergeChild struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	enc     *gob.Encoder
	replies chan convergeReply
	quit    chan struct{} // closed by stop: the reader stops delivering
	exited  chan struct{} // closed once the process has exited; err is then set
	err     error
	stderr  *tailBuffer
}

// startConvergeChild starts `binary bench converge-worker` and sends it cfg.
// gogc > 0 becomes the child's GOGC.
func startConvergeChild(binary string, cfg convergeWorkerConfig, gogc int) (*convergeChild, error) {
	var env []string
	if gogc > 0 {
		env = []string{"GOGC=" + strconv.Itoa(gogc)}
	}
	cmd := childCommand(binary, env, "bench", "converge-worker")
	pipes, err := startChild(cmd, true, 8<<10)
	if err != nil {
		return nil, fmt.Errorf("bench: start worker %s: %w", binary, err)
	}
	stdin, stdout := pipes.stdin, pipes.stdout
	c := &convergeChild{
		cmd: cmd, stdin: stdin, enc: gob.NewEncoder(stdin), stderr: pipes.stderr,
		replies: make(chan convergeReply), quit: make(chan struct{}), exited: make(chan struct{}),
	}
	go func() {
		dec := gob.NewDecoder(bufio.NewReader(stdout))
		for {
			var r convergeReply
			if err := dec.Decode(&r); err != nil {
				break
			}
			select {
			case c.replies <- r:
			case <-c.quit:
			}
		}
		io.Copy(io.Discard, stdout)
		c.err = cmd.Wait()
		close(c.exited)
	}()
	if err := c.enc.Encode(convergeCmd{Config: &cfg}); err != nil {
		c.stop()
		return nil, fmt.Errorf("bench: send the worker its config: %w", err)
	}
	return c, nil
}

// reply waits for the child's next report, at most timeout.
func (c *convergeChild) reply(ctx context.Context, timeout time.Duration) (convergeReply, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-c.replies:
		if r.Err != "" {
			return r, fmt.Errorf("bench: worker %d: %s", c.cmd.Process.Pid, r.Err)
		}
		return r, nil
	case <-c.exited:
		return convergeReply{}, fmt.Errorf("bench: worker %d exited: %v\n%s", c.cmd.Process.Pid, c.err, c.stderr.String())
	case <-t.C:
		return convergeReply{}, fmt.Errorf("bench: worker %d did not report within %v\n%s", c.cmd.Process.Pid, timeout, c.stderr.String())
	case <-ctx.Done():
		return convergeReply{}, ctx.Err()
	}
}

// ready waits until every client of the child has synced.
func (c *convergeChild) ready(ctx context.Context) error {
	r, err := c.reply(ctx, 90*time.Second)
	if err == nil && !r.Ready {
		err = fmt.Errorf("bench: worker %d: expected ready, got %+v", c.cmd.Process.Pid, r)
	}
	return err
}

func (c *convergeChild) edit(ctx context.Context, cfg convergeWorkerConfig) (convergeEdited, error) {
	if err := c.enc.Encode(convergeCmd{Edit: true}); err != nil {
		return convergeEdited{}, fmt.Errorf("bench: worker %d: %w", c.cmd.Process.Pid, err)
	}
	r, err := c.reply(ctx, cfg.Duration+cfg.Settle+30*time.Second)
	if err == nil && r.Edited == nil {
		err = fmt.Errorf("bench: worker %d: expected its edits, got %+v", c.cmd.Process.Pid, r)
	}
	if err != nil {
		return convergeEdited{}, err
	}
	return *r.Edited, nil
}

func (c *convergeChild) finish(ctx context.Context, cfg convergeWorkerConfig, target []crdt.VersionVector) (convergeFinal, error) {
	if err := c.enc.Encode(convergeCmd{Target: target}); err != nil {
		return convergeFinal{}, fmt.Errorf("bench: worker %d: %w", c.cmd.Process.Pid, err)
	}
	r, err := c.reply(ctx, cfg.Settle+30*time.Second)
	if err == nil && r.Final == nil {
		err = fmt.Errorf("bench: worker %d: expected its final report, got %+v", c.cmd.Process.Pid, r)
	}
	if err != nil {
		return convergeFinal{}, err
	}
	return *r.Final, nil
}

// stop closes the child's stdin, which ends it, and kills it if it has not
// exited 10 seconds later.
func (c *convergeChild) stop() {
	close(c.quit)
	c.stdin.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// childShare drives a child as a convergeShare.
type childShare struct {
	c   *convergeChild
	cfg convergeWorkerConfig
}

func (s childShare) edit(ctx context.Context) (convergeEdited, error) { return s.c.edit(ctx, s.cfg) }
func (s childShare) finish(ctx context.Context, target []crdt.VersionVector) (convergeFinal, error) {
	return s.c.finish(ctx, s.cfg, target)
}
