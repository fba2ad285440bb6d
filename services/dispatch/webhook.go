package dispatch

// Webhook delivery: every new alert whose rule names sinks is POSTed to each of them as
// JSON, signed with HMAC-SHA256 (crypto/hmac) under the sink's secret, retried with
// exponential back-off, and the state of each delivery is kept in the alert.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

// Webhook request headers.
const (
	// HeaderSignature carries "sha256=" and the hex HMAC-SHA256 of the body under the
	// sink's secret. Receivers recompute it and compare with hmac.Equal.
	HeaderSignature = "X-Fleetwire-Signature"
	// HeaderDelivery identifies the delivery ("<alert id>:<sink>"), the same on every
	// attempt: receivers drop repeats by it (delivery is at least once).
	HeaderDelivery = "X-Fleetwire-Delivery"
	// HeaderAttempt is the attempt number, from 1.
	HeaderAttempt = "X-Fleetwire-Attempt"
)

// Sign returns the signature header value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether header is body's signature under secret, in constant
// time. Receivers written in Go can use it as it is.
func VerifySignature(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(header), []byte(Sign(secret, body)))
}

// maxDeliveryBatch bounds the alerts one delivery round looks at.
const maxDeliveryBatch = 256

// deliverLoop makes the due webhook deliveries until ctx ends: at once for a new alert,
// and every second for the retries.
func (s *Service) deliverLoop(ctx context.Context) error {
	if len(s.cfg.Rules.Sinks) == 0 {
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := s.deliverDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("webhook delivery round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.deliverWake:
		case <-t.C:
		}
	}
}

// deliverDue makes every delivery whose time has come, several at once.
func (s *Service) deliverDue(ctx context.Context) error {
	alerts, err := s.st.PendingDeliveries(ctx, maxDeliveryBatch)
	if err != nil {
		return err
	}
	now := s.now()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range alerts {
		a := &alerts[i]
		for _, d := range a.Deliveries {
			if d.State != DeliveryPending || d.NextAttempt.After(now) {
				continue
			}
			sink, ok := s.cfg.Rules.Sinks[d.Sink]
			if !ok {
				// The sink was removed from the rules since the alert was raised.
				d.State, d.LastError = DeliveryFailed, "sink no longer configured"
				if _, err := s.st.SetDelivery(ctx, a.ID, d); err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func(a *Alert, d Delivery) {
				defer func() { <-sem; wg.Done() }()
				s.attempt(ctx, a, d, sink)
			}(a, d)
		}
	}
	wg.Wait()
	return nil
}

// attempt makes one delivery attempt and stores its outcome.
func (s *Service) attempt(ctx context.Context, a *Alert, d Delivery, sink Sink) {
	pa := AlertToProto(a)
	pa.Deliveries = nil // the receiver learns of this delivery from the request itself
	body, err := protojson.Marshal(pa)
	if err != nil {
		s.log.Error("encode webhook body", "alert_id", a.ID, "err", err)
		return
	}
	d.Attempts++
	d.LastAttempt = s.now()
	status, err := s.post(ctx, sink, body, strconv.FormatUint(a.ID, 10)+":"+sink.Name, d.Attempts)
	if ctx.Err() != nil {
		return // stopping: the attempt does not count; the next run makes it again
	}
	d.LastStatus = status
	result := "delivered"
	switch {
	case err == nil:
		d.State, d.LastError, d.DeliveredTime, d.NextAttempt = DeliveryDelivered, "", s.now(), time.Time{}
	case d.Attempts >= sink.MaxAttempts:
		d.State, d.LastError, d.NextAttempt = DeliveryFailed, truncate(err.Error(), 200), time.Time{}
		result = "failed"
	default:
		d.LastError = truncate(err.Error(), 200)
		d.NextAttempt = d.LastAttempt.Add(backoff(sink, d.Attempts))
		result = "retry"
	}
	s.hooks.WithLabelValues(sink.Name, result).Inc()
	if result != "delivered" {
		s.log.Warn("webhook delivery failed", "alert_id", a.ID, "sink", sink.Name, "attempt", d.Attempts, "status", status, "err", d.LastError)
	}
	if _, err := s.st.SetDelivery(ctx, a.ID, d); err != nil && ctx.Err() == nil {
		s.log.Warn("store webhook delivery", "alert_id", a.ID, "sink", sink.Name, "err", err)
	}
}

// backoff is the wait after the n-th failed attempt: Backoff doubled n-1 times, at most
// MaxBackoff.
func backoff(sink Sink, n int) time.Duration {
	d := sink.Backoff
	for i := 1; i < n && d < sink.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, sink.MaxBackoff)
}

// post sends one signed request; any answer but 2xx is an error.
func (s *Service) post(ctx context.Context, sink Sink, body []byte, id string, attempt int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, sink.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sink.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "fleetwire-webhook/1")
	req.Header.Set(HeaderSignature, Sign(sink.Secret, body))
	req.Header.Set(HeaderDelivery, id)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("sink answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// webhookClient follows no redirects: a sink that moved is a configuration to fix, and
// a redirect must not carry signed alerts somewhere else.
func webhookClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
