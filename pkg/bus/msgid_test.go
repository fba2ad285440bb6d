package bus

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// A message whose Nats-Msg-Id is not its subject's vehicle's is refused before decoding,
// in a service's own delivery and in a shared one alike.
func TestForeignMsgIDIsRefused(t *testing.T) {
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
			for _, shared := range []bool{false, true} {
				m := Msg{Subject: UpSubject("veh-1", KindAlarm), Data: data, Header: nats.Header{}}
				if c.id != "" {
					m.Header.Set(jetstream.MsgIDHeader, c.id)
				}
				if shared {
					batch := []Msg{m}
					decodeOnce(batch)
					m = batch[0]
				}
				recs, _, err := m.DecodeBatch("veh-1")
				if c.foreign {
					if !errors.Is(err, wire.ErrForeignMsgID) || len(recs) != 0 || wire.Reason(err) != "foreign_msg_id" {
						t.Errorf("shared=%v: got %d records, %v; want foreign_msg_id", shared, len(recs), err)
					}
				} else if err != nil || len(recs) != 1 {
					t.Errorf("shared=%v: got %d records, %v; want the record", shared, len(recs), err)
				}
			}
		})
	}
}
