package dispatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"time"
)

// Raise says whether alerts of a kind are raised.
type Raise string

const (
	// RaiseDefault follows the source: a zone event raises an alert where its zone's
	// alert policy asks for one; every other kind raises its alerts.
	RaiseDefault Raise = ""
	// RaiseAlways raises an alert for every event of the kind, whatever the zone says.
	RaiseAlways Raise = "always"
	// RaiseNever raises none: the events stay in their own feeds.
	RaiseNever Raise = "never"
)

// AlertRule is the setting of one alert kind.
type AlertRule struct {
	Raise Raise
	// Webhooks names the sinks every new alert of the kind is delivered to.
	Webhooks []string
}

// Sink is a webhook endpoint. Every delivery is an HTTP POST of the alert as JSON,
// signed with HMAC-SHA256 over the body under Secret (docs/dispatch.md, webhooks).
type Sink struct {
	Name   string
	URL    string
	Secret []byte
	// MaxAttempts bounds the attempts of one delivery (default 8); after the last the
	// delivery is failed.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt; each further failure doubles
	// it, up to MaxBackoff (defaults 1 s and 5 min).
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one attempt (default 10 s).
	Timeout time.Duration
}

// AlertRules are the per-kind alert settings: which kinds raise alerts and where new
// alerts are delivered. The zero value raises every kind by default and delivers nothing.
type AlertRules struct {
	// Kinds maps an alert kind ("geofence_enter", "offline", "tow", ...) to its rule;
	// "*" applies to every kind without its own.
	Kinds map[string]AlertRule
	Sinks map[string]Sink
}

// Sink defaults.
const (
	DefaultSinkAttempts   = 8
	DefaultSinkBackoff    = time.Second
	DefaultSinkMaxBackoff = 5 * time.Minute
	DefaultSinkTimeout    = 10 * time.Second
)

func (r *AlertRules) rule(kind string) AlertRule {
	if ru, ok := r.Kinds[kind]; ok {
		return ru
	}
	return r.Kinds["*"]
}

// Decide applies the rule of a's kind to what its source asked (act): RaiseAlways turns
// an EventOnly into EventRaise, RaiseNever turns EventRaise into EventIgnore.
func (r *AlertRules) Decide(a *Alert, act EventAction) EventAction {
	switch r.rule(a.Kind).Raise {
	case RaiseAlways:
		if act == EventOnly {
			return EventRaise
		}
	case RaiseNever:
		if act == EventRaise {
			return EventIgnore
		}
	}
	if act == EventOnly {
		return EventIgnore
	}
	return act
}

// deliveries returns the pending deliveries a new alert of kind starts with.
func (r *AlertRules) deliveries(kind string) []Delivery {
	names := r.rule(kind).Webhooks
	if len(names) == 0 {
		return nil
	}
	out := make([]Delivery, len(names))
	for i, n := range names {
		out[i] = Delivery{Sink: n, State: DeliveryPending}
	}
	return out
}

// The alert rules file.
type rulesDoc struct {
	Rules map[string]struct {
		Raise    Raise    `json:"raise"`
		Webhooks []string `json:"webhooks"`
	} `json:"rules"`
	Webhooks map[string]struct {
		URL         string  `json:"url"`
		SecretFile  string  `json:"secret_file"`
		SecretEnv   string  `json:"secret_env"`
		MaxAttempts int     `json:"max_attempts"`
		BackoffS    float64 `json:"backoff_s"`
		MaxBackoffS float64 `json:"max_backoff_s"`
		TimeoutS    float64 `json:"timeout_s"`
		AllowHTTP   bool    `json:"allow_http"`
	} `json:"webhooks"`
}

// SecretSource reads webhook secrets: from a file or from an environment variable, so
// the rules file itself holds none.
type SecretSource struct {
	ReadFile func(string) ([]byte, error)
	Getenv   func(string) (string, bool)
}

