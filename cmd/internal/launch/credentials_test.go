package launch

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fleetwire/fleetwire/pkg/auth"
)

// `fleetwire credentials DIR HOST...` makes one set that separate service processes
// share: a server certificate valid for every service's host name, and a second run
// keeps what the first made.
func TestCredentialsMain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "credentials")
	var out, errOut bytes.Buffer
	if code := CredentialsMain([]string{dir, "tracking", "devices"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	token, err := os.ReadFile(filepath.Join(dir, auth.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), strings.TrimSpace(string(token))) {
		t.Fatalf("the output shows the admin token: %s", out.String())
	}
	pemData, err := os.ReadFile(filepath.Join(dir, auth.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemData)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"tracking", "devices", "localhost"} {
		if !slices.Contains(cert.DNSNames, h) {
			t.Errorf("server certificate names %v, want %s among them", cert.DNSNames, h)
		}
	}
	out.Reset()
	if code := CredentialsMain([]string{dir, "tracking", "devices"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "present") {
		t.Fatalf("second run: exit %d, %q; want the existing set kept", code, out.String())
	}
	again, _ := os.ReadFile(filepath.Join(dir, auth.AdminTokenFile))
	if !bytes.Equal(again, token) {
		t.Fatal("the second run replaced the admin token")
	}
	if code := CredentialsMain(nil, &out, &errOut); code != 2 {
		t.Fatalf("no directory: exit %d, want 2", code)
	}
}
