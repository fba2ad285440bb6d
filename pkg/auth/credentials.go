package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a credentials directory (DevCredentials).
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server-key.pem"
	AdminTokenFile = "admin.token"
)

// DevCredentials are the development credentials the all-in-one creates for itself: a
// self-signed CA, a server certificate for the loopback names signed by it, and an admin
// API token. They live in one directory (mode 0700, files 0600) and are reused across
// restarts.
type DevCredentials struct {
	Dir        string
	CAFile     string
	CertFile   string
	KeyFile    string
	TokenFile  string
	AdminToken string
	Created    bool // created by this call (first start)
}

// EnsureDevCredentials loads the credentials in dir, creating what is missing. hosts are
// extra names or addresses the server certificate must be valid for (localhost,
// 127.0.0.1 and ::1 are always included).
func EnsureDevCredentials(dir string, hosts ...string) (*DevCredentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials dir: %w", err)
	}
	c := &DevCredentials{
		Dir: dir, CAFile: filepath.Join(dir, CAFile), CertFile: filepath.Join(dir, ServerCertFile),
		KeyFile: filepath.Join(dir, ServerKeyFile), TokenFile: filepath.Join(dir, AdminTokenFile),
	}
	if !exists(c.CAFile) || !exists(filepath.Join(dir, CAKeyFile)) {
		if err := writeCA(dir); err != nil {
			return nil, err
		}
		_ = os.Remove(c.CertFile) // a new CA needs a new server certificate
		c.Created = true
	}
	if !exists(c.CertFile) || !exists(c.KeyFile) || !certCovers(c.CertFile, hosts) {
		if err := writeServerCert(dir, hosts); err != nil {
			return nil, err
		}
		c.Created = true
	}
	if !exists(c.TokenFile) {
		if err := writeSecret(c.TokenFile, []byte(NewTokenSecret()+"\n")); err != nil {
			return nil, err
		}
		c.Created = true
	}
	tok, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	c.AdminToken = strings.TrimSpace(string(tok))
	return c, nil
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func writeSecret(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writePEM(path, kind string, der []byte) error {
	return writeSecret(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}))
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	return k, der, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeCA(dir string) error {
	key, der, err := newKey()
	if err != nil {
		return fmt.Errorf("ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "Fleetwire development CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("ca certificate: %w", err)
	}
	if err := writePEM(filepath.Join(dir, CAKeyFile), "PRIVATE KEY", der); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", cert)
}

func loadCA(dir string) (*x509.Certificate, any, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load ca: %w", err)
	}
	return pair.Leaf, pair.PrivateKey, nil
}

func writeServerCert(dir string, hosts []string) error {
	return issue(dir, ServerCertFile, ServerKeyFile, pkix.Name{CommonName: "fleetwire"}, x509.ExtKeyUsageServerAuth, append([]string{"localhost", "127.0.0.1", "::1"}, hosts...))
}

// IssueClientCert signs a client certificate for mTLS with the development CA in dir:
// CN = name, OU = role, O = groups. It writes NAME.pem and NAME-key.pem into dir.
func IssueClientCert(dir, name string, role Role, groups []string) (certFile, keyFile string, err error) {
	if !nameRE.MatchString(name) {
		return "", "", ErrBadTokenName
	}
	certFile, keyFile = name+".pem", name+"-key.pem"
	err = issue(dir, certFile, keyFile, pkix.Name{CommonName: name, OrganizationalUnit: []string{role.String()}, Organization: groups}, x509.ExtKeyUsageClientAuth, nil)
	return filepath.Join(dir, certFile), filepath.Join(dir, keyFile), err
}

func issue(dir, certName, keyName string, subject pkix.Name, usage x509.ExtKeyUsage, hosts []string) error {
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	key, der, err := newKey()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", subject.CommonName, err)
	}
	if err := writePEM(filepath.Join(dir, keyName), "PRIVATE KEY", der); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, certName), "CERTIFICATE", cert)
}

func certCovers(path string, hosts []string) bool {
	pair, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+"-key.pem")
	if err != nil || pair.Leaf == nil || time.Until(pair.Leaf.NotAfter) < 24*time.Hour {
		return false
	}
	for _, h := range hosts {
		if h != "" && pair.Leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// ServerTLS is the gRPC server's TLS configuration: its certificate, and when clientCA is
// set, client certificates verified against it (optional, so bearer tokens still work).
func ServerTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pool, err := LoadPool(clientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ca bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("ca bundle " + file + ": no certificates")
	}
	return pool, nil
}
