package dispatch

// Bulk alert changes: acknowledging or resolving a flood of alerts in one call, each alert
// changed by the same transition (and audited like) a single change.

import (
	"context"
	"errors"
	"fmt"
)

// MaxBulkAlerts bounds the alerts one bulk call changes, so one call holds the store
// briefly; the caller repeats while alerts remain.
const MaxBulkAlerts = 1000

// BulkFailure is one alert a bulk change left alone.
type BulkFailure struct {
	ID  uint64
	Err error
}

// BulkResult is what a bulk change did.
type BulkResult struct {
	Changed   []uint64
	Failed    []BulkFailure
	Remaining int // alerts still matching the filter afterwards (0 for a list of ids)
}

// eligible reports whether an alert in state from can be moved to state to.
func eligible(from, to AlertState) bool {
	if to == AlertAcknowledged {
		return from == AlertOpen
	}
	return from != AlertResolved
}

// SetAlertsState acknowledges or resolves the alerts ids, or, when ids is empty, up to
// MaxBulkAlerts of the alerts matching f (oldest first) that can take the change. f's id
// window and limit are ignored. each, when set, is called after every attempted change
// (for the audit trail).
func (s *Service) SetAlertsState(ctx context.Context, ids []uint64, f AlertFilter, to AlertState, who, note string, each func(id uint64, err error)) (BulkResult, error) {
	var res BulkResult
	if who == "" {
		return res, fmt.Errorf("%w: who is required (audit)", ErrInvalid)
	}
	if to != AlertAcknowledged && to != AlertResolved {
		return res, fmt.Errorf("%w: to %s", ErrBadTransition, to)
	}
	if len(ids) > MaxBulkAlerts {
		return res, fmt.Errorf("%w: %d alert ids, at most %d per call", ErrInvalid, len(ids), MaxBulkAlerts)
	}
	byFilter := len(ids) == 0
	if byFilter {
		if f.State != AlertStateUnspecified && !eligible(f.State, to) {
			return res, nil // e.g. resolving resolved alerts: nothing to do
		}
		var err error
		if ids, err = s.selectAlerts(ctx, f, to); err != nil {
			return res, err
		}
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		_, err := s.st.SetAlertState(ctx, id, to, who, note, s.now())
		if each != nil {
			each(id, err)
		}
		switch {
		case err == nil:
			res.Changed = append(res.Changed, id)
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrBadTransition), errors.Is(err, ErrConflict):
			res.Failed = append(res.Failed, BulkFailure{ID: id, Err: err})
		default:
			return res, err // the store is failing: stop, report what was done
		}
	}
	if len(res.Changed) > 0 {
		s.log.Info("alerts "+to.String(), "count", len(res.Changed), "failed", len(res.Failed), "who", who, "by_filter", byFilter)
	}
	if byFilter {
		n, err := s.countEligible(ctx, f, to)
		if err != nil {
			return res, err
		}
		res.Remaining = n
	}
	return res, nil
}

// selectAlerts returns up to MaxBulkAlerts ids of alerts matching f that can move to to,
// oldest first.
func (s *Service) selectAlerts(ctx context.Context, f AlertFilter, to AlertState) ([]uint64, error) {
	q := f
	q.Ascending, q.AfterID, q.BeforeID, q.Limit = true, 0, 0, MaxBulkAlerts
	if to == AlertAcknowledged {
		q.State = AlertOpen
	}
	var ids []uint64
	for len(ids) < MaxBulkAlerts {
		page, err := s.st.ListAlerts(ctx, q)
		if err != nil {
			return nil, err
		}
		for i := range page {
			if eligible(page[i].State, to) && len(ids) < MaxBulkAlerts {
				ids = append(ids, page[i].ID)
			}
		}
		if len(page) < q.Limit {
			break
		}
		q.AfterID = page[len(page)-1].ID
	}
	return ids, nil
}

// countEligible counts the alerts matching f that can still move to to.
func (s *Service) countEligible(ctx context.Context, f AlertFilter, to AlertState) (int, error) {
	if f.State != AlertStateUnspecified {
		return s.st.CountAlerts(ctx, f)
	}
	states := []AlertState{AlertOpen}
	if to == AlertResolved {
		states = append(states, AlertAcknowledged)
	}
	total := 0
	for _, st := range states {
		q := f
		q.State = st
		n, err := s.st.CountAlerts(ctx, q)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
