// Command goclient is the Go side of clients/ts's cross-language
// convergence test (test/crosslang.test.ts): a clients/go client that
// edits documents at random, going offline between rounds (its edits then
// wait in its Dir), and at the end waits until the server holds them all.
// With --dump it instead prints each document as the Go client sees it
// once synced, as JSON. It lives under testdata so that `go build ./...`
// leaves it out; the test builds it with `go build`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
)

func main() {
	url := flag.String("url", "", "server WebSocket URL")
	dead := flag.String("offline-url", "ws://127.0.0.1:1/v1/ws", "URL that refuses connections (offline rounds)")
	dir := flag.String("dir", "", "client directory (replica and offline edits)")
	docs := flag.String("docs", "", "comma-separated document ids")
	seed := flag.Uint64("seed", 1, "random seed")
	rounds := flag.Int("rounds", 6, "rounds of edits")
	edits := flag.Int("edits", 15, "edits per document per round")
	dump := flag.Bool("dump", false, "print the documents as JSON once synced, and exit")
	flag.Parse()
	if err := run(*url, *dead, *dir, strings.Split(*docs, ","), *seed, *rounds, *edits, *dump); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

var alphabet = []string{"g", "o", " ", "é", "😀", "中"}

func run(url, dead, dir string, ids []string, seed uint64, rounds, edits int, dump bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if dump {
		return dumpDocs(ctx, url, ids)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for round := 0; round <= rounds; round++ {
		offline := round%3 == 1 && round < rounds
		o := client.LocalOptions(url)
		if offline {
			o.URL = dead
		}
		o.Dir = dir
		c, err := client.New(o)
		if err != nil {
			return err
		}
		var open []*client.Document
		for _, id := range ids {
			d, err := c.Open(id, client.DocOptions{})
			if err != nil {
				c.Close()
				return err
			}
			open = append(open, d)
		}
		if round < rounds {
			for k := 0; k < edits; k++ {
				for _, d := range open {
					if err := d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error { return randomEdit(rng, tx, doc) }); err != nil {
						c.Close()
						return err
					}
				}
				// Edits spread over time, as typing is, so that they
				// interleave with the other clients'.
				time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond)
			}
		}
		if !offline {
			for _, d := range open {
				if err := d.WaitSaved(ctx); err != nil {
					c.Close()
					return fmt.Errorf("round %d: %s: %w", round, d.ID(), err)
				}
			}
		}
		if err := c.Close(); err != nil {
			return err
		}
	}
	return nil
}

func randomEdit(rng *rand.Rand, tx *crdt.Tx, doc *crdt.Doc) error {
	n := doc.TextLen("body")
	switch k := rng.IntN(10); {
	case k < 6 || n == 0:
		return tx.Insert("body", rng.IntN(n+1), alphabet[rng.IntN(len(alphabet))])
	case k < 9:
		pos := rng.IntN(n)
		return tx.Delete("body", pos, 1+rng.IntN(min(2, n-pos)))
	default:
		return tx.Add("likes", int64(1+rng.IntN(3)))
	}
}

func dumpDocs(ctx context.Context, url string, ids []string) error {
	c, err := client.Dial(ctx, client.LocalOptions(url))
	if err != nil {
		return err
	}
	defer c.Close()
	out := map[string]map[string]any{}
	for _, id := range ids {
		d, err := c.Open(id, client.DocOptions{})
		if err != nil {
			return err
		}
		for !d.Synced() {
			select {
			case <-d.Changed():
			case <-ctx.Done():
				return fmt.Errorf("%s: not synced: %w", id, ctx.Err())
			}
		}
		out[id] = map[string]any{"text": d.Text("body"), "likes": fmt.Sprint(d.Counter("likes"))}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
