package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/natstest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openDevices(t *testing.T, js natsauth.KeyValues) *natsauth.Devices {
	t.Helper()
	d, err := natsauth.OpenDevices(testCtx(t), js, 1, quietLog())
	if err != nil {
		t.Fatalf("OpenDevices: %v", err)
	}
	return d
}

func TestDeviceLifecycle(t *testing.T) {
	b := natstest.Bus(t)
	ctx := testCtx(t)
	d := openDevices(t, b)

	dev, secret, err := d.Add(ctx, natsauth.Device{ID: "veh-1", Model: "fmb920", Protocol: "teltonika"}, "admin")
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if dev.State != natsauth.DeviceActive || dev.By != "admin" || dev.Created.IsZero() || len(secret) < 43 {
		t.Fatalf("Add = %+v, secret of %d chars; want active, by admin, created, a 32-byte secret", dev, len(secret))
	}
	if _, _, err := d.Add(ctx, natsauth.Device{ID: "veh-1"}, "admin"); !errors.Is(err, natsauth.ErrDeviceExists) {
		t.Fatalf("second Add: %v, want ErrDeviceExists", err)
	}
	if _, err := d.Verify(ctx, "veh-1", secret); err != nil {
		t.Fatalf("Verify with the issued secret: %v", err)
	}
	if _, err := d.Verify(ctx, "veh-1", secret+"x"); !errors.Is(err, natsauth.ErrBadSecret) {
		t.Fatalf("Verify with a wrong secret: %v, want ErrBadSecret", err)
	}
	if _, err := d.Verify(ctx, "veh-2", secret); !errors.Is(err, natsauth.ErrDeviceNotFound) {
		t.Fatalf("Verify of an unknown id: %v, want ErrDeviceNotFound", err)
	}

	// The bucket holds a hash, never the secret.
	kv, err := natstest.JetStream(t, b).KeyValue(ctx, natsauth.DevicesBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "veh-1")
	if err != nil {
		t.Fatal(err)
	}
	if contains(string(e.Value()), secret) {
		t.Fatalf("stored record %s contains the secret", e.Value())
	}

	rot, secret2, err := d.Rotate(ctx, "veh-1", "ops")
	if err != nil || secret2 == secret || rot.By != "ops" {
		t.Fatalf("Rotate = %+v, %v; want a new secret by ops", rot, err)
	}
	if _, err := d.Verify(ctx, "veh-1", secret); !errors.Is(err, natsauth.ErrBadSecret) {
		t.Fatalf("old secret after Rotate: %v, want ErrBadSecret", err)
	}
	if _, err := d.Verify(ctx, "veh-1", secret2); err != nil {
		t.Fatalf("new secret after Rotate: %v", err)
	}

	rev, err := d.Revoke(ctx, "veh-1", "ops")
	if err != nil || rev.State != natsauth.DeviceRevoked || rev.Revoked.IsZero() {
		t.Fatalf("Revoke = %+v, %v", rev, err)
	}
	if _, err := d.Verify(ctx, "veh-1", secret2); !errors.Is(err, natsauth.ErrDeviceRevoked) {
		t.Fatalf("Verify after Revoke: %v, want ErrDeviceRevoked", err)
	}
	if got, _ := d.Get(ctx, "veh-1"); got.State.String() != "revoked" {
		t.Fatalf("Get after Revoke: state %s", got.State)
	}
	if _, err := d.Revoke(ctx, "nope", "ops"); !errors.Is(err, natsauth.ErrDeviceNotFound) {
		t.Fatalf("Revoke unknown: %v", err)
	}
	// Rotating a revoked device re-provisions it.
	_, secret3, err := d.Rotate(ctx, "veh-1", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Verify(ctx, "veh-1", secret3); err != nil {
		t.Fatalf("Verify after re-provisioning: %v", err)
	}

	// A second registry on another connection (another instance) sees every change.
	other := openDevices(t, natstest.Client(t, b))
	if _, err := other.Verify(ctx, "veh-1", secret3); err != nil {
		t.Fatalf("second instance Verify: %v", err)
	}
	if _, err := d.Revoke(ctx, "veh-1", "ops"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := other.Verify(ctx, "veh-1", secret3)
		return errors.Is(err, natsauth.ErrDeviceRevoked)
	}, "revocation to reach the second instance")
}

