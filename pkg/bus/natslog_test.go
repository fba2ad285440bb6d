package bus

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is written by the server's goroutines and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The embedded server's own log lines reach the process's slog handler, marked as coming
// from the server.
func TestEmbeddedServerLogsThroughSlog(t *testing.T) {
	var out syncBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{URL: Embedded, ListenPort: -1}, log)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	got := out.String()
	for _, want := range []string{`"from":"nats-server"`, "Server is ready"} {
		if !strings.Contains(got, want) {
			t.Errorf("log output lacks %q; got:\n%s", want, got)
		}
	}
}
