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
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

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
