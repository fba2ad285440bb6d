// Package grpctest serves gRPC services for tests the way the binaries do: a
// pkg/grpcserver server on a real loopback socket, dialled by a real client. It is the
// one set-up every edge test uses, beside natstest and redistest.
package grpctest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
)

// Serve registers services on a new server listening on 127.0.0.1, serves it until the
// test ends and returns a connection to it.
func Serve(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	gs := grpcserver.New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatalf("grpctest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ctx, 5*time.Second) }()
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatalf("grpctest: dial %s: %v", gs.Addr(), err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		<-done
	})
	return conn
}

// Secure is a server as the binaries run it: TLS with a development CA, and pkg/auth's
// guard in front of every call, verifying bearer tokens from a JetStream token bucket.
type Secure struct {
	Tokens *auth.Tokens
	addr   string
	pool   *x509.CertPool
}

// ServeSecure registers services on a TLS server with the guard, serves it until the test
// ends and returns it; Dial connects with a token.
func ServeSecure(t testing.TB, js auth.KeyValues, register func(*grpc.Server)) *Secure {
	t.Helper()
	creds, err := auth.EnsureDevCredentials(filepath.Join(t.TempDir(), "credentials"))
	if err != nil {
		t.Fatalf("grpctest: %v", err)
	}
	tlsCfg, err := auth.ServerTLS(creds.CertFile, creds.KeyFile, "")
	if err != nil {
		t.Fatalf("grpctest: %v", err)
	}
	pool, err := auth.LoadPool(creds.CAFile)
	if err != nil {
		t.Fatalf("grpctest: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	tokens, err := auth.OpenTokens(ctx, js, 1, log)
	if err != nil {
		cancel()
		t.Fatalf("grpctest: %v", err)
	}
	gs := grpcserver.NewServer(log, nil, grpcserver.Config{TLS: tlsCfg, Guard: auth.NewGuard(auth.Config{Tokens: tokens, Log: log})})
	register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		cancel()
		t.Fatalf("grpctest: %v", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ctx, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &Secure{Tokens: tokens, addr: gs.Addr(), pool: pool}
}

// Token creates a token for role and returns its secret.
func (s *Secure) Token(t testing.TB, role auth.Role) string {
	t.Helper()
	_, secret, err := s.Tokens.Create(context.Background(), "test-"+role.String(), role, nil, time.Hour, "grpctest")
	if err != nil {
		t.Fatalf("grpctest: token: %v", err)
	}
	return secret
}

// Dial connects over TLS (verifying the server against the development CA) and sends
// token as "authorization: Bearer <token>" with every call; "" sends none.
func (s *Secure) Dial(t testing.TB, token string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: s.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(s.addr, opts...)
	if err != nil {
		t.Fatalf("grpctest: dial %s: %v", s.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// AuthCase is one call made over TLS under a token of Role, and the code it must end with.
// A call the guard lets through reaches the service, so its code is the service's own
// answer (NotFound for a made-up id, say): that tells "allowed" from "refused".
type AuthCase struct {
	Name string
	Role auth.Role
	Call func(ctx context.Context, conn *grpc.ClientConn) error
	Want codes.Code
}

// CheckAuth runs what every secured edge must show: read, made with no credentials and
// with a well-formed but unknown token, is Unauthenticated; then each case, under one
// token per role (created once, on first use).
func (s *Secure) CheckAuth(t *testing.T, read func(ctx context.Context, conn *grpc.ClientConn) error, cases []AuthCase) {
	t.Helper()
	conns := map[auth.Role]*grpc.ClientConn{}
	as := func(c AuthCase) *grpc.ClientConn {
		if conn, ok := conns[c.Role]; ok {
			return conn
		}
		conns[c.Role] = s.Dial(t, s.Token(t, c.Role))
		return conns[c.Role]
	}
	check := func(name string, conn func() *grpc.ClientConn, call func(context.Context, *grpc.ClientConn) error, want codes.Code) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if got := status.Code(call(ctx, conn())); got != want {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
	check("no credentials", func() *grpc.ClientConn { return s.Dial(t, "") }, read, codes.Unauthenticated)
	check("wrong token", func() *grpc.ClientConn { return s.Dial(t, "fwt_0123456789abcdef_"+strings.Repeat("x", 43)) }, read, codes.Unauthenticated)
	for _, c := range cases {
		check(c.Name, func() *grpc.ClientConn { return as(c) }, c.Call, c.Want)
	}
}
