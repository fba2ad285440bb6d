package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// TokensBucket is the JetStream key-value bucket of issued API tokens, keyed by token id.
// It holds hashes only: a stolen copy of the bucket authenticates nobody.
const TokensBucket = "FLEET_TOKENS"

// Token prefix: "fwt_<id>_<secret>". The id is public (it names the token in lists and
// audit records); the secret is 32 random bytes, so a plain SHA-256 is the right hash (no
// password stretching is needed for a value nobody chose).
const tokenPrefix = "fwt_"

// Sentinel errors of the token store.
var (
	ErrBadToken      = errors.New("malformed token")
	ErrUnknownToken  = errors.New("unknown token")
	ErrRevokedToken  = errors.New("token revoked")
	ErrExpiredToken  = errors.New("token expired")
	ErrBadTokenName  = errors.New("token name must be 1-64 letters, digits, '.', '_', '@' or '-'")
	ErrTokenNotFound = errors.New("token not found")
)

// TokenInfo is an issued token as stored (never the secret).
type TokenInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Groups    []string  `json:"groups,omitempty"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret part
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// Tokens is the token store: a JetStream KV bucket, mirrored in memory by a watcher so a
// check costs no round trip and a revocation reaches every service within moments.
type Tokens struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu   sync.RWMutex
	byID map[string]TokenInfo
}

// OpenTokens opens (creating if needed) the token bucket and starts mirroring it until ctx
// ends. It returns once the current contents are loaded.
func OpenTokens(ctx context.Context, js KeyValues, replicas int, log *slog.Logger) (*Tokens, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: TokensBucket, Description: "Fleetwire API tokens (hashes only)", History: 5, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("token bucket: %w", err)
	}
	t := &Tokens{kv: kv, log: log, byID: map[string]TokenInfo{}}
	if err := bus.MirrorKV(ctx, kv, t.apply); err != nil {
		return nil, fmt.Errorf("token bucket: %w", err)
	}
	return t, nil
}

func (t *Tokens) apply(e jetstream.KeyValueEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(t.byID, e.Key())
		return
	}
	var ti TokenInfo
	if err := json.Unmarshal(e.Value(), &ti); err != nil {
		t.log.Error("unreadable token record; that token is refused", "id", Truncate(e.Key()), "err", err)
		delete(t.byID, e.Key())
		return
	}
	t.byID[e.Key()] = ti
}

// Create issues a token and returns it with its secret, which is never stored.
func (t *Tokens) Create(ctx context.Context, name string, role Role, groups []string, ttl time.Duration, by string) (TokenInfo, string, error) {
	if !nameRE.MatchString(name) {
		return TokenInfo{}, "", ErrBadTokenName
	}
	if role < Viewer || role > Admin {
		return TokenInfo{}, "", ErrBadRole
	}
	for _, g := range groups {
		if !nameRE.MatchString(g) {
			return TokenInfo{}, "", fmt.Errorf("group %q: %w", Truncate(g), ErrBadTokenName)
		}
	}
	id, secret := randomHex(8), randomB64(32)
	ti := TokenInfo{ID: id, Name: name, Role: role, Groups: slices.Clone(groups), Hash: hashHex(secret), CreatedAt: time.Now().UTC(), CreatedBy: by}
	if ttl > 0 {
		ti.ExpiresAt = ti.CreatedAt.Add(ttl)
	}
	if err := t.put(ctx, ti, true); err != nil {
		return TokenInfo{}, "", err
	}
	return ti, tokenPrefix + id + "_" + secret, nil
}

// Ensure stores a token whose secret is already known (the all-in-one's admin token, a
// bootstrap token from a Kubernetes Secret), so it keeps working across restarts and a
// fresh JetStream store.
func (t *Tokens) Ensure(ctx context.Context, token, name string, role Role) (TokenInfo, error) {
	id, secret, err := splitToken(token)
	if err != nil {
		return TokenInfo{}, err
	}
	t.mu.RLock()
	cur, ok := t.byID[id]
	t.mu.RUnlock()
	if ok && cur.Hash == hashHex(secret) && cur.RevokedAt.IsZero() && cur.Name == name && cur.Role == role {
		return cur, nil
	}
	ti := TokenInfo{ID: id, Name: name, Role: role, Hash: hashHex(secret), CreatedAt: time.Now().UTC(), CreatedBy: "bootstrap"}
	if err := t.put(ctx, ti, false); err != nil {
		return TokenInfo{}, err
	}
	return ti, nil
}

func (t *Tokens) put(ctx context.Context, ti TokenInfo, create bool) error {
	data, err := json.Marshal(ti)
	if err != nil {
		return err
	}
	if create {
		_, err = t.kv.Create(ctx, ti.ID, data)
	} else {
		_, err = t.kv.Put(ctx, ti.ID, data)
	}
	if err != nil {
		return fmt.Errorf("store token %s: %w", ti.ID, err)
	}
	// Mirror at once so the caller's next request sees it, without waiting for the watcher.
	t.mu.Lock()
	t.byID[ti.ID] = ti
	t.mu.Unlock()
	return nil
}

// Revoke marks a token revoked; it is refused from then on by every service.
func (t *Tokens) Revoke(ctx context.Context, id string) (TokenInfo, error) {
	e, err := t.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return TokenInfo{}, ErrTokenNotFound
	}
	if err != nil {
		return TokenInfo{}, fmt.Errorf("read token %s: %w", id, err)
	}
	var ti TokenInfo
	if err := json.Unmarshal(e.Value(), &ti); err != nil {
		return TokenInfo{}, fmt.Errorf("read token %s: %w", id, err)
	}
	if ti.RevokedAt.IsZero() {
		ti.RevokedAt = time.Now().UTC()
	}
	data, _ := json.Marshal(ti)
	if _, err := t.kv.Update(ctx, id, data, e.Revision()); err != nil {
		return TokenInfo{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	t.mu.Lock()
	t.byID[id] = ti
	t.mu.Unlock()
	return ti, nil
}

// List returns every token, ordered by id.
func (t *Tokens) List() []TokenInfo {
	t.mu.RLock()
	out := make([]TokenInfo, 0, len(t.byID))
	for _, ti := range t.byID {
		out = append(out, ti)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b TokenInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Verify returns the principal a bearer token stands for.
func (t *Tokens) Verify(token string, now time.Time) (*Principal, error) {
	id, secret, err := splitToken(token)
	if err != nil {
		return nil, err
	}
	t.mu.RLock()
	ti, ok := t.byID[id]
	t.mu.RUnlock()
	if !ok {
		return nil, ErrUnknownToken
	}
	if subtle.ConstantTimeCompare([]byte(hashHex(secret)), []byte(ti.Hash)) != 1 {
		return nil, ErrUnknownToken
	}
	if !ti.RevokedAt.IsZero() {
		return nil, ErrRevokedToken
	}
	if !ti.ExpiresAt.IsZero() && now.After(ti.ExpiresAt) {
		return nil, ErrExpiredToken
	}
	return &Principal{Name: ti.Name, Role: ti.Role, Groups: ti.Groups, Via: ViaToken, ID: ti.ID}, nil
}

func splitToken(token string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return "", "", ErrBadToken
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 16 || len(secret) < 32 || len(secret) > 64 {
		return "", "", ErrBadToken
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", ErrBadToken
	}
	return id, secret, nil
}

// NewTokenSecret returns a fresh token string (for bootstrap tokens written to a file).
func NewTokenSecret() string { return tokenPrefix + randomHex(8) + "_" + randomB64(32) }

func hashHex(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Truncate bounds a caller-supplied string before it goes into a log line or an error
// message: 64 bytes, cut on a rune boundary, marked when cut.
func Truncate(s string) string { return TruncateN(s, 64) }

// TruncateN bounds s to n bytes.
func TruncateN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + fmt.Sprintf("…(%d bytes)", len(s))
}
