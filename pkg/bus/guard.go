package bus

import (
	"context"
	"fmt"
)

// BatchGuard checks, before and after a service's handler runs, that what the handler
// writes to is still the store it was (pkg/storeguard: the store's generation marker). An
// error fails the batch like a transient handler error: nothing is acknowledged, and the
// batch is retried.
type BatchGuard func(ctx context.Context) error

// GuardBatches makes every consumer of service started afterwards (durables named
// "<service>-…") run g before and after each batch. Before: no event is published from
// state read out of a store that lost its data. After: no input is acknowledged when its
// state went into such a store.
func (b *Bus) GuardBatches(service string, g BatchGuard) {
	b.guards.Store(service, g)
}

// guarded wraps h with the guard registered for service, if any.
func (b *Bus) guarded(service string, h Handler) Handler {
	v, ok := b.guards.Load(service)
	if !ok {
		return h
	}
	g := v.(BatchGuard)
	return func(ctx context.Context, batch []Msg) error {
		if err := g(ctx); err != nil {
			return fmt.Errorf("store check before the batch: %w", err)
		}
		if err := h(ctx, batch); err != nil {
			return err
		}
		if err := g(ctx); err != nil {
			return fmt.Errorf("store check after the batch: %w", err)
		}
		return nil
	}
}
