package bus

import (
	"context"
	"fmt"
	"log/slog"
)

// natsLogger adapts nats-server's Logger interface (server/log.go) to slog, so the
// embedded server's warnings and errors reach the process's log with everything else.
//
// Notices (the start banner, "server is ready") go to debug: the process logs its own
// "embedded nats started" line, and a dozen banner lines at info would bury it. Trace
// (every protocol message) is never enabled.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) emit(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, v...))
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
