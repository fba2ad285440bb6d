package storeguard

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Fence ties a store's reads and writes to the generation its process works against, in
// the same Redis transaction as the data:
//
//   - Write runs the store's commands in MULTI/EXEC after WATCH and GET of the marker
//     key: a store that came back empty (no marker) or was renewed (another marker)
//     refuses the write, and nothing of it is applied;
//   - Read runs the store's reads in one MULTI/EXEC that also reads the marker: a batch
//     never computes events from a state read out of an emptied store.
//
// The checks the guard makes before and after each batch cannot close the window between
// them: Redis can restart empty after the check and before the batch reads or writes, and
// the Redis client reconnects and retries transparently. The fence closes it. A refusal
// is ErrStoreLost, and the guard watching the store is told at once (the process stops
// acknowledging and restarts to rebuild).
//
// WATCH is safe across a reconnect: go-redis runs a WATCH transaction on one connection
// and never re-dials it, so a restart between WATCH and EXEC fails the transaction
// instead of replaying MULTI/EXEC against the new server.
//
// A nil Fence, or one whose epoch is not set, checks nothing (a store used without a
// guard: tests, tools).
type Fence struct {
	key    string
	epoch  atomic.Pointer[string]
	onLost func(found string)
}

// NewFence returns a fence on the marker key; onLost (may be nil) is called with the
// marker found whenever a read or write is refused.
func NewFence(key string, onLost func(found string)) *Fence {
	return &Fence{key: key, onLost: onLost}
}

// SetEpoch sets the marker value reads and writes require.
func (f *Fence) SetEpoch(epoch string) { f.epoch.Store(&epoch) }

// Key is the marker key.
func (f *Fence) Key() string { return f.key }

func (f *Fence) want() string {
	if f == nil {
		return ""
	}
	if p := f.epoch.Load(); p != nil {
		return *p
	}
	return ""
}

func (f *Fence) refuse(found string) error {
	if f.onLost != nil {
		f.onLost(found)
	}
	return fmt.Errorf("%w: generation marker %s is %q, this process works against %q", ErrStoreLost, f.key, found, f.want())
}

// maxWriteAttempts bounds the retries of a write whose WATCH fired: only a marker change
// fires it, so the second attempt normally sees the new marker and refuses.
const maxWriteAttempts = 3

// Write runs fn's commands atomically, and only while the store's marker is the epoch
// (ErrStoreLost otherwise). Without a fence it is a plain MULTI/EXEC.
func (f *Fence) Write(ctx context.Context, c *redis.Client, fn func(redis.Pipeliner) error) error {
	want := f.want()
	if want == "" {
		_, err := c.TxPipelined(ctx, fn)
		return err
	}
	for range maxWriteAttempts {
		err := c.Watch(ctx, func(tx *redis.Tx) error {
			found, err := tx.Get(ctx, f.key).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if found != want {
				return f.refuse(found)
			}
			_, err = tx.TxPipelined(ctx, fn)
			return err
		}, f.key)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return fmt.Errorf("%w: the generation marker %s kept changing during the write", ErrStoreLost, f.key)
}

// Read runs fn's reads in one MULTI/EXEC together with a read of the marker, and fails
// with ErrStoreLost when the marker is not the epoch: the results are then discarded.
// Without a fence the reads go in a plain pipeline.
func (f *Fence) Read(ctx context.Context, c *redis.Client, fn func(redis.Pipeliner) error) error {
	want := f.want()
	if want == "" {
		_, err := c.Pipelined(ctx, fn)
		if errors.Is(err, redis.Nil) {
			return nil // a missing key is each command's own answer
		}
		return err
	}
	var marker *redis.StringCmd
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		marker = p.Get(ctx, f.key)
		return fn(p)
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	found, merr := marker.Result()
	if merr != nil && !errors.Is(merr, redis.Nil) {
		return merr
	}
	if found != want {
		return f.refuse(found)
	}
	return nil
}

// WatchKeys returns keys plus the marker key when the fence is armed: for a store that runs
// its own WATCH transaction (read, decide, write) and checks the marker in it (CheckIn).
func (f *Fence) WatchKeys(keys ...string) []string {
	if f.want() == "" {
		return keys
	}
	return append(keys, f.key)
}

// CheckIn reads the marker inside a store's own WATCH transaction whose watched keys came
// from WatchKeys: ErrStoreLost unless it is the epoch. Since the marker is watched, a
// change before EXEC fails the transaction.
func (f *Fence) CheckIn(ctx context.Context, tx *redis.Tx) error {
	want := f.want()
	if want == "" {
		return nil
	}
	found, err := tx.Get(ctx, f.key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if found != want {
		return f.refuse(found)
	}
	return nil
}
