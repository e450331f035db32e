package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

const testServeSecret = "serve-test-secret-0123456789"

// startServe runs `weft serve` in-process and returns its URL and a stop
// function that cancels it (as SIGTERM would) and returns its exit code.
func startServe(t *testing.T, args ...string) (string, func() int) {
	t.Helper()
	return startServeScheme(t, "http", args...)
}

func startServeScheme(t *testing.T, scheme string, args ...string) (string, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- runServe(ctx, args, pw, &stderr)
		pw.Close()
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var first string
	select {
	case first = <-lines:
	case c := <-code:
		t.Fatalf("weft serve exited with %d: %s", c, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("weft serve printed nothing")
	}
	m := regexp.MustCompile(`^weft serving (` + scheme + `://127\.0\.0\.1:\d+) \(data .+\)$`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("start line %q", first)
	}
	stopped := false
	stop := func() int {
		stopped = true
		cancel()
		select {
		case c := <-code:
			for extra := range lines {
				t.Errorf("weft serve printed more than one line: %q", extra)
			}
			return c
		case <-time.After(30 * time.Second):
			t.Fatal("weft serve did not stop")
			return -1
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	return m[1], stop
}

func mintToken(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if c := runToken(context.Background(), args, &out, &errb); c != 0 {
		t.Fatalf("weft token %v: exit %d: %s", args, c, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func TestServePersistsAcrossRestartAndStopsCleanly(t *testing.T) {
	t.Setenv(envName("secret"), testServeSecret) // from the environment
	dir := t.TempDir()
	url, stop := startServe(t, "--listen", "127.0.0.1:0", "--data", dir, "--log-level", "warn")
	tok := mintToken(t, "--secret", testServeSecret, "--user", "u", "--docs", "notes/*:write", "--ttl", "1h")

	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := d.Begin()
	if err := tx.Insert("body", 0, "durable"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", url+"/v1/docs/notes/1/changes", bytes.NewReader(codec.EncodeChanges(d.ChangesSince(nil))))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if c := stop(); c != 0 {
		t.Fatalf("exit code %d after a clean stop", c)
	}

	url, stop = startServe(t, "--listen", "127.0.0.1:0", "--data", dir)
	req, _ = http.NewRequest("GET", url+"/v1/docs/notes/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Text map[string]string }
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.Text["body"] != "durable" {
		t.Fatalf("after restart: %v %+v", err, doc)
	}
	// A token outside its grants is refused.
	other := mintToken(t, "--secret", testServeSecret, "--user", "u", "--docs", "other:read")
	req, _ = http.NewRequest("GET", url+"/v1/docs/notes/1", nil)
	req.Header.Set("Authorization", "Bearer "+other)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign grant: %d", resp.StatusCode)
	}
	if c := stop(); c != 0 {
		t.Fatalf("exit code %d", c)
	}
}

func TestServeBadConfiguration(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
	}{
		"no secret":       {nil, []string{"--data", ":memory:"}},
		"short secret":    {nil, []string{"--data", ":memory:", "--secret", "short"}},
		"bad env value":   {map[string]string{"WEFT_MAX_FRAME": "lots"}, []string{"--insecure", "--data", ":memory:"}},
		"bad flag":        {nil, []string{"--no-such-flag"}},
		"stray argument":  {nil, []string{"--insecure", "extra"}},
		"negative budget": {nil, []string{"--insecure", "--data", ":memory:", "--memory-budget", "-1"}},
		"bad log level":   {nil, []string{"--insecure", "--data", ":memory:", "--log-level", "chatty"}},
		"bad listen addr": {nil, []string{"--insecure", "--data", ":memory:", "--listen", "256.0.0.1:1"}},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if c := runServe(context.Background(), tc.args, &out, &errb); c == 0 {
				t.Fatalf("exit 0; stderr %s", errb.String())
			}
			if out.Len() != 0 {
				t.Fatalf("printed %q on failure", out.String())
			}
			if errb.Len() == 0 {
				t.Fatal("no explanation on stderr")
			}
		})
	}
}

func TestServeHelpDocumentsEveryFlagAndItsEnv(t *testing.T) {
	var out, errb bytes.Buffer
	if c := runServe(context.Background(), []string{"--help"}, &out, &errb); c != 0 {
		t.Fatalf("--help exit %d", c)
	}
	help := out.String()
	for _, f := range []string{"listen", "data", "secret", "insecure", "allow-origin", "memory-budget", "idle-timeout", "max-frame", "max-conns"} {
		if !strings.Contains(help, "--"+f) || !strings.Contains(help, envName(f)) {
			t.Errorf("help lacks --%s or %s", f, envName(f))
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"65536": 65536, "64KiB": 64 << 10, "1 GiB": 1 << 30, "3MB": 3 << 20, "0": 0} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d %v, want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1TiB", "99999999999GiB"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	b := byteSize(64 << 20)
	if b.String() != "64MiB" {
		t.Errorf("String %q", b.String())
	}
}

func TestTokenCommand(t *testing.T) {
	tok := mintToken(t, "--secret", testServeSecret, "--user", "ann", "--name", "Ann", "--docs", "a/*:read,b")
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("not a JWT: %q", tok)
	}
	var out, errb bytes.Buffer
	if c := runToken(context.Background(), []string{"--user", "x", "--docs", "a:admin"}, &out, &errb); c != 2 {
		t.Fatalf("bad grant and no secret: exit %d", c)
	}
	if !strings.Contains(errb.String(), "--secret") || !strings.Contains(errb.String(), "admin") {
		t.Fatalf("errors not all reported: %s", errb.String())
	}
}

// A bad flag is reported by its name, before the data directory is
// touched: the store is not even created.
func TestServeValidatesFlagsBeforeOpeningTheStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var out, errb bytes.Buffer
	c := runServe(context.Background(), []string{"--data", dir, "--secret", "short", "--max-conns", "-3", "--changes-burst", "-1", "--wal-sync-interval", "2s"}, &out, &errb)
	if c != 2 {
		t.Fatalf("exit %d, want 2; stderr %s", c, errb.String())
	}
	msg := errb.String()
	for _, want := range []string{"--secret must be at least 16 bytes", "--max-conns must be ≥ 1", "--changes-burst", "--wal-sync-interval 2s: must be at most 1s"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "Options.") || strings.Contains(msg, "syncserver:") {
		t.Errorf("stderr names Go identifiers:\n%s", msg)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data directory was created before the flags were checked: %v", err)
	}
}

func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeSelfSignedCert(t, certFile, keyFile)

	var out, errb bytes.Buffer
	if c := runServe(context.Background(), []string{"--insecure", "--data", ":memory:", "--tls-cert", certFile}, &out, &errb); c != 2 || !strings.Contains(errb.String(), "--tls-key") {
		t.Fatalf("--tls-cert alone: exit %d, %s", c, errb.String())
	}
	errb.Reset()
	if c := runServe(context.Background(), []string{"--insecure", "--data", ":memory:", "--tls-cert", keyFile, "--tls-key", certFile}, &out, &errb); c != 2 || !strings.Contains(errb.String(), "--tls-cert/--tls-key") {
		t.Fatalf("swapped files: exit %d, %s", c, errb.String())
	}

	url, stop := startServeScheme(t, "https", "--listen", "127.0.0.1:0", "--insecure", "--data", ":memory:", "--tls-cert", certFile, "--tls-key", keyFile)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("GET /healthz over TLS: %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP to the TLS port is not served.
	if resp, err := http.Get(strings.Replace(url, "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
	if c := stop(); c != 0 {
		t.Fatalf("exit %d", c)
	}
}

// writeSelfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns a pool that trusts it.
func writeSelfSignedCert(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "weft test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// The README's token example: a secret the server refuses is refused by
// weft token too, with the same rule.
func TestTokenRefusesASecretTheServerRefuses(t *testing.T) {
	var out, errb bytes.Buffer
	if c := runToken(context.Background(), []string{"--secret", "S", "--user", "ann", "--docs", "*:write"}, &out, &errb); c != 2 {
		t.Fatalf("one-byte secret: exit %d, stdout %q", c, out.String())
	}
	if out.Len() != 0 || !strings.Contains(errb.String(), "--secret must be at least 16 bytes") {
		t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
	}
	errb.Reset()
	if c := runServe(context.Background(), []string{"--data", ":memory:", "--secret", "0123456789abcde"}, &out, &errb); c != 2 {
		t.Fatalf("serve took a 15-byte secret: exit %d", c)
	}
	mintToken(t, "--secret", "0123456789abcdef", "--user", "ann", "--docs", "*:write")
}

// TestServeClusterFlags: clustering flags are checked before anything
// starts, with the flag named in the error.
func TestServeClusterFlags(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"gossip without key":  {[]string{"--gossip", "127.0.0.1:0"}, "--cluster-key is required"},
		"short key":           {[]string{"--gossip", "127.0.0.1:0", "--cluster-key", base64.StdEncoding.EncodeToString([]byte("short"))}, "32 bytes, got 5"},
		"key not base64":      {[]string{"--gossip", "127.0.0.1:0", "--cluster-key", "!!"}, "not base64"},
		"join without gossip": {[]string{"--join", "127.0.0.1:7946"}, "--join needs --gossip"},
		"ack delay too long":  {[]string{"--gossip", "127.0.0.1:0", "--cluster-key", key, "--peer-ack-delay", "1s"}, "--peer-ack-delay must be between 0 and 100ms, got 1s"},
		"ack delay alone":     {[]string{"--peer-ack-delay", "5ms"}, "--peer-ack-delay needs --gossip"},
		"negative ack-peers":  {[]string{"--gossip", "127.0.0.1:0", "--cluster-key", key, "--ack-peers", "-1"}, "--ack-peers must be ≥ 0"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"--insecure", "--data", ":memory:"}, tc.args...)
			if c := runServe(context.Background(), args, &out, &errb); c != 2 {
				t.Fatalf("exit %d; stderr %s", c, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("stderr %q lacks %q", errb.String(), tc.want)
			}
		})
	}
}

// TestServeCluster: two `weft serve --gossip` join, /readyz and `weft
// cluster members` list both, and a change posted to one is served by the
// other.
func TestServeCluster(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	g1, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	url1, _ := startServe(t, "--insecure", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--gossip", g1, "--peer-listen", "127.0.0.1:0", "--cluster-key", key)
	url2, _ := startServe(t, "--insecure", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0",
		"--cluster-key", key, "--join", g1)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out, errb bytes.Buffer
		c := runCluster(context.Background(), []string{"members", "--server", url2}, &out, &errb)
		if c == 0 && strings.Count(out.String(), "alive") == 2 && strings.Contains(out.String(), "up") {
			resp, err := http.Get(url1 + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Count(string(body), "member ") == 2 && strings.Contains(string(body), "link=up") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("members: exit %d %q %q", c, out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := d.Begin()
	if err := tx.Insert("body", 0, "across the cluster"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url1+"/v1/docs/c1/changes", "application/octet-stream", bytes.NewReader(codec.EncodeChanges(d.ChangesSince(nil))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %s", resp.Status)
	}
	for {
		resp, err := http.Get(url2 + "/v1/docs/c1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "across the cluster") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 2 serves %s", b)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	var out, errb bytes.Buffer
	if c := runCluster(context.Background(), []string{"members", "--server", url1}, &out, &errb); c != 0 || !strings.Contains(out.String(), "(this node)") {
		t.Fatalf("members: %d %q %s", c, out.String(), errb.String())
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
func TestHealthCommand(t *testing.T) {
	url, stop := startServe(t, "--listen", "127.0.0.1:0", "--insecure", "--data", ":memory:")
	addr := strings.TrimPrefix(url, "http://")
	var out, errb bytes.Buffer
	if c := runHealth(context.Background(), []string{"--listen", addr}, &out, &errb); c != 0 || !strings.Contains(out.String(), "ok") {
		t.Fatalf("health of a live server: exit %d, %q %q", c, out.String(), errb.String())
	}
	// The environment serve reads works for health too.
	t.Setenv("WEFT_LISTEN", "0.0.0.0:"+addr[strings.LastIndex(addr, ":")+1:])
	out.Reset()
	if c := runHealth(context.Background(), nil, &out, &errb); c != 0 {
		t.Fatalf("health from WEFT_LISTEN: exit %d, %q", c, errb.String())
	}
	if c := stop(); c != 0 {
		t.Fatalf("exit %d", c)
	}
	errb.Reset()
	if c := runHealth(context.Background(), []string{"--listen", addr}, &out, &errb); c != 1 || errb.Len() == 0 {
		t.Fatalf("health of a stopped server: exit %d, %q", c, errb.String())
	}
}

// TestPeerAckDelayFlag: --peer-ack-delay reaches cluster.Options, 0
// meaning every ack at once (a negative AckDelay there) rather than the
// default.
func TestPeerAckDelayFlag(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for flagValue, want := range map[string]time.Duration{"": 2 * time.Millisecond, "0": -1, "5ms": 5 * time.Millisecond} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cf := addClusterFlags(fs)
		args := []string{"--gossip", "127.0.0.1:0", "--cluster-key", key}
		if flagValue != "" {
			args = append(args, "--peer-ack-delay", flagValue)
		}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		o, on, err := cf.options()
		if err != nil || !on {
			t.Fatalf("--peer-ack-delay %q: on %v, %v", flagValue, on, err)
		}
		if o.AckDelay != want {
			t.Errorf("--peer-ack-delay %q: AckDelay %v, want %v", flagValue, o.AckDelay, want)
		}
	}
}
