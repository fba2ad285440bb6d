package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	TelemetryStream = "FLEET_TELEMETRY"
	EventStream     = "FLEET_EVENTS"
	// DeadLetterStream keeps input a service could not process (ErrPoison), with the
	// original subject, stream sequence and error in headers, for an operator to inspect
	// and republish.
	DeadLetterStream = "FLEET_DEADLETTER"
	// MQTTStream is nats-server's own store of MQTT QoS 1 and 2 messages. The server
	// sends an MQTT device's PUBACK once the PUBLISH is stored there, so the platform
	// creates this stream itself, with limits retention, and the telemetry stream sources
	// its fleet.up records (mqttSource): a PUBACKed record is never lost on the way to the
	// telemetry stream (docs/protocol-mqtt.md).
	MQTTStream = "$MQTT_msgs"
	// mqttMsgsPrefix is where nats-server stores a QoS 1 PUBLISH on subject S: under
	// mqttMsgsPrefix+S in MQTTStream.
	mqttMsgsPrefix = "$MQTT.msgs."
	// mqttKeep is how long MQTTStream keeps a record: the telemetry stream copies it
	// within moments, unless it has no leader; a day covers any outage worth surviving.
	mqttKeep = 24 * time.Hour
	// streamSourceHeader is set by nats-server on a message a stream took from a source.
	streamSourceHeader = "Nats-Stream-Source"
)

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
	// MaxMsgSize is the largest message the telemetry and event streams store: the
	// format's limit, wire.MaxMessageBytes (0: only the server's max_payload applies).
	// Larger publishes are refused; the device sees the error.
	MaxMsgSize int32
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

// EnsureStreams creates or updates the telemetry and event streams. The process calls
// it once at start, before its components; it holds provMu so no other provisioning of
// this Bus runs meanwhile. Other instances may run it at the same time: each converges
// on the same configuration.
func (b *Bus) EnsureStreams(ctx context.Context, cfg StreamConfig) error {
	b.provMu.Lock()
	defer b.provMu.Unlock()
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
		MaxMsgSize:       cfg.MaxMsgSize,
		Duplicates:       cfg.DedupWindow,
		Storage:          storage,
		Replicas:         cfg.Replicas,
		Sources:          []*jetstream.StreamSource{mqttSource(src, dest)},
	}
	evt := jetstream.StreamConfig{
		Name:        EventStream,
		Description: "Events raised by the services (status, zones, maintenance, fuel, alarms)",
		Subjects:    []string{EventWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.EventMaxAge,
		MaxBytes:    cfg.EventBytes,
		MaxMsgSize:  cfg.MaxMsgSize,
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
		MaxMsgSize:  deadMsgSize(cfg.MaxMsgSize),
		Duplicates:  cfg.DedupWindow,
		Storage:     storage,
		Replicas:    cfg.Replicas,
	}
	if err := b.ensureMQTTStream(ctx, cfg, storage); err != nil {
		return err
	}
	for _, sc := range []jetstream.StreamConfig{tele, evt, dead} {
		if err := b.ensureStream(ctx, sc); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream creates sc, or updates the stream when its configuration differs. Every
// process of the platform provisions the same streams when it starts, and after a NATS
// restart they all start over together; an update that changes nothing is skipped, so
// they do not send nats-server (v2.15) concurrent updates of one stream, which race
// inside the server (checkStreamCfgLocked against updateWithAdvisory). The mutex of this
// Bus serialises only its own process.
func (b *Bus) ensureStream(ctx context.Context, sc jetstream.StreamConfig) error {
	if s, err := b.js.Stream(ctx, sc.Name); err == nil && sameStreamConfig(s.CachedInfo().Config, sc) {
		return nil
	}
	if _, err := b.js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("provision stream %s: %w", sc.Name, err)
	}
	return nil
}

// sameStreamConfig reports whether the stream's configuration (have, as the server
// reports it, with its defaults filled in) already is what the platform asks (want) in
// every field the platform sets. Anything it cannot tell for sure counts as different:
// the update then runs, as it always did.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	limit := func(v int64) int64 { // the server reports an unset limit as -1
		if v <= 0 {
			return -1
		}
		return v
	}
	replicas := func(n int) int { return max(n, 1) }
	if have.Description != want.Description || !slices.Equal(have.Subjects, want.Subjects) ||
		have.Retention != want.Retention || have.Discard != want.Discard || have.MaxAge != want.MaxAge ||
		limit(have.MaxBytes) != limit(want.MaxBytes) || limit(int64(have.MaxMsgSize)) != limit(int64(want.MaxMsgSize)) ||
		have.Storage != want.Storage || replicas(have.Replicas) != replicas(want.Replicas) {
		return false
	}
	if want.Duplicates != 0 && have.Duplicates != want.Duplicates {
		return false
	}
	if (have.SubjectTransform == nil) != (want.SubjectTransform == nil) ||
		want.SubjectTransform != nil && *have.SubjectTransform != *want.SubjectTransform {
		return false
	}
	if len(have.Sources) != len(want.Sources) {
		return false
	}
	for i, w := range want.Sources {
		h := have.Sources[i]
		if h == nil || w == nil || h.Name != w.Name || h.FilterSubject != w.FilterSubject ||
			!slices.Equal(h.SubjectTransforms, w.SubjectTransforms) {
			return false
		}
	}
	return true
}

