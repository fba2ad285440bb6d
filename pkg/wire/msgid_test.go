package wire

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGatewayMsgID(t *testing.T) {
	k1, k2 := NewMsgIDKey(), NewMsgIDKey()
	id := GatewayMsgID(k1, "veh-1", []byte("a"), []byte("b"))
	for _, c := range []struct {
		name string
		got  string
		same bool
	}{
		{"same inputs (a resend)", GatewayMsgID(k1, "veh-1", []byte("a"), []byte("b")), true},
		{"another key", GatewayMsgID(k2, "veh-1", []byte("a"), []byte("b")), false},
		{"another vehicle", GatewayMsgID(k1, "veh-2", []byte("a"), []byte("b")), false},
		{"parts joined differently", GatewayMsgID(k1, "veh-1", []byte("ab"), []byte("")), false},
		{"another part", GatewayMsgID(k1, "veh-1", []byte("a"), []byte("c")), false},
	} {
		if (c.got == id) != c.same {
			t.Errorf("%s: %q vs %q, same = %v", c.name, c.got, id, c.same)
		}
	}
	if !strings.HasPrefix(id, "veh-1-g") || len(id) != len("veh-1-g")+32 || !MsgIDOwnedBy(id, "veh-1") {
		t.Errorf("id %q: want veh-1-g and 32 hex digits, owned by veh-1", id)
	}
}

func TestMsgIDOwnedBy(t *testing.T) {
	for _, c := range []struct {
		id, vehicle string
		want        bool
	}{
		{"", "veh-1", true},
		{"veh-1-0a1b2c", "veh-1", true},
		{"veh-1-", "veh-1", true},
		{"veh-1", "veh-1", false},
		{"veh-10-0a1b", "veh-1", false},
		{"veh-2-0a1b", "veh-1", false},
		{"xveh-1-0a1b", "veh-1", false},
	} {
		if got := MsgIDOwnedBy(c.id, c.vehicle); got != c.want {
			t.Errorf("MsgIDOwnedBy(%q, %q) = %v, want %v", c.id, c.vehicle, got, c.want)
		}
	}
}

func TestMsgIDKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msgid.key")
	k, err := LoadOrCreateMsgIDKey(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateMsgIDKey(path)
	if err != nil || !bytes.Equal(k, again) {
		t.Fatalf("reloaded key differs: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	for _, bad := range []string{"zz", "00ff", ""} {
		if _, err := ParseMsgIDKey(bad); err == nil {
			t.Errorf("ParseMsgIDKey(%q) accepted", bad)
		}
	}
}
