package apierr

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestUnavailable(t *testing.T) {
	driver := errors.New("dial tcp 10.0.0.7:6379: connect: connection refused")
	tests := []struct {
		name        string
		in          error
		unavailable bool
		keepsDriver bool
	}{
		{"nil stays nil", nil, false, false},
		{"driver error is marked", driver, true, true},
		{"wrapped driver error is marked", fmt.Errorf("load v1: %w", driver), true, true},
		{"cancelled context is not an outage", context.Canceled, false, false},
		{"expired context is not an outage", fmt.Errorf("x: %w", context.DeadlineExceeded), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Unavailable("redis", tt.in)
			if tt.in == nil {
				if got != nil {
					t.Fatalf("got %v, want nil", got)
				}
				return
			}
			if is := errors.Is(got, ErrUnavailable); is != tt.unavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable) = %v, want %v", got, is, tt.unavailable)
			}
			if keeps := errors.Is(got, driver); keeps != tt.keepsDriver {
				t.Errorf("errors.Is(%v, driver) = %v, want %v", got, keeps, tt.keepsDriver)
			}
		})
	}
	once := Unavailable("redis", driver)
	if twice := Unavailable("nats", once); twice != once {
		t.Errorf("wrapping twice gave %v, want the first wrap %v", twice, once)
	}
}
