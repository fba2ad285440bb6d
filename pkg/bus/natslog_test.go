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

// A storm of refused logins is one log line per interval, carrying the count it stands for.
func TestRefusedLoginsAreLoggedOncePerInterval(t *testing.T) {
	var buf syncBuffer
	l := natsLogger{log: slog.New(slog.NewTextHandler(&buf, nil)), logins: &loginLimiter{}}
	for i := range 1000 {
		l.Errorf("127.0.0.1:%d - cid:%d - authentication error - User %q", i, i, "ghost")
		l.Warnf("Auth callout service returned an error: unknown device or wrong secret")
	}
	l.Warnf("something else")
	out := buf.String()
	if n := strings.Count(out, "authentication error"); n != 1 {
		t.Fatalf("%d lines about refused logins, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "something else") {
		t.Fatalf("other warnings were dropped:\n%s", out)
	}
	l.logins.last = time.Now().Add(-2 * loginLogEvery)
	l.Errorf("authentication error - User %q", "ghost")
	if !strings.Contains(buf.String(), "refused_logins_not_logged=1999") {
		t.Fatalf("the next line does not carry the suppressed count:\n%s", buf.String())
	}
}
