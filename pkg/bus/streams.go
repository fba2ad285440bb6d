package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Stream names.
const (
	TelemetryStream = "FLEET_TELEMETRY"
	EventStream     = "FLEET_EVENTS"
	// DeadLetterStream keeps input a service could not process (ErrPoison), with the
	// original subject, stream sequence and error in headers, for an operator to inspect
	// and republish.
	DeadLetterStream = "FLEET_DEADLETTER"
)

// MaxMessageBytes is the largest message a device may publish (and the embedded server's
// max_payload). Larger publishes are refused by the server; the device sees the error.
// The limit belongs to the message format, so it is defined once, in wire.
const MaxMessageBytes = wire.MaxMessageBytes

// StreamConfig holds the retention limits of the streams.
type StreamConfig struct {
	Partitions      int           // telemetry partitions; fixed at creation (DefaultPartitions)
	TelemetryMaxAge time.Duration // how long raw records are kept for replay (default 7 days)
	TelemetryBytes  int64         // byte cap on the telemetry stream; oldest dropped first (default 4 GiB)
	EventMaxAge     time.Duration // how long events are kept (default 30 days)
	EventBytes      int64         // byte cap on the event stream (default 1 GiB)
	Replicas        int           // 1 for a single server, 3 for a cluster
	MemoryStorage   bool          // keep streams in memory (tests, benchmarks)
	DedupWindow     time.Duration // Nats-Msg-Id duplicate window (default 10 minutes)
}

func (c *StreamConfig) defaults() {
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.TelemetryMaxAge <= 0 {
		c.TelemetryMaxAge = 7 * 24 * time.Hour
	}
	if c.TelemetryBytes == 0 {
		c.TelemetryBytes = 4 << 30
	}
	if c.EventMaxAge <= 0 {
		c.EventMaxAge = 30 * 24 * time.Hour
	}
	if c.EventBytes == 0 {
		c.EventBytes = 1 << 30
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 10 * time.Minute
	}
}

// EnsureStreams creates or updates the telemetry and event streams. It is safe to call
// from every service instance at start-up.
func (b *Bus) EnsureStreams(ctx context.Context, cfg StreamConfig) error {
	cfg.defaults()
	storage := jetstream.FileStorage
	if cfg.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	src, dest := subjectTransform(cfg.Partitions)
	tele := jetstream.StreamConfig{
		Name:        TelemetryStream,
		Description: "Records from trackers, partitioned by vehicle",
		// Exactly two tokens after fleet.up: anything deeper has no stream, so a device
		// publishing a malformed subject gets "no responders" instead of silent storage.
		Subjects:         []string{src},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: src, Destination: dest},
		Retention:        jetstream.LimitsPolicy,
		Discard:          jetstream.DiscardOld,
		MaxAge:           cfg.TelemetryMaxAge,
		MaxBytes:         cfg.TelemetryBytes,
		MaxMsgSize:       MaxMessageBytes,
		Duplicates:       cfg.DedupWindow,
		Storage:          storage,
		Replicas:         cfg.Replicas,
	}
	evt := jetstream.StreamConfig{
		Name:        EventStream,
		Description: "Events raised by the services (status, zones, maintenance, fuel, alarms)",
		Subjects:    []string{EventWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.EventMaxAge,
		MaxBytes:    cfg.EventBytes,
		MaxMsgSize:  MaxMessageBytes,
		Duplicates:  cfg.DedupWindow,
		Storage:     storage,
		Replicas:    cfg.Replicas,
	}
	dead := jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "Input a service could not process, kept for inspection",
		Subjects:    []string{DeadLetterWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.EventMaxAge,
		MaxBytes:    cfg.EventBytes,
		MaxMsgSize:  MaxMessageBytes + 8<<10, // the original message plus its headers
		Duplicates:  cfg.DedupWindow,
		Storage:     storage,
		Replicas:    cfg.Replicas,
	}
	for _, sc := range []jetstream.StreamConfig{tele, evt, dead} {
		if _, err := b.JS.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// Partitions returns the partition count of the existing telemetry stream.
func (b *Bus) Partitions(ctx context.Context) (int, error) {
	s, err := b.JS.Stream(ctx, TelemetryStream)
	if err != nil {
		return 0, fmt.Errorf("telemetry stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("telemetry stream info: %w", err)
	}
	if t := info.Config.SubjectTransform; t != nil {
		var n int
		if _, err := fmt.Sscanf(t.Destination, inPrefix+"{{partition(%d,", &n); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("telemetry stream has no partition transform")
}
