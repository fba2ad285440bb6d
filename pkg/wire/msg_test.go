package wire_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// A message whose Nats-Msg-Id is not its subject's vehicle's is refused before decoding.
// (pkg/bus's TestSharedDeliveryComputesOnce covers the shared delivery's single decode.)
func TestDecodeMsgRefusesForeignMsgID(t *testing.T) {
	rec := telemetry.Record{VehicleID: "veh-1", DeviceTime: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), Lat: 52.5, Lon: 13.4, FixValid: true}
	data, err := wire.EncodeBatch("veh-1", time.Now(), []telemetry.Record{rec})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, id string
		foreign  bool
	}{
		{"no id", "", false},
		{"own id", "veh-1-5f0c9d", false},
		{"gateway id", wire.GatewayMsgID(wire.NewMsgIDKey(), "veh-1", []byte("p")), false},
		{"another vehicle's id", "veh-2-5f0c9d", true},
		{"a prefix of the vehicle", "veh-1x-5f0c9d", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := bus.Msg{Subject: bus.UpSubject("veh-1", bus.KindAlarm), Data: data, Header: nats.Header{}}
			if c.id != "" {
				m.Header.Set(jetstream.MsgIDHeader, c.id)
			}
			recs, _, err := wire.DecodeMsg(&m, "veh-1")
			if c.foreign {
				if !errors.Is(err, wire.ErrForeignMsgID) || len(recs) != 0 || wire.Reason(err) != "foreign_msg_id" {
					t.Errorf("got %d records, %v; want foreign_msg_id", len(recs), err)
				}
			} else if err != nil || len(recs) != 1 {
				t.Errorf("got %d records, %v; want the record", len(recs), err)
			}
		})
	}
}

// Each call gets its own record slice: what one caller changes, the next does not see.
func TestDecodeMsgCopiesRecords(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	recs := []telemetry.Record{{VehicleID: "veh-1", DeviceTime: now, Sequence: 7}, {VehicleID: "veh-1", DeviceTime: now.Add(time.Second), Sequence: 8}}
	data, err := wire.EncodeBatch("veh-1", now, recs)
	if err != nil {
		t.Fatal(err)
	}
	m := bus.Msg{Subject: bus.UpSubject("veh-1", bus.KindTelemetry), Data: data}
	first, _, err := wire.DecodeMsg(&m, "veh-1")
	if err != nil || len(first) != 2 {
		t.Fatalf("decode: %+v, %v", first, err)
	}
	first[0].Sequence = 100
	again, _, err := wire.DecodeMsg(&m, "veh-1")
	if err != nil || len(again) != 2 || again[0].Sequence != 7 || again[1].Sequence != 8 {
		t.Errorf("second decode: %+v, %v", again, err)
	}
}
