package natsauth

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// A service password reaches an external nats-server through an environment variable the
// rendered configuration references; the server must read it back as the same string.
func TestServicePasswordsSurviveTheServerConfigParser(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("authorization { user: svc, password: $FW_TEST_PASSWORD }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(pw string) (string, error) {
		t.Setenv("FW_TEST_PASSWORD", pw)
		o, err := server.ProcessConfigFile(conf)
		if err != nil {
			return "", err
		}
		return o.Password, nil
	}
	// Why the prefix: base64url may begin with '-' or a digit, and the parser reads such a
	// value as a number.
	for _, pw := range []string{"-kQ9x", "12345"} {
		if got, err := parse(pw); err == nil && got == pw {
			t.Fatalf("%q parsed as itself; the letter prefix may be unnecessary", pw)
		}
	}
	for i := 0; i < 500; i++ {
		pw := NewServicePassword()
		got, err := parse(pw)
		if err != nil || got != pw {
			t.Fatalf("password %q: server read %q, %v", pw, got, err)
		}
	}
}
