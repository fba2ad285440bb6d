// Package grpctest serves gRPC services for tests the way the binaries do: a
// pkg/grpcserver server on a real loopback socket, dialled by a real client. It is the
// one set-up every edge test uses, beside natstest and redistest.
package grpctest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
