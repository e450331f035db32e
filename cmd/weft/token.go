package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/weftsync/weft/syncserver"
)

func init() {
	register(command{
		name:    "token",
		summary: "mint an access token (HS256 JWT) for a user and document patterns",
		run:     runToken,
	})
}

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft token", stderr)
	secret := fs.String("secret", "", "HS256 secret the server verifies tokens with (the server's --secret; at least 16 bytes)")
	user := fs.String("user", "", "user id (the token's sub claim)")
	name := fs.String("name", "", "display name shown in presence (default: the user id)")
	color := fs.String("color", "", "presence color, e.g. #e91e63")
	docs := fs.String("docs", "", "comma-separated PATTERN:ACCESS grants, e.g. 'notes/*:write,readme:read' (path.Match patterns; access read or write)")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token")
	audience := fs.String("audience", "", "aud claim (the server's --token-audience, if it sets one)")
	issuer := fs.String("issuer", "", "iss claim (the server's --token-issuer, if it sets one)")
	fs.Usage = func() {
		flagUsage(fs, "weft token --secret S --user U --docs 'notes/*:write,x:read' [--ttl 24h]",
			"Prints a signed access token for `weft serve --secret S`.")
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	var problems []string
	switch {
	case *secret == "":
		problems = append(problems, "--secret is required")
	case len(*secret) < syncserver.MinSecretBytes:
		// The server would refuse to start with it: a token signed with
		// it could never be used.
		problems = append(problems, fmt.Sprintf("--secret must be at least %d bytes (as for weft serve), got %d", syncserver.MinSecretBytes, len(*secret)))
	}
	if *user == "" {
		problems = append(problems, "--user is required")
	}
	if *ttl <= 0 {
		problems = append(problems, "--ttl must be positive")
	}
	grants, err := syncserver.ParseGrants(*docs)
	if err != nil {
		problems = append(problems, "--docs: "+err.Error())
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "weft token:", p)
		}
		return 2
	}
	now := time.Now()
	var aud jwt.ClaimStrings
	if *audience != "" {
		aud = jwt.ClaimStrings{*audience}
	}
	tok, err := syncserver.MintToken([]byte(*secret), syncserver.Claims{
		Name:  *name,
		Color: *color,
		Docs:  grants,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   *user,
			Issuer:    *issuer,
			Audience:  aud,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(*ttl)),
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "weft token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
