package tracking

import (
	"context"
	"fmt"
)

// GroupDirectory learns each registered vehicle's groups. The other services do not keep
// the registry, yet a principal limited to vehicle groups must see the same vehicles in
// all of them: the registry tells the directory (in a process, pkg/auth's Groups on a
// JetStream key-value bucket) and every service reads it.
type GroupDirectory interface {
	Set(ctx context.Context, vehicle string, groups []string) error
	Delete(ctx context.Context, vehicle string) error
}

// PublishGroupsTo makes the registry write every registration and group change to d.
// Call before Run.
func (s *Service) PublishGroupsTo(d GroupDirectory) { s.groupDir = d }

func (s *Service) publishGroups(ctx context.Context, info Info) error {
	if s.groupDir == nil {
		return nil
	}
	if err := s.groupDir.Set(ctx, info.ID, info.Groups); err != nil {
		return fmt.Errorf("vehicle %s: publish groups: %w", info.ID, err)
	}
	return nil
}

func (s *Service) unpublishGroups(ctx context.Context, id string) error {
	if s.groupDir == nil {
		return nil
	}
	if err := s.groupDir.Delete(ctx, id); err != nil {
		return fmt.Errorf("vehicle %s: forget groups: %w", id, err)
	}
	return nil
}
