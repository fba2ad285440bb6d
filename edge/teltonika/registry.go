package teltonika

import (
	"context"
	"fmt"
	"sync"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Registry tells the gateway which vehicle a device speaks for. It is consulted on every
// TCP handshake and every UDP datagram; a device it does not know (or one revoked) is
// refused. ok=false with a nil error means "unknown or revoked"; an error means the
// registry could not answer, and the device is refused too (it retries later).
type Registry interface {
	Lookup(ctx context.Context, imei string) (vehicle string, ok bool, err error)
}

// MemoryRegistry is a Registry held in memory: the all-in-one's simulated devices and
// tests. Safe for concurrent use.
type MemoryRegistry struct {
	mu      sync.RWMutex
	devices map[string]string // IMEI → vehicle
	revoked map[string]bool
}

// NewMemoryRegistry returns an empty registry.
func NewMemoryRegistry() *MemoryRegistry {
	return &MemoryRegistry{devices: make(map[string]string), revoked: make(map[string]bool)}
}

// Add registers imei for vehicle (replacing an earlier entry and any revocation).
func (m *MemoryRegistry) Add(imei, vehicle string) error {
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		return fmt.Errorf("device %s: %w", imei, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices[imei] = vehicle
	delete(m.revoked, imei)
	return nil
}

// Revoke refuses imei from now on; sessions already open are not closed by it.
func (m *MemoryRegistry) Revoke(imei string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked[imei] = true
}

// Lookup implements Registry.
func (m *MemoryRegistry) Lookup(_ context.Context, imei string) (string, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.devices[imei]
	if !ok || m.revoked[imei] {
		return "", false, nil
	}
	return v, true, nil
}

// Len is the number of registered devices (revoked ones included).
func (m *MemoryRegistry) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.devices)
}