func TestDeviceIDsAreValidated(t *testing.T) {
	b := natstest.Bus(t)
	ctx := testCtx(t)
	d := openDevices(t, b)
	for _, id := range []string{"", "a.b", "*", ">", "veh 1", "veh\n", string(make([]byte, 65))} {
		if _, _, err := d.Add(ctx, natsauth.Device{ID: id}, "admin"); !errors.Is(err, natsauth.ErrInvalidDeviceID) {
			t.Errorf("Add(%q): %v, want ErrInvalidDeviceID", id, err)
		}
		if _, err := d.Get(ctx, id); !errors.Is(err, natsauth.ErrInvalidDeviceID) {
			t.Errorf("Get(%q): %v, want ErrInvalidDeviceID", id, err)
		}
	}
	if _, _, err := d.Add(ctx, natsauth.Device{ID: "ok", Model: "bad\nmodel"}, "admin"); !errors.Is(err, natsauth.ErrBadDeviceField) {
		t.Errorf("Add with a control character in the model: %v", err)
	}
}

func TestDeviceListPages(t *testing.T) {
	b := natstest.Bus(t)
	ctx := testCtx(t)
	d := openDevices(t, b)
	const n = 25
	for i := n - 1; i >= 0; i-- {
		if _, _, err := d.Add(ctx, natsauth.Device{ID: fmt.Sprintf("v%03d", i)}, "admin"); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	cursor, pages := "", 0
	for {
		page, next, err := d.List(ctx, cursor, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, dev := range page {
			got = append(got, dev.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != n || pages != 3 {
		t.Fatalf("listed %d devices in %d pages, want %d in 3", len(got), pages, n)
	}
	for i, id := range got {
		if want := fmt.Sprintf("v%03d", i); id != want {
			t.Fatalf("device %d is %s, want %s (sorted by id)", i, id, want)
		}
	}
	// A full last page ends with an empty cursor too.
	page, next, _ := d.List(ctx, "v014", 10)
	if len(page) != 10 || next != "" {
		t.Fatalf("last full page: %d devices, next %q; want 10 and \"\"", len(page), next)
	}
}

func TestEnsureKeepsRevocation(t *testing.T) {
	b := natstest.Bus(t)
	ctx := testCtx(t)
	d := openDevices(t, b)
	secret := natsauth.NewDeviceSecret()
	if _, err := d.Ensure(ctx, natsauth.Device{ID: "sim-1", Model: "fleetsim"}, secret, "bootstrap"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Verify(ctx, "sim-1", secret); err != nil {
		t.Fatalf("Verify of an ensured device: %v", err)
	}
	if _, err := d.Revoke(ctx, "sim-1", "ops"); err != nil {
		t.Fatal(err)
	}
	dev, err := d.Ensure(ctx, natsauth.Device{ID: "sim-1", Model: "fleetsim"}, secret, "bootstrap")
	if err != nil || dev.State != natsauth.DeviceRevoked {
		t.Fatalf("Ensure of a revoked device = %+v, %v; want it left revoked", dev, err)
	}
}

func TestWatchSeesRevocation(t *testing.T) {
	b := natstest.Bus(t)
	ctx := testCtx(t)
	d := openDevices(t, b)
	if _, _, err := d.Add(ctx, natsauth.Device{ID: "w1"}, "admin"); err != nil {
		t.Fatal(err)
	}
	ch, err := d.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Revoke(ctx, "w1", "ops"); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-ch:
		if c.Device.ID != "w1" || c.Device.State != natsauth.DeviceRevoked {
			t.Fatalf("watch delivered %+v, want w1 revoked", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no change delivered for the revocation")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