// deadMsgSize leaves room for a dead letter's headers beside the original message.
func deadMsgSize(maxMsg int32) int32 {
	if maxMsg <= 0 {
		return 0
	}
	return maxMsg + 8<<10
}

// mqttSource is the telemetry stream's source of MQTT records: what nats-server stored in
// MQTTStream for a QoS 1 PUBLISH on fleet.up.<id>.<kind>, carried into the partition the
// device's own subject maps to. The server also delivers the PUBLISH directly, and the
// telemetry stream stores that copy too; consumers skip it (MQTTDirectCopy), so each record
// is processed once, from the copy the PUBACK vouched for.
func mqttSource(src, dest string) *jetstream.StreamSource {
	return &jetstream.StreamSource{Name: MQTTStream, SubjectTransforms: []jetstream.SubjectTransformConfig{
		{Source: mqttMsgsPrefix + src, Destination: dest},
	}}
}

// ensureMQTTStream creates MQTTStream the way the telemetry stream needs it, before any
// MQTT session makes nats-server create its own: the server's has interest retention,
// which drops a stored message as soon as no MQTT subscriber wants it, before a source can
// copy it. The server uses an existing stream of that name as it is. One the server has
// already created (an MQTT device connected before this ran) is replaced: it holds only
// messages that were also delivered directly.
func (b *Bus) ensureMQTTStream(ctx context.Context, cfg StreamConfig, storage jetstream.StorageType) error {
	sc := jetstream.StreamConfig{
		Name:        MQTTStream,
		Description: "nats-server's MQTT QoS 1/2 store; the telemetry stream sources its fleet.up records",
		// All of the server's subjects: it also files the consumers of MQTT QoS 1
		// subscriptions under them.
		Subjects:  []string{mqttMsgsPrefix + ">"},
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		MaxAge:    min(mqttKeep, cfg.TelemetryMaxAge),
		MaxBytes:  MQTTStreamBytes(cfg.TelemetryBytes),
		Storage:   storage,
		Replicas:  cfg.Replicas,
	}
	if s, err := b.js.Stream(ctx, MQTTStream); err == nil {
		info := s.CachedInfo()
		if info.Config.Retention != jetstream.LimitsPolicy {
			if err := b.js.DeleteStream(ctx, MQTTStream); err != nil {
				return fmt.Errorf("replace nats-server's own %s stream (interest retention) with the platform's: %w; delete it once as the admin (nats stream rm '%s')", MQTTStream, err, MQTTStream)
			}
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %s: %w", MQTTStream, err)
	}
	return b.ensureStream(ctx, sc)
}

// MQTTStreamBytes is MQTTStream's byte cap for a telemetry stream capped at telemetryBytes
// (0: the default): an eighth of it, as the MQTT store keeps a day, not a week.
func MQTTStreamBytes(telemetryBytes int64) int64 {
	if telemetryBytes <= 0 {
		telemetryBytes = 4 << 30
	}
	return telemetryBytes / 8
}

// MQTTDirectCopy reports whether h marks the direct delivery of an MQTT QoS 1 or 2
// PUBLISH (nats-server's Nmqtt-Pub header, QoS above 0, not sourced): the telemetry
// stream also gets that record from MQTTStream, the copy the PUBACK vouched for, so the
// direct one is skipped. A QoS 0 PUBLISH has only its direct copy.
func MQTTDirectCopy(h nats.Header) bool {
	if h == nil {
		return false
	}
	q := h.Get("Nmqtt-Pub")
	return q != "" && q[0] != '0' && h.Get(streamSourceHeader) == ""
}

// Partitions returns the partition count of the existing telemetry stream.
func (b *Bus) Partitions(ctx context.Context) (int, error) {
	s, err := b.js.Stream(ctx, TelemetryStream)
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
