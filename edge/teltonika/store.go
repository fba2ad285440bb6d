package teltonika

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// ErrStore means JetStream did not acknowledge a packet's records; nothing is
// acknowledged to the device, which sends them again.
var ErrStore = errors.New("records not stored")

// maxTimestampMs is 9999-12-31T23:59:59.999Z, the last instant a protobuf Timestamp holds.
const maxTimestampMs = 253402300799999

// store publishes the records of one AVL packet of vehicle, as the vehicle's own tracker
// would, and returns once JetStream has acknowledged every one of them. Records carrying
// an alarm go to the alarm subject, the rest to the telemetry subject (docs/protocol.md).
// The message id is derived from the packet (vehicle, first timestamp, count, CRC) under the
// gateway's key, so a packet the device resends after a lost acknowledgement is dropped by
// the stream's duplicate window (the services recognise its records by device time
// anyway), and no device can predict it.
func (g *Gateway) store(ctx context.Context, vehicle string, p *codec.Packet, crc uint16, recs []telemetry.Record) ([]telemetry.Record, error) {
	start := time.Now()
	recs = recs[:0]
	for i := range p.Records {
		if ts := p.Records[i].TimestampMs; ts < 0 || ts > maxTimestampMs {
			// No service can use a record without a representable time, and the device
			// would send it again forever if the packet were refused: it is counted and
			// acknowledged with the rest.
			g.rej.Add("bad_timestamp", vehicle, fmt.Errorf("timestamp %d ms outside 1970..9999", ts))
			continue
		}
		recs = append(recs, telemetry.Record{})
		toRecord(vehicle, &p.Records[i], &recs[len(recs)-1])
	}
	// Alarm records first, each subject keeping the device's order.
	var tele, alarm []telemetry.Record
	nAlarm := 0
	for i := range recs {
		if recs[i].HasAlarm() {
			nAlarm++
		}
	}
	if nAlarm == 0 {
		tele = recs
	} else {
		alarm = make([]telemetry.Record, 0, nAlarm)
		tele = make([]telemetry.Record, 0, len(recs)-nAlarm)
		for i := range recs {
			if recs[i].HasAlarm() {
				alarm = append(alarm, recs[i])
			} else {
				tele = append(tele, recs[i])
			}
		}
	}
	// Keyed, so no device can predict (and squat) it; the same for the same packet resent.
	id := wire.GatewayMsgID(g.cfg.MsgIDKey, vehicle, []byte("teltonika"),
		strconv.AppendInt(nil, p.Records[0].TimestampMs, 10), strconv.AppendInt(nil, int64(len(p.Records)), 10),
		strconv.AppendUint(nil, uint64(crc), 10))
	ctx, cancel := context.WithTimeout(ctx, g.cfg.StoreTimeout)
	defer cancel()
	if err := g.publish(ctx, vehicle, bus.KindAlarm, id+"-a", alarm); err != nil {
		return recs, err
	}
	if err := g.publish(ctx, vehicle, bus.KindTelemetry, id+"-t", tele); err != nil {
		return recs, err
	}
	g.met.storeDur.Observe(time.Since(start).Seconds())
	return recs, nil
}

// publish stores recs on vehicle's subject of kind, split into messages under the NATS
// payload limit (a Codec 8E packet of 255 records with many elements outgrows it).
func (g *Gateway) publish(ctx context.Context, vehicle, kind, id string, recs []telemetry.Record) error {
	if len(recs) == 0 {
		return nil
	}
	data, err := wire.EncodeBatch(vehicle, time.Now(), recs)
	if err != nil {
		return fmt.Errorf("%w: encode: %v", ErrStore, err)
	}
	if len(data) > wire.MaxMessageBytes-1024 && len(recs) > 1 {
		half := len(recs) / 2
		if err := g.publish(ctx, vehicle, kind, id+".0", recs[:half]); err != nil {
			return err
		}
		return g.publish(ctx, vehicle, kind, id+".1", recs[half:])
	}
	msg := &nats.Msg{Subject: bus.UpSubject(vehicle, kind), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := g.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	return nil
}
