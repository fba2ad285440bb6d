package tracking

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// ParseRules reads per-device-model filter profiles and per-group trip thresholds from a
// JSON document into a copy of cfg. Every profile starts from cfg's defaults (Filter,
// Trips) and overrides only the keys it names; unknown keys are an error, so a typo fails
// loudly instead of silently keeping a default. Durations are Go duration strings
// ("90s", "5m"). The format is in docs/tracking.md.
//
//	{
//	  "filters": {"GT06N": {"min_satellites": 4, "max_hdop": 6, "speed_tolerance": 0}},
//	  "group_trips": {"couriers": {"min_distance_m": 150, "min_duration": "30s"}}
//	}
func ParseRules(data []byte, cfg Config) (Config, error) {
	var doc struct {
		Filters    map[string]json.RawMessage `json:"filters"`
		GroupTrips map[string]json.RawMessage `json:"group_trips"`
	}
	if err := strictJSON(data, &doc); err != nil {
		return cfg, fmt.Errorf("%w: tracking rules: %w", ErrBadConfig, err)
	}
	if len(doc.Filters) > 0 {
		models := make(map[string]FilterConfig, len(doc.Filters)+len(cfg.ModelFilters))
		for m, f := range cfg.ModelFilters {
			models[m] = f
		}
		for m, raw := range doc.Filters {
			var j filterJSON
			if err := strictJSON(raw, &j); err != nil {
				return cfg, fmt.Errorf("%w: filters %q: %w", ErrBadConfig, m, err)
			}
			f, err := j.apply(cfg.Filter)
			if err != nil {
				return cfg, fmt.Errorf("%w: filters %q: %w", ErrBadConfig, m, err)
			}
			models[m] = f
		}
		cfg.ModelFilters = models
	}
	if len(doc.GroupTrips) > 0 {
		groups := make(map[string]TripConfig, len(doc.GroupTrips)+len(cfg.GroupTrips))
		for g, tc := range cfg.GroupTrips {
			groups[g] = tc
		}
		for g, raw := range doc.GroupTrips {
			var j tripJSON
			if err := strictJSON(raw, &j); err != nil {
				return cfg, fmt.Errorf("%w: group_trips %q: %w", ErrBadConfig, g, err)
			}
			tc, err := j.apply(cfg.Trips)
			if err != nil {
				return cfg, fmt.Errorf("%w: group_trips %q: %w", ErrBadConfig, g, err)
			}
			groups[g] = tc
		}
		cfg.GroupTrips = groups
	}
	return cfg, cfg.validate()
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

type filterJSON struct {
	MinSatellites     *uint32  `json:"min_satellites"`
	MaxHDOP           *float64 `json:"max_hdop"`
	MaxPDOP           *float64 `json:"max_pdop"`
	MaxSpeedKmh       *float64 `json:"max_speed_kmh"`
	SpeedTolerance    *float64 `json:"speed_tolerance"`
	JumpSlackM        *float64 `json:"jump_slack_m"`
	SpeedCheckWindow  *string  `json:"speed_check_window"`
	TeleportConfirm   *int     `json:"teleport_confirm"`
	DriftMinDistanceM *float64 `json:"drift_min_distance_m"`
	Static            *bool    `json:"static"`
	StaticReleaseM    *float64 `json:"static_release_m"`
}

func (j filterJSON) apply(f FilterConfig) (FilterConfig, error) {
	set(&f.MinSatellites, j.MinSatellites)
	set(&f.MaxHDOP, j.MaxHDOP)
	set(&f.MaxPDOP, j.MaxPDOP)
	set(&f.MaxSpeedKmh, j.MaxSpeedKmh)
	set(&f.SpeedTolerance, j.SpeedTolerance)
	set(&f.JumpSlackM, j.JumpSlackM)
	set(&f.TeleportConfirm, j.TeleportConfirm)
	set(&f.DriftMinDistanceM, j.DriftMinDistanceM)
	set(&f.Static, j.Static)
	set(&f.StaticReleaseM, j.StaticReleaseM)
	return f, setDuration(&f.SpeedCheckWindow, j.SpeedCheckWindow, "speed_check_window")
}

type tripJSON struct {
	MovingSpeedKmh *float64 `json:"moving_speed_kmh"`
	MinParking     *string  `json:"min_parking"`
	MaxGap         *string  `json:"max_gap"`
	MinDistanceM   *float64 `json:"min_distance_m"`
	MinDuration    *string  `json:"min_duration"`
}

func (j tripJSON) apply(tc TripConfig) (TripConfig, error) {
	set(&tc.MovingSpeedKmh, j.MovingSpeedKmh)
	set(&tc.MinDistanceM, j.MinDistanceM)
	for _, d := range []struct {
		dst  *time.Duration
		src  *string
		name string
	}{{&tc.MinParking, j.MinParking, "min_parking"}, {&tc.MaxGap, j.MaxGap, "max_gap"}, {&tc.MinDuration, j.MinDuration, "min_duration"}} {
		if err := setDuration(d.dst, d.src, d.name); err != nil {
			return tc, err
		}
	}
	return tc, nil
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

func setDuration(dst *time.Duration, src *string, name string) error {
	if src == nil {
		return nil
	}
	d, err := time.ParseDuration(*src)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	*dst = d
	return nil
}