// ParseAlertRules reads the alert rules file (docs/dispatch.md, alert rules). Unknown
// keys, unknown raise values, rules naming undefined sinks, sinks without a URL or a
// secret are errors: a typo must fail at start, not silently drop alerts.
func ParseAlertRules(data []byte, secrets SecretSource) (AlertRules, error) {
	var doc rulesDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return AlertRules{}, fmt.Errorf("%w: alert rules: %v", ErrInvalid, err)
	}
	out := AlertRules{Kinds: map[string]AlertRule{}, Sinks: map[string]Sink{}}
	names := make([]string, 0, len(doc.Webhooks))
	for n := range doc.Webhooks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w := doc.Webhooks[n]
		u, err := url.Parse(w.URL)
		if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && w.AllowHTTP)) {
			return AlertRules{}, fmt.Errorf("%w: webhook %q: url %q must be https:// (or http:// with allow_http)", ErrInvalid, n, w.URL)
		}
		var secret []byte
		switch {
		case w.SecretFile != "" && secrets.ReadFile != nil:
			b, err := secrets.ReadFile(w.SecretFile)
			if err != nil {
				return AlertRules{}, fmt.Errorf("%w: webhook %q secret: %v", ErrInvalid, n, err)
			}
			secret = bytes.TrimSpace(b)
		case w.SecretEnv != "" && secrets.Getenv != nil:
			v, _ := secrets.Getenv(w.SecretEnv)
			secret = []byte(v)
		}
		if len(secret) < 16 {
			return AlertRules{}, fmt.Errorf("%w: webhook %q needs a secret of at least 16 bytes (secret_file or secret_env)", ErrInvalid, n)
		}
		s := Sink{
			Name: n, URL: w.URL, Secret: secret, MaxAttempts: w.MaxAttempts,
			Backoff: seconds(w.BackoffS), MaxBackoff: seconds(w.MaxBackoffS), Timeout: seconds(w.TimeoutS),
		}
		if s.MaxAttempts < 0 || s.Backoff < 0 || s.MaxBackoff < 0 || s.Timeout < 0 {
			return AlertRules{}, fmt.Errorf("%w: webhook %q: attempts and durations must not be negative", ErrInvalid, n)
		}
		out.Sinks[n] = s.withDefaults()
	}
	for kind, r := range doc.Rules {
		switch r.Raise {
		case RaiseDefault, RaiseAlways, RaiseNever:
		default:
			return AlertRules{}, fmt.Errorf("%w: rule %q: raise %q (want always, never or empty)", ErrInvalid, kind, r.Raise)
		}
		for _, w := range r.Webhooks {
			if _, ok := out.Sinks[w]; !ok {
				return AlertRules{}, fmt.Errorf("%w: rule %q names webhook %q, which is not defined", ErrInvalid, kind, w)
			}
		}
		out.Kinds[kind] = AlertRule{Raise: r.Raise, Webhooks: slices.Compact(slices.Sorted(slices.Values(r.Webhooks)))}
	}
	return out, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (s Sink) withDefaults() Sink {
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultSinkAttempts
	}
	if s.Backoff == 0 {
		s.Backoff = DefaultSinkBackoff
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = DefaultSinkMaxBackoff
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultSinkTimeout
	}
	return s
}

// check validates rules built in code (Config.Rules).
func (r *AlertRules) check() error {
	for kind, ru := range r.Kinds {
		for _, w := range ru.Webhooks {
			if _, ok := r.Sinks[w]; !ok {
				return fmt.Errorf("%w: rule %q names webhook %q, which is not defined", ErrInvalid, kind, w)
			}
		}
	}
	for n, s := range r.Sinks {
		if s.URL == "" || len(s.Secret) == 0 {
			return fmt.Errorf("%w: webhook %q needs a url and a secret", ErrInvalid, n)
		}
		s.Name = n
		r.Sinks[n] = s.withDefaults()
	}
	return nil
}
