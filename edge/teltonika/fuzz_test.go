package teltonika

import (
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// FuzzPacketToBatch runs any AVL body the decoder accepts through the IO mapping and the
// platform's wire format: whatever a device can make the gateway store must decode on the
// services' side with every record intact.
func FuzzPacketToBatch(f *testing.F) {
	for _, v := range []string{vecV5} {
		b := mustHex(f, v)
		f.Add(b[8 : len(b)-4])
	}
	body, _ := codec.AppendBody(nil, codec.Codec8E, []codec.Record{{TimestampMs: 1795334400000, Satellites: 5, Lat: 1, IO: []codec.IO{
		{ID: 249, Size: 1, Value: 2}, {ID: 16, Size: 4, Value: 1e6}, {ID: 281, Raw: []byte("P0301")}, {ID: 32, Size: 1, Value: 0xF0},
	}}})
	f.Add(body)
	var p codec.Packet
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := p.Decode(body); err != nil {
			return
		}
		var recs []telemetry.Record
		for i := range p.Records {
			if ts := p.Records[i].TimestampMs; ts < 0 || ts > maxTimestampMs {
				continue // refused by the gateway before publishing (store)
			}
			recs = append(recs, telemetry.Record{})
			toRecord("veh-fuzz", &p.Records[i], &recs[len(recs)-1])
		}
		if len(recs) == 0 {
			return
		}
		data, err := wire.EncodeBatch("veh-fuzz", time.Unix(0, 0), recs)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if len(data) > wire.MaxMessageBytes {
			return // the gateway splits such packets before publishing
		}
		got, bad, err := wire.DecodeBatch("veh-fuzz", data, false)
		if err != nil || len(bad) > 0 || len(got) != len(recs) {
			t.Fatalf("services would refuse: %v %v (%d of %d records)", err, bad, len(got), len(recs))
		}
	})
}
