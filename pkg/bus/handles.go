package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the platform asks of NATS, as methods of the Bus rather than its raw handles: a
// service never holds the connection or the JetStream context, so stream and bucket
// provisioning goes through one serialised path and every use is listed here.

// Conn is the client connection, for code that speaks NATS the way a device or an
// operator tool does (the protocol gateways of edge/, the simulators, tests). Services
// use the methods below instead; internal/layout rejects a service that calls Conn.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// PublishCore publishes on core NATS: at most once, nothing stored (live positions,
// commands to a connected vehicle).
func (b *Bus) PublishCore(subject string, data []byte) error {
	return b.nc.Publish(subject, data)
}

// Subscribe subscribes on core NATS.
func (b *Bus) Subscribe(subject string, h nats.MsgHandler) (*nats.Subscription, error) {
	return b.nc.Subscribe(subject, h)
}

// Flush waits up to timeout for the server to have processed everything sent so far
// (a subscription made before Flush returns receives what is published after).
func (b *Bus) Flush(timeout time.Duration) error {
	return b.nc.FlushTimeout(timeout)
}

// Request sends a core NATS request and waits for its reply.
func (b *Bus) Request(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	return b.nc.RequestWithContext(ctx, subject, data)
}

// Publish stores a message in the stream that captures subject and returns its
// acknowledgement.
func (b *Bus) Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return b.js.Publish(ctx, subject, data, opts...)
}

// PublishMsg is Publish for a message with headers.
func (b *Bus) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return b.js.PublishMsg(ctx, m, opts...)
}

// Stream looks up a stream (its info, consumers, messages).
func (b *Bus) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	return b.js.Stream(ctx, name)
}

// Consumer looks up a durable consumer.
func (b *Bus) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	return b.js.Consumer(ctx, stream, name)
}

// OrderedConsumer reads a stream in order without a durable (history queries).
func (b *Bus) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	return b.js.OrderedConsumer(ctx, stream, cfg)
}

// CreateOrUpdateKeyValue provisions a key-value bucket and returns it. Provisioning is
// serialised with every other stream and bucket change of this Bus (provMu).
func (b *Bus) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	b.provMu.Lock()
	defer b.provMu.Unlock()
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// CreateOrUpdateStream provisions a stream outside the platform's own (EnsureStreams),
// such as the audit stream, serialised like every other provisioning of this Bus.
func (b *Bus) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	b.provMu.Lock()
	defer b.provMu.Unlock()
	s, err := b.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", cfg.Name, err)
	}
	return s, nil
}
