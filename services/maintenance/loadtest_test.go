package maintenance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Records of a load-test vehicle leave no state; the same records of a live vehicle do.
func TestLoadTestVehiclesAreSkipped(t *testing.T) {
	s := newTestService(t, DefaultConfig())
	ctx := context.Background()
	t0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	var batch []bus.Msg
	for _, v := range []string{telemetry.LoadTestPrefix + "run1-0001", "van-1"} {
		recs := []telemetry.Record{rec(v, t0, odo(1000), ign(true), dtcs("P0217")), rec(v, t0.Add(time.Minute), odo(1001), ign(true))}
		data, err := wire.EncodeBatch(v, t0, recs)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, bus.Msg{Subject: bus.UpSubject(v, bus.KindTelemetry), Data: data, Time: t0, StreamSeq: uint64(len(batch) + 1), Delivered: 1})
	}
	if err := s.handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VehicleHealth(ctx, "van-1"); err != nil {
		t.Fatalf("live vehicle: %v", err)
	}
	if _, err := s.VehicleHealth(ctx, telemetry.LoadTestPrefix+"run1-0001"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load-test vehicle: got %v, want ErrNotFound (no state kept)", err)
	}
}
