package dispatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // schedules name IANA zones; do not depend on the host's zoneinfo
)

// Window is a span of allowed hours on some weekdays, in the schedule's time zone.
// End before Start means the window runs past midnight (22:00–06:00); it then belongs to
// the day it starts on.
type Window struct {
	Days       []time.Weekday // empty: every day
	Start, End string         // "HH:MM"
}

// Schedule is when a vehicle may move. Movement outside every window raises a
// movement_outside_hours alert.
type Schedule struct {
	TimeZone string // IANA name, e.g. "Europe/Berlin"; "" is UTC
	Windows  []Window
}

// compiledSchedule is a Schedule checked and ready for lookups.
type compiledSchedule struct {
	loc     *time.Location
	windows []compiledWindow
}

type compiledWindow struct {
	days       uint8 // bit per weekday; 0x7f for every day
	start, end int   // minutes after midnight
}

func parseHHMM(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%w: time %q is not HH:MM", ErrInvalid, s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%w: time %q is not HH:MM", ErrInvalid, s)
	}
	return hh*60 + mm, nil
}

func compileSchedule(s Schedule) (*compiledSchedule, error) {
	loc := time.UTC
	if s.TimeZone != "" {
		l, err := time.LoadLocation(s.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("%w: time zone %q: %v", ErrInvalid, s.TimeZone, err)
		}
		loc = l
	}
	cs := &compiledSchedule{loc: loc}
	for _, w := range s.Windows {
		a, err := parseHHMM(w.Start)
		if err != nil {
			return nil, err
		}
		b, err := parseHHMM(w.End)
		if err != nil {
			return nil, err
		}
		cw := compiledWindow{start: a, end: b}
		for _, d := range w.Days {
			if d < time.Sunday || d > time.Saturday {
				return nil, fmt.Errorf("%w: weekday %d", ErrInvalid, d)
			}
			cw.days |= 1 << d
		}
		if cw.days == 0 {
			cw.days = 0x7f
		}
		cs.windows = append(cs.windows, cw)
	}
	return cs, nil
}

// allowed reports whether t falls in one of the windows (in the schedule's zone, so
// daylight-saving changes are handled by the zone database).
func (cs *compiledSchedule) allowed(t time.Time) bool {
	lt := t.In(cs.loc)
	day := lt.Weekday()
	prev := (day + 6) % 7
	min := lt.Hour()*60 + lt.Minute()
	for _, w := range cs.windows {
		if w.start <= w.end {
			if w.days&(1<<day) != 0 && min >= w.start && min < w.end {
				return true
			}
			continue
		}
		// Overnight window: the evening part on its own day, the morning part on the next.
		if w.days&(1<<day) != 0 && min >= w.start {
			return true
		}
		if w.days&(1<<prev) != 0 && min < w.end {
			return true
		}
	}
	return false
}

// scheduleFile is the JSON form of schedules, for operators:
//
//	{"groups": {"van-1": "day-shift"},
//	 "schedules": {"day-shift": {"time_zone": "Europe/Berlin",
//	   "windows": [{"days": ["mon","tue","wed","thu","fri"], "start": "07:00", "end": "19:00"}]}}}
type scheduleFile struct {
	Groups     map[string]string            `json:"groups"`
	Thresholds map[string]thresholdOverride `json:"thresholds"`
	Schedules  map[string]struct {
		TimeZone string `json:"time_zone"`
		Windows  []struct {
			Days       []string `json:"days"`
			Start, End string
		} `json:"windows"`
	} `json:"schedules"`
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// thresholdOverride is the JSON form of a group's thresholds: the fields given replace
// the defaults, durations in seconds.
type thresholdOverride struct {
	MovingKmh          *float64 `json:"moving_kmh"`
	MinSatellites      *uint32  `json:"min_satellites"`
	MaxHDOP            *float64 `json:"max_hdop"`
	MaxPDOP            *float64 `json:"max_pdop"`
	TowArmAfterS       *float64 `json:"tow_arm_after_s"`
	TowDistanceM       *float64 `json:"tow_distance_m"`
	TowSpeedKmh        *float64 `json:"tow_speed_kmh"`
	TowMovementForS    *float64 `json:"tow_movement_for_s"`
	TowMovementAloneS  *float64 `json:"tow_movement_alone_s"`
	TowSupplyLowV      *float64 `json:"tow_supply_low_v"`
	IncidentCloseAfter *float64 `json:"incident_close_after_s"`
	JamConfirmS        *float64 `json:"jam_confirm_s"`
	JamGSMMax          *int8    `json:"jam_gsm_max"`
	JamGSMDrop         *int8    `json:"jam_gsm_drop"`
	JamSilentAfterS    *float64 `json:"jam_silent_after_s"`
	JamLongLossS       *float64 `json:"jam_long_loss_s"`
	// FuelMinConfidence is the group's fuel-theft confidence threshold
	// (Config.FuelMinConfidenceByGroup); ParseConfig reads it, it is no detector threshold.
	FuelMinConfidence *float64 `json:"fuel_min_confidence"`
}

func (o *thresholdOverride) apply(t Thresholds) Thresholds {
	secs := func(dst *time.Duration, v *float64) {
		if v != nil {
			*dst = time.Duration(*v * float64(time.Second))
		}
	}
	set := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&t.MovingKmh, o.MovingKmh)
	if o.MinSatellites != nil {
		t.MinSatellites = *o.MinSatellites
	}
	set(&t.MaxHDOP, o.MaxHDOP)
	set(&t.MaxPDOP, o.MaxPDOP)
	secs(&t.TowArmAfter, o.TowArmAfterS)
	set(&t.TowDistanceM, o.TowDistanceM)
	set(&t.TowSpeedKmh, o.TowSpeedKmh)
	secs(&t.TowMovementFor, o.TowMovementForS)
	secs(&t.TowMovementAlone, o.TowMovementAloneS)
	set(&t.TowSupplyLowV, o.TowSupplyLowV)
	secs(&t.IncidentCloseAfter, o.IncidentCloseAfter)
	secs(&t.JamConfirm, o.JamConfirmS)
	if o.JamGSMMax != nil {
		t.JamGSMMax = *o.JamGSMMax
	}
	if o.JamGSMDrop != nil {
		t.JamGSMDrop = *o.JamGSMDrop
	}
	secs(&t.JamSilentAfter, o.JamSilentAfterS)
	secs(&t.JamLongLoss, o.JamLongLossS)
	return t
}

