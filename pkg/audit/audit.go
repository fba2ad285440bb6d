// Package audit keeps the trail of every mutating gRPC call — commands, alert
// acknowledgements, zones, plans, the vehicle registry, devices and tokens — in a
// JetStream stream that refuses message deletion and purging, and serves it through
// fleet.v1.AuditService. "Who" in a record is always the authenticated principal.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/auth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Stream is the audit stream; Subject is where records are published. (The audit subject
// is not a device or service subject, so it lives here rather than in pkg/bus.)
const (
	Stream  = "FLEET_AUDIT"
	Subject = "fleet.audit.rec"
)

// MaxRequestBytes bounds the request JSON kept per record: a zone's GeoJSON (up to 60 KiB)
// is summarised, its full text stays in the zones bucket's history.
const MaxRequestBytes = 8 << 10

// StreamConfig is the audit stream's retention.
type StreamConfig struct {
	MaxAge   time.Duration // default 400 days: a year of history plus a margin
	MaxBytes int64         // default 1 GiB
	Replicas int
	Memory   bool // tests
}

// JetStream is what the audit trail needs of NATS: a *bus.Bus (which serialises
// provisioning) or a jetstream.JetStream.
type JetStream interface {
	CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// EnsureStream creates or updates the audit stream. DenyDelete and DenyPurge make the
// server refuse to remove records through the JetStream API; only age and size limits
// retire them. Deleting the whole stream is an account-level permission (docs/security.md).
func EnsureStream(ctx context.Context, js JetStream, cfg StreamConfig) error {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 400 * 24 * time.Hour
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	sc := jetstream.StreamConfig{
		Name: Stream, Description: "Fleetwire audit trail: every mutating gRPC call",
		Subjects: []string{"fleet.audit.>"}, MaxAge: cfg.MaxAge, MaxBytes: cfg.MaxBytes,
		Replicas: cfg.Replicas, DenyDelete: true, DenyPurge: true, Discard: jetstream.DiscardOld,
	}
	if cfg.Memory {
		sc.Storage = jetstream.MemoryStorage
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	return nil
}

// Recorder appends records to the stream. It implements auth.Auditor.
type Recorder struct {
	js      JetStream
	log     *slog.Logger
	written prometheus.Counter
	failed  prometheus.Counter
}

// NewRecorder returns a recorder publishing on js.
func NewRecorder(js JetStream, log *slog.Logger, reg prometheus.Registerer) *Recorder {
	r := &Recorder{
		js: js, log: log,
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetwire_audit_records_total", Help: "Audit records written."}),
		failed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetwire_audit_failures_total", Help: "Audit records that could not be written (logged at error level)."}),
	}
	if err := metrics.Register(reg, r.written, r.failed); err != nil {
		log.Error("audit metrics not registered", "err", err)
	}
	return r
}

// Record writes one entry. The call it describes has already happened, so a failure to
// write is not returned to the caller: it is logged at error level with the whole record
// (so the log keeps it) and counted.
func (r *Recorder) Record(ctx context.Context, e auth.Entry) {
	rec := ToProto(e)
	data, err := protojson.Marshal(rec)
	if err == nil {
		// The call's own context may already be cancelled by a departing client; the record
		// must still be written.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, err = r.js.Publish(pctx, Subject, data)
		cancel()
	}
	if err != nil {
		r.failed.Inc()
		r.log.Error("audit record not written", "err", err, "principal", rec.GetPrincipal(), "method", rec.GetMethod(), "peer", rec.GetPeer(), "code", rec.GetCode())
		return
	}
	r.written.Inc()
}

// ToProto converts an entry.
func ToProto(e auth.Entry) *fleetv1.AuditRecord {
	rec := &fleetv1.AuditRecord{Time: timestamppb.New(e.Time), Peer: e.Peer, Method: e.Method, Code: status.Code(e.Err).String()}
	if p := e.Principal; p != nil {
		rec.Principal, rec.Role, rec.Auth = p.Name, fleetv1.Role(p.Role), p.Via
	}
	if e.Err != nil {
		rec.Error = auth.TruncateN(status.Convert(e.Err).Message(), 512)
	}
	if e.Request != nil {
		if b, err := protojson.Marshal(e.Request); err == nil {
			rec.Request = auth.TruncateN(string(b), MaxRequestBytes)
		}
	}
	return rec
}

// Reader reads the trail.
type Reader struct {
	js JetStream
}

// NewReader returns a reader on js.
func NewReader(js JetStream) *Reader { return &Reader{js: js} }

// maxScan bounds the records one List call examines when filtering by principal.
const maxScan = 10_000

// List returns up to limit records after sequence after, oldest first, optionally of one
// principal, and the last sequence examined.
func (r *Reader) List(ctx context.Context, after uint64, limit int, principal string) ([]*fleetv1.AuditRecord, uint64, error) {
	s, err := r.js.Stream(ctx, Stream)
	if err != nil {
		return nil, after, fmt.Errorf("audit stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, after, fmt.Errorf("audit stream: %w", err)
	}
	last := info.State.LastSeq
	seq := max(after+1, info.State.FirstSeq)
	var out []*fleetv1.AuditRecord
	for scanned := 0; seq <= last && len(out) < limit && scanned < maxScan; seq++ {
		scanned++
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, after, fmt.Errorf("audit record %d: %w", seq, err)
		}
		var rec fleetv1.AuditRecord
		if err := protojson.Unmarshal(m.Data, &rec); err != nil {
			continue
		}
		rec.Seq = seq
		if principal != "" && !strings.EqualFold(rec.GetPrincipal(), principal) {
			continue
		}
		out = append(out, proto.CloneOf(&rec))
	}
	// seq-1 is the last sequence examined: the next page starts after it.
	return out, max(after, seq-1), nil
}
