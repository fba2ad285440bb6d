package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// natsLogger adapts nats-server's Logger interface (server/log.go) to slog, so the
// embedded server's warnings and errors reach the process's log with everything else.
//
// Notices (the start banner, "server is ready") go to debug: the process logs its own
// "embedded nats started" line, and a dozen banner lines at info would bury it. Trace
// (every protocol message) is never enabled.
//
// Refused logins (a storm of made-up device ids is one line each, twice over) are logged at
// most once per loginLogEvery, with the number refused since the last line.
type natsLogger struct {
	log    *slog.Logger
	logins *loginLimiter
}

type loginLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const loginLogEvery = 10 * time.Second

func (l natsLogger) emit(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	msg := fmt.Sprintf(format, v...)
	if l.logins != nil && (strings.Contains(msg, "authentication error") || strings.Contains(msg, "Auth callout service returned an error")) {
		l.logins.mu.Lock()
		now := time.Now()
		if now.Sub(l.logins.last) < loginLogEvery {
			l.logins.suppressed++
			l.logins.mu.Unlock()
			return
		}
		n := l.logins.suppressed
		l.logins.last, l.logins.suppressed = now, 0
		l.logins.mu.Unlock()
		l.log.Log(ctx, level, msg, "refused_logins_not_logged", n)
		return
	}
	l.log.Log(ctx, level, msg)
}

func (l natsLogger) Noticef(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }
func (l natsLogger) Warnf(format string, v ...any)   { l.emit(slog.LevelWarn, format, v) }
func (l natsLogger) Errorf(format string, v ...any)  { l.emit(slog.LevelError, format, v) }
func (l natsLogger) Debugf(format string, v ...any)  { l.emit(slog.LevelDebug, format, v) }
func (l natsLogger) Tracef(format string, v ...any)  { l.emit(slog.LevelDebug-4, format, v) }

// Fatalf is called by the server when it cannot go on. nats-server's own logger exits the
// process here; a library must not, so the message is logged as an error and the failure
// reaches the caller through the bus's next operation.
func (l natsLogger) Fatalf(format string, v ...any) {
	l.log.Log(context.Background(), slog.LevelError, "fatal: "+fmt.Sprintf(format, v...))
}
