package teltonika

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
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

// FileRegistry is a Registry read from a text file of "IMEI vehicle-id" lines ('#'
// starts a comment), re-read when the file changes (checked at most once per
// ReloadEvery), so registering a device is appending a line and revoking it is removing
// the line. It stands in until a platform-wide device registry exists.
type FileRegistry struct {
	path string
	// ReloadEvery bounds how often the file's modification time is checked.
	ReloadEvery time.Duration
	log         *slog.Logger

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	devices map[string]string
}

// NewFileRegistry reads path (a missing file is an empty registry, created later).
func NewFileRegistry(path string, log *slog.Logger) (*FileRegistry, error) {
	f := &FileRegistry{path: path, ReloadEvery: time.Second, log: log, devices: map[string]string{}}
	if err := f.reload(time.Now()); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the file the registry reads.
func (f *FileRegistry) Path() string { return f.path }

// Lookup implements Registry.
func (f *FileRegistry) Lookup(_ context.Context, imei string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= f.ReloadEvery {
		if err := f.reload(now); err != nil {
			// Keep serving the last good content; a half-written file must not lock out
			// every device.
			f.log.Warn("teltonika device file not reloaded", "path", f.path, "err", err)
		}
	}
	v, ok := f.devices[imei]
	return v, ok, nil
}

// reload re-reads the file when its size or modification time changed. Called with f.mu
// held (or before f is shared).
func (f *FileRegistry) reload(now time.Time) error {
	f.checked = now
	st, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		f.devices, f.modTime, f.size = map[string]string{}, time.Time{}, 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("device file: %w", err)
	}
	if st.ModTime().Equal(f.modTime) && st.Size() == f.size {
		return nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("device file: %w", err)
	}
	devices, err := ParseDevices(data)
	if err != nil {
		return fmt.Errorf("device file %s: %w", f.path, err)
	}
	f.devices, f.modTime, f.size = devices, st.ModTime(), st.Size()
	return nil
}

// ParseDevices reads "IMEI vehicle-id" lines (also "IMEI=vehicle-id"); blank lines and
// '#' comments are skipped. A malformed line is an error naming it.
func ParseDevices(data []byte) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		fields := strings.Fields(strings.ReplaceAll(line, "=", " "))
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"IMEI vehicle-id\", got %q", i+1, strings.TrimSpace(line))
		}
		if _, err := codec.CheckIMEI([]byte(fields[0])); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if err := telemetry.ValidVehicleID(fields[1]); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		out[fields[0]] = fields[1]
	}
	return out, nil
}

// Registries consults each registry in turn; the first that knows the device answers.
type Registries []Registry

// Lookup implements Registry.
func (rs Registries) Lookup(ctx context.Context, imei string) (string, bool, error) {
	var firstErr error
	for _, r := range rs {
		v, ok, err := r.Lookup(ctx, imei)
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if ok {
			return v, true, nil
		}
	}
	return "", false, firstErr
}
