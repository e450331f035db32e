package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

func init() {
	register(command{
		name:    "health",
		summary: "check that a local weft serve answers /healthz (for container health checks)",
		run:     runHealth,
	})
}

// runHealth asks /healthz of the server that `weft serve` with the same
// flags or environment would run: it reads --listen and --tls-cert (so
// WEFT_LISTEN and WEFT_TLS_CERT) as serve does. It exists because the
// container image has no shell and no curl.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft health", stderr)
	listen := fs.String("listen", "127.0.0.1:7420", "the address weft serve listens on (its --listen)")
	tlsCert := fs.String("tls-cert", "", "set when weft serve has --tls-cert: ask over HTTPS (the certificate is not verified: this is a local probe)")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on the request")
	// Flags serve takes that do not matter here are still accepted from
	// the environment by name, so one environment serves both commands.
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	host := *listen
	if strings.HasPrefix(host, ":") || strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, "[::]:") {
		host = "127.0.0.1" + host[strings.LastIndex(host, ":"):]
	}
	scheme := "http"
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *tlsCert != "" {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // a probe of our own process, by address
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+host+"/healthz", nil)
	if err != nil {
		fmt.Fprintf(stderr, "weft health: %v\n", err)
		return 2
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "weft health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "weft health: %s: %d %s\n", req.URL, resp.StatusCode, strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", req.URL, strings.TrimSpace(string(body)))
	return 0
}
