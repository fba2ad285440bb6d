package natsauth

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nkeys"
)

type recordingKicker struct {
	mu   sync.Mutex
	cids []uint64
}

func (k *recordingKicker) Kick(_ context.Context, _ string, cid uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cids = append(k.cids, cid)
	return nil
}

// The registry watch may deliver a device's creation after the device has already logged
// in with its first secret; only a change that invalidates the credential a connection
// used may disconnect it.
func TestResponderDisconnectsOnlyInvalidatedLogins(t *testing.T) {
	oldHash, newHash := hashHex("old")[:16], hashHex("new")[:16]
	active := Device{ID: "veh-1", State: DeviceActive}
	revoked := Device{ID: "veh-1", State: DeviceRevoked}
	tests := []struct {
		name   string
		change Change
		kicked []uint64
		kept   int
	}{
		{"creation seen after the login", Change{Device: active, SecretHash: oldHash}, nil, 2},
		{"rotation", Change{Device: active, SecretHash: newHash}, []uint64{1, 2}, 0},
		{"revocation", Change{Device: revoked, SecretHash: oldHash}, []uint64{1, 2}, 0},
		{"removal", Change{Device: Device{ID: "veh-1"}, Deleted: true}, []uint64{1, 2}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seed := accountSeed(t)
			k := &recordingKicker{}
			r, err := NewResponder(ResponderConfig{Devices: &Devices{}, IssuerSeed: seed, Kicker: k})
			if err != nil {
				t.Fatal(err)
			}
			r.remember("veh-1", clientRef{server: "S", cid: 1, secret: oldHash})
			r.remember("veh-1", clientRef{server: "S", cid: 2, secret: oldHash})
			r.disconnect(context.Background(), tt.change)
			if !slices.Equal(k.cids, tt.kicked) {
				t.Errorf("kicked %v, want %v", k.cids, tt.kicked)
			}
			if got := len(r.conns["veh-1"]); got != tt.kept {
				t.Errorf("%d logins remembered, want %d", got, tt.kept)
			}
		})
	}
}

func accountSeed(t *testing.T) []byte {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}
