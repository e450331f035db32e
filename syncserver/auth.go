package syncserver

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/weftsync/weft/crdt/syncproto"
)

// ErrUnauthorized wraps every authentication failure: a missing, malformed,
// forged or expired token.
var ErrUnauthorized = errors.New("syncserver: unauthorized")

// Access is the right a token grants on a document.
type Access uint8

const (
	// AccessNone: the document is not covered by the token.
	AccessNone Access = iota
	// AccessRead: subscribe, read over HTTP, follow events, send presence.
	AccessRead
	// AccessWrite: everything AccessRead allows, plus submitting changes.
	AccessWrite
)

func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	}
	return "none"
}

// Grant gives Access to the documents whose id matches Pattern (path.Match
// syntax: `*` matches any run of characters except '/', so "notes/*"
// covers "notes/42" but not "notes/a/b"; "*" alone covers ids without '/').
type Grant struct {
	Pattern string `json:"pattern"`
	Access  string `json:"access"` // "read" or "write"
}

// Claims are the JWT claims of an access token (see docs/PROTOCOL.md): sub
// is the user id, exp is required.
type Claims struct {
	Name  string  `json:"name,omitempty"`
	Color string  `json:"color,omitempty"`
	Docs  []Grant `json:"docs"`
	jwt.RegisteredClaims
}

// Principal is an authenticated user.
type Principal struct {
	User      string // token sub; "anonymous" in insecure mode without a token
	Name      string
	Color     string
	Anonymous bool
	// Expires is the token's exp (zero for anonymous): a connection or
	// event stream authenticated with it is closed then.
	Expires time.Time
	grants  []grant
}

type grant struct {
	pattern string
	access  Access
}

// Access returns the best right the principal's grants give on doc.
func (p *Principal) Access(doc string) Access {
	if p.Anonymous {
		return AccessWrite
	}
	best := AccessNone
	for _, g := range p.grants {
		// Patterns were validated when the token was parsed, so Match cannot
		// fail here.
		if ok, _ := path.Match(g.pattern, doc); ok && g.access > best {
			best = g.access
		}
	}
	return best
}

func parseAccess(s string) (Access, error) {
	switch s {
	case "read":
		return AccessRead, nil
	case "write":
		return AccessWrite, nil
	}
	return AccessNone, fmt.Errorf("access %q is neither read nor write", s)
}

func checkGrant(g Grant) (grant, error) {
	a, err := parseAccess(g.Access)
	if err != nil {
		return grant{}, err
	}
	if g.Pattern == "" {
		return grant{}, errors.New("empty document pattern")
	}
	if _, err := path.Match(g.Pattern, ""); err != nil {
		return grant{}, fmt.Errorf("document pattern %q: %v", g.Pattern, err)
	}
	return grant{pattern: g.Pattern, access: a}, nil
}

// ParseGrants parses the `weft token --docs` syntax: comma-separated
// PATTERN:ACCESS pairs, e.g. "notes/*:write,readme:read". A pair without
// ":ACCESS" grants write.
func ParseGrants(spec string) ([]Grant, error) {
	var out []Grant
	var errs []error
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		g := Grant{Pattern: part, Access: "write"}
		if i := strings.LastIndexByte(part, ':'); i >= 0 {
			g = Grant{Pattern: part[:i], Access: part[i+1:]}
		}
		if _, err := checkGrant(g); err != nil {
			errs = append(errs, fmt.Errorf("syncserver: grant %q: %w", part, err))
			continue
		}
		out = append(out, g)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("syncserver: no document grants")
	}
	return out, nil
}

// MintToken signs claims with secret (HS256). It is what `weft token` and
// tests use; the claims must name a subject, an expiry and valid grants.
func MintToken(secret []byte, c Claims) (string, error) {
	var errs []error
	if len(secret) == 0 {
		errs = append(errs, errors.New("syncserver: empty token secret"))
	}
	if c.Subject == "" {
		errs = append(errs, errors.New("syncserver: token without subject (user)"))
	}
	if c.Subject == ServerPrincipal {
		errs = append(errs, fmt.Errorf("syncserver: the subject %q is reserved for servers' own replicas", ServerPrincipal))
	}
	if c.ExpiresAt == nil {
		errs = append(errs, errors.New("syncserver: token without expiry"))
	}
	for _, g := range c.Docs {
		if _, err := checkGrant(g); err != nil {
			errs = append(errs, fmt.Errorf("syncserver: grant %+v: %w", g, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	if c.IssuedAt == nil {
		c.IssuedAt = jwt.NewNumericDate(time.Now())
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// authenticator verifies tokens.
type authenticator struct {
	secret   []byte
	insecure bool
	now      func() time.Time
	// audience and issuer, when not empty, must be the token's aud (one
	// of its values) and iss.
	audience string
	issuer   string
}

// ServerPrincipal is the owner a server gives, in the claims it sends its
// cluster peers, to its own replica (Options.Replica, the one its JSON
// edits are made as), which no principal may write with. No token may
// carry it as its subject, so a peer that recorded it refuses that
// replica to everyone.
const ServerPrincipal = "weft:server"

var anonymous = &Principal{User: "anonymous", Name: "anonymous", Anonymous: true}

// authenticate turns a token into a principal. An empty token is accepted
// only in insecure mode.
func (a *authenticator) authenticate(token string) (*Principal, error) {
	if token == "" {
		if a.insecure {
			return anonymous, nil
		}
		return nil, fmt.Errorf("%w: no token", ErrUnauthorized)
	}
	if len(a.secret) == 0 {
		return nil, fmt.Errorf("%w: a token was presented but the server has no secret to verify it", ErrUnauthorized)
	}
	var c Claims
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.now),
	}
	if a.audience != "" {
		opts = append(opts, jwt.WithAudience(a.audience))
	}
	if a.issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.issuer))
	}
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.secret, nil }, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: token has no subject", ErrUnauthorized)
	}
	if c.Subject == ServerPrincipal {
		return nil, fmt.Errorf("%w: the subject %q is reserved for servers' own replicas", ErrUnauthorized, ServerPrincipal)
	}
	if len(c.Subject) > syncproto.MaxNameLen {
		return nil, fmt.Errorf("%w: subject longer than %d bytes", ErrUnauthorized, syncproto.MaxNameLen)
	}
	// Name and color travel in presence, whose strings are bounded.
	p := &Principal{User: c.Subject, Name: clip(c.Name, syncproto.MaxNameLen), Color: clip(c.Color, syncproto.MaxNameLen),
		Expires: c.ExpiresAt.Time}
	for _, g := range c.Docs {
		pg, err := checkGrant(g)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		p.grants = append(p.grants, pg)
	}
	if p.Name == "" {
		p.Name = p.User
	}
	return p, nil
}

// clip truncates s to at most max bytes without splitting a rune.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