// ParseDetectConfig reads schedules, group memberships and per-group thresholds from JSON
// (see scheduleFile; "thresholds" maps a group to the thresholds it changes) onto base,
// checking every zone, window and threshold.
func ParseDetectConfig(data []byte, base DetectConfig) (DetectConfig, error) {
	sched, groups, f, err := parseScheduleFile(data)
	if err != nil {
		return base, err
	}
	base.Schedules, base.Groups = sched, groups
	if len(f.Thresholds) > 0 {
		base.GroupThresholds = make(map[string]Thresholds, len(f.Thresholds))
	}
	for g, o := range f.Thresholds {
		t := o.apply(base.Thresholds)
		if err := t.validate(); err != nil {
			return base, fmt.Errorf("thresholds of group %q: %w", g, err)
		}
		base.GroupThresholds[g] = t
	}
	return base, nil
}

// ParseConfig reads the schedules file onto base: schedules, groups and per-group
// thresholds (ParseDetectConfig), and each group's fuel-theft confidence threshold
// ("fuel_min_confidence" in its thresholds, 0..1) into FuelMinConfidenceByGroup.
func ParseConfig(data []byte, base Config) (Config, error) {
	det, err := ParseDetectConfig(data, base.Detect)
	if err != nil {
		return base, err
	}
	_, _, f, err := parseScheduleFile(data)
	if err != nil {
		return base, err
	}
	base.Detect = det
	for g, o := range f.Thresholds {
		if o.FuelMinConfidence == nil {
			continue
		}
		th := *o.FuelMinConfidence
		if !(th >= 0 && th <= 1) {
			return base, fmt.Errorf("%w: group %q: fuel_min_confidence %v outside 0..1", ErrInvalid, g, th)
		}
		if base.FuelMinConfidenceByGroup == nil {
			base.FuelMinConfidenceByGroup = make(map[string]float64)
		}
		base.FuelMinConfidenceByGroup[g] = th
	}
	return base, nil
}

// ParseSchedules reads allowed-hours schedules and group memberships from JSON (see
// scheduleFile) into the form DetectConfig takes, checking every zone and window.
// Per-group thresholds in the file are refused here: ParseDetectConfig reads them.
func ParseSchedules(data []byte) (map[string]Schedule, map[string]string, error) {
	sched, groups, f, err := parseScheduleFile(data)
	if err == nil && len(f.Thresholds) > 0 {
		return nil, nil, fmt.Errorf("%w: schedules: thresholds need ParseDetectConfig", ErrInvalid)
	}
	return sched, groups, err
}

func parseScheduleFile(data []byte) (map[string]Schedule, map[string]string, *scheduleFile, error) {
	var f scheduleFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: schedules: %v", ErrInvalid, err)
	}
	out := make(map[string]Schedule, len(f.Schedules))
	for name, fs := range f.Schedules {
		s := Schedule{TimeZone: fs.TimeZone}
		for _, fw := range fs.Windows {
			w := Window{Start: fw.Start, End: fw.End}
			for _, d := range fw.Days {
				wd, ok := weekdays[strings.ToLower(d)]
				if !ok {
					return nil, nil, nil, fmt.Errorf("%w: schedule %q: weekday %q (want sun..sat)", ErrInvalid, name, d)
				}
				w.Days = append(w.Days, wd)
			}
			s.Windows = append(s.Windows, w)
		}
		if _, err := compileSchedule(s); err != nil {
			return nil, nil, nil, fmt.Errorf("schedule %q: %w", name, err)
		}
		out[name] = s
	}
	for v, g := range f.Groups {
		_, hasThresholds := f.Thresholds[g]
		if _, ok := out[g]; !ok && !hasThresholds {
			return nil, nil, nil, fmt.Errorf("%w: vehicle %q is in group %q, which has no schedule and no thresholds", ErrInvalid, v, g)
		}
	}
	return out, f.Groups, &f, nil
}
