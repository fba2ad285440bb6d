package teltonika

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFileRegistry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.txt")
	reg, err := NewFileRegistry(path, quiet())
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	reg.ReloadEvery = 0
	lookup := func(imei string) (string, bool) {
		t.Helper()
		v, ok, err := reg.Lookup(context.Background(), imei)
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		return v, ok
	}
	if _, ok := lookup(knownIMEI); ok {
		t.Fatalf("empty registry knows %s", knownIMEI)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		// A new modification time even on file systems with coarse timestamps.
		mt := time.Now().Add(time.Duration(len(s)) * time.Second)
		_ = os.Chtimes(path, mt, mt)
	}
	write("# fleet\n" + knownIMEI + " veh-00042\n356307042441014=veh-00043 # trailing comment\n")
	tests := []struct {
		imei, want string
		ok         bool
	}{
		{knownIMEI, "veh-00042", true},
		{"356307042441014", "veh-00043", true},
		{unknownIMEI, "", false},
	}
	for _, tt := range tests {
		if v, ok := lookup(tt.imei); v != tt.want || ok != tt.ok {
			t.Errorf("%s: got %q %v, want %q %v", tt.imei, v, ok, tt.want, tt.ok)
		}
	}
	// Removing a line revokes the device; a malformed file keeps the last good content.
	write(knownIMEI + " veh-00042\n")
	if _, ok := lookup("356307042441014"); ok {
		t.Errorf("removed device still known")
	}
	write(knownIMEI + " veh.bad\n")
	if v, ok := lookup(knownIMEI); !ok || v != "veh-00042" {
		t.Errorf("after a malformed edit: got %q %v, want the last good veh-00042", v, ok)
	}
}

func TestParseDevices(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  bool
	}{
		{"good", "356307042441013 veh-1\n\n# c\n", false},
		{"bad imei", "35630704244101x veh-1", true},
		{"bad vehicle", "356307042441013 veh.1", true},
		{"three fields", "356307042441013 veh-1 extra", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDevices([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Errorf("got %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
