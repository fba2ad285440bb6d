package natsauth

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
)

// Files of a NATS development credentials directory.
const (
	IssuerSeedFile    = "callout-issuer.nk" // account nkey seed signing device logins
	DeviceSecretsFile = "devices.secrets"   // "<id> <secret>" lines of the simulated fleet
	passwordSuffix    = ".password"
)

// DevCredentials are the NATS credentials the all-in-one creates for itself in its data
// directory (mode 0700, files 0600) and reuses across restarts: a password per static
// identity and the callout issuer's nkey seed.
type DevCredentials struct {
	Dir          string
	Passwords    map[string]string // by identity name
	IssuerSeed   []byte
	IssuerPublic string
}

// PasswordFile is where user's password is kept.
func (c *DevCredentials) PasswordFile(user string) string {
	return filepath.Join(c.Dir, user+passwordSuffix)
}

// DeviceSecretsPath is the file of the simulated fleet's device secrets.
func (c *DevCredentials) DeviceSecretsPath() string { return filepath.Join(c.Dir, DeviceSecretsFile) }

// EnsureDevCredentials loads the credentials in dir, creating what is missing.
func EnsureDevCredentials(dir string, users []string) (*DevCredentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials dir: %w", err)
	}
	c := &DevCredentials{Dir: dir, Passwords: map[string]string{}}
	for _, u := range users {
		pw, err := readOrCreate(c.PasswordFile(u), func() []byte { return []byte(NewServicePassword()) })
		if err != nil {
			return nil, err
		}
		c.Passwords[u] = pw
	}
	seed, err := readOrCreate(filepath.Join(dir, IssuerSeedFile), func() []byte {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return nil
		}
		s, _ := kp.Seed()
		return s
	})
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", IssuerSeedFile, err)
	}
	c.IssuerSeed = []byte(seed)
	if c.IssuerPublic, err = kp.PublicKey(); err != nil {
		return nil, err
	}
	return c, nil
}

// readOrCreate returns the trimmed contents of path, writing make() there first (0600)
// when it does not exist.
func readOrCreate(path string, make func() []byte) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data = make()
		if len(data) == 0 {
			return "", fmt.Errorf("%s: could not generate", path)
		}
		err = writeSecret(path, append(data, '\n'))
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

func writeSecret(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadDeviceSecrets reads a device secrets file: one "<id> <secret>" per line; blank lines
// and lines starting with '#' are skipped.
func LoadDeviceSecrets(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, " ")
		secret = strings.TrimSpace(secret)
		if !ok || ValidDeviceID(id) != nil || secret == "" {
			return nil, fmt.Errorf("%s:%d: want \"<device id> <secret>\"", path, n)
		}
		out[id] = secret
	}
	return out, sc.Err()
}

// EnsureDeviceSecrets returns a secret for each of ids from the file at path, generating
// (and appending) the missing ones. The file is 0600.
func EnsureDeviceSecrets(path string, ids []string) (map[string]string, error) {
	have, err := LoadDeviceSecrets(path)
	if errors.Is(err, os.ErrNotExist) {
		have, err = map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	var add []string
	for _, id := range ids {
		if err := ValidDeviceID(id); err != nil {
			return nil, err
		}
		if _, ok := have[id]; !ok {
			have[id] = NewDeviceSecret()
			add = append(add, id)
		}
	}
	if len(add) > 0 {
		all := make([]string, 0, len(have))
		for id := range have {
			all = append(all, id)
		}
		slices.Sort(all)
		var b strings.Builder
		b.WriteString("# Device secrets of the simulated fleet (development only): <device id> <secret>\n")
		for _, id := range all {
			b.WriteString(id + " " + have[id] + "\n")
		}
		if err := writeSecret(path, []byte(b.String())); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		out[id] = have[id]
	}
	return out, nil
}
