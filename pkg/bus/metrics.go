package bus

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"
)

// ConsumerMetrics describes what the consumers did, labelled by durable name (a bounded
// set: services × partitions). Register it once per process.
type ConsumerMetrics struct {
	Messages    *prometheus.CounterVec   // messages processed and acknowledged
	Batches     *prometheus.CounterVec   // handler calls
	Failures    *prometheus.CounterVec   // handler errors (batches retried)
	Redelivered *prometheus.CounterVec   // deliveries the server made more than once
	Gaps        *prometheus.CounterVec   // lost deliveries detected (consumer reset)
	DeadLetters *prometheus.CounterVec   // messages moved to the dead-letter stream
	Unconfirmed *prometheus.CounterVec   // acknowledgements the server did not confirm
	Pending     *prometheus.GaugeVec     // stream messages not yet delivered
	AckFloorLag *prometheus.GaugeVec     // stream messages behind the last acknowledged one
	Delay       *prometheus.HistogramVec // record age when applied: store time to ack
}

// EventMetrics counts events per source service.
type EventMetrics struct {
	Published  *prometheus.CounterVec // events stored, by source and kind
	Duplicates *prometheus.CounterVec // events already emitted earlier (not stored again)
}

// NewConsumerMetrics creates the consumer metrics and registers them with reg (may be nil).
// A metric already registered (a second bus in one process) is shared, not an error.
func NewConsumerMetrics(reg prometheus.Registerer) (*ConsumerMetrics, error) {
	d := []string{"durable"}
	m := &ConsumerMetrics{
		Messages:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_messages_total", Help: "Messages processed and acknowledged, by durable consumer."}, d),
		Batches:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_batches_total", Help: "Batches handed to handlers."}, d),
		Failures:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_handler_failures_total", Help: "Batches a handler failed; they are retried."}, d),
		Redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_redelivered_total", Help: "Deliveries the server made more than once."}, d),
		Gaps:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_delivery_gaps_total", Help: "Lost deliveries detected; the consumer was reset to its first unprocessed message."}, d),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_dead_letters_total", Help: "Messages moved to the dead-letter stream."}, d),
		Unconfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_bus_acks_unconfirmed_total", Help: "Acknowledgements the server did not confirm in time."}, d),
		Pending:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwire_bus_pending", Help: "Stream messages not yet delivered to the consumer."}, d),
		AckFloorLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwire_bus_ack_floor_lag", Help: "Stream messages after the consumer's last acknowledged one."}, d),
		Delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetwire_bus_processing_delay_seconds",
			Help:    "Age of a message when its batch was applied and acknowledged (stream store time to ack).",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, d),
	}
	cs := []**prometheus.CounterVec{&m.Messages, &m.Batches, &m.Failures, &m.Redelivered, &m.Gaps, &m.DeadLetters, &m.Unconfirmed}
	for _, c := range cs {
		if err := metrics.RegisterShared(reg, c); err != nil {
			return nil, err
		}
	}
	for _, g := range []**prometheus.GaugeVec{&m.Pending, &m.AckFloorLag} {
		if err := metrics.RegisterShared(reg, g); err != nil {
			return nil, err
		}
	}
	if err := metrics.RegisterShared(reg, &m.Delay); err != nil {
		return nil, err
	}
	return m, nil
}

// NewEventMetrics creates the event metrics and registers them with reg (may be nil).
func NewEventMetrics(reg prometheus.Registerer) (*EventMetrics, error) {
	l := []string{"source", "kind"}
	m := &EventMetrics{
		Published:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_events_published_total", Help: "Events stored in the event stream, by source service and kind."}, l),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_events_duplicate_total", Help: "Events not stored again because they were emitted before (a replay or a retry)."}, l),
	}
	for _, c := range []**prometheus.CounterVec{&m.Published, &m.Duplicates} {
		if err := metrics.RegisterShared(reg, c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RegisterMetrics creates the bus's consumer and event metrics and registers them with
// reg. Consumers and event publishers of this bus use them from then on.
func (b *Bus) RegisterMetrics(reg prometheus.Registerer) error {
	cm, err := NewConsumerMetrics(reg)
	if err != nil {
		return err
	}
	em, err := NewEventMetrics(reg)
	if err != nil {
		return err
	}
	b.metrics, b.events = cm, em
	return nil
}
