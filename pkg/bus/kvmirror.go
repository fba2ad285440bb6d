package bus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvLoadTimeout bounds how long MirrorKV waits for a bucket's current contents.
const kvLoadTimeout = 60 * time.Second

// MirrorKV watches every key of kv and hands each change to apply, in order, until ctx
// ends: puts, and deletes or purges (apply tells them apart by Operation). It returns once
// the current contents have been applied, so a caller's in-memory copy (tokens, vehicle
// groups, devices) is complete before it answers anything.
func MirrorKV(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	loaded := make(chan struct{})
	once := sync.OnceFunc(func() { close(loaded) })
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of the initial values
					once()
					continue
				}
				apply(e)
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(kvLoadTimeout):
		return fmt.Errorf("bucket %s: initial load timed out after %s", kv.Bucket(), kvLoadTimeout)
	}
}
